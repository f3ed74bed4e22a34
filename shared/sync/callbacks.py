"""Commerce callbacks: a business-event body in, a queued work item and an HTTP answer out.

F&O waits 10 s for a 2xx and retries three times one second apart (protocols.md §4.1). The trigger
only validates and enqueues (milliseconds), answering 202; the queue-triggered worker re-reads the
record from Commerce OData and writes it. The payload is trusted for the key only.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.mapping.plan import Plan
from shared.observability import correlation_id, log
from shared.state.queues import CallbackQueues
from shared.state.store import now
from shared.sync.events import BusinessEvent, WorkItem

logger = logging.getLogger("loyaltysync.callbacks")

MAX_BODY_BYTES = 64 * 1024
SECRET_HEADER = "x-loyaltysync-secret"


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    body: dict[str, Any]


def _error(status: int, problem: str, **extra: Any) -> CallbackAnswer:
    return CallbackAnswer(status, {"error": problem, "correlation_id": correlation_id(), **extra})


def secret_matches(expected: str | None, provided: str | None) -> bool:
    """The optional shared secret (``SYNC_CALLBACK_SECRET``), compared in constant time."""
    if not expected:
        return True
    return provided is not None and hmac.compare_digest(expected.encode(), provided.encode())


def parse_event(body: bytes) -> BusinessEvent | CallbackAnswer:
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        raw = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    except RecursionError:
        return _error(400, "body is nested too deeply")
    if not isinstance(raw, dict):
        return _error(400, f"body must be a JSON object (a business event), got {type(raw).__name__}")
    try:
        return BusinessEvent.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(400, f"not a business event: {problems}")


def key_from_event(plan: Plan, event: BusinessEvent) -> dict[str, str] | CallbackAnswer:
    """The template's F&O key properties, matched case-insensitively among the event's fields."""
    extras = {name.lower(): value for name, value in event.extras().items()}
    key: dict[str, str] = {}
    missing: list[str] = []
    for prop in plan.key_properties:
        value = extras.get(prop.lower())
        if value in (None, "") and prop == "dataAreaId":
            value = event.BusinessEventLegalEntity or None
        if value in (None, ""):
            missing.append(prop)
        elif not isinstance(value, str):
            return _error(400, f"key field {prop} must be a string, got {type(value).__name__}")
        elif len(value) > 255 or any(ord(ch) < 32 for ch in value):
            return _error(400, f"key field {prop} is longer than 255 characters or holds control characters")
        else:
            key[prop] = value
    if missing:
        return _error(400, f"the event does not name the record: missing key field(s) {', '.join(missing)}",
                      template=plan.name)
    return key


def handle_callback(plan: Plan, queues: CallbackQueues, body: bytes) -> CallbackAnswer:
    parsed = parse_event(body)
    if isinstance(parsed, CallbackAnswer):
        log(logger, logging.WARNING, "callback rejected", template=plan.name, status=parsed.status,
            problem=parsed.body["error"])
        return parsed
    event = parsed
    base = {"template": plan.name, "event_id": event.EventId, "correlation_id": correlation_id()}
    if event.is_test_event:
        log(logger, logging.INFO, "activation test event accepted and ignored", template=plan.name,
            event_id=event.EventId)
        return CallbackAnswer(200, {**base, "status": "ignored", "reason": "activation test event"})
    key = key_from_event(plan, event)
    if isinstance(key, CallbackAnswer):
        log(logger, logging.WARNING, "callback rejected", template=plan.name, status=key.status,
            problem=key.body["error"])
        return key
    item = WorkItem(template=plan.name, key=key, event_id=event.EventId, business_event_id=event.BusinessEventId,
                    control_number=event.ControlNumber, event_time=event.EventTimeIso8601 or event.EventTime,
                    received_at=now().isoformat(), correlation_id=correlation_id())
    try:
        queues.send(item)
    except Exception as exc:  # the queue is unreachable: make F&O retry; nothing was accepted
        log(logger, logging.ERROR, "callback could not be queued", template=plan.name, key=key,
            error=f"{type(exc).__name__}: {exc}")
        return _error(503, "could not queue the event; retry later", template=plan.name)
    log(logger, logging.INFO, "callback queued", template=plan.name, event_id=event.EventId,
        business_event=event.BusinessEventId, control_number=event.ControlNumber, key=key)
    return CallbackAnswer(202, {**base, "status": "queued", "key": key})
