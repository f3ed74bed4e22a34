"""Commerce callbacks: a business-event body in, an HTTP status and JSON answer out.

F&O waits 10 s for a 2xx and retries three times one second apart (protocols.md §4.1), so the
record is re-read and written within ``SYNC_CALLBACK_BUDGET_S``; past that the answer is 202 and
the work finishes in the background (parking itself if it fails). The payload is only trusted for
the key: the record itself is re-read from Commerce OData.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.mapping.plan import Plan
from shared.observability import correlation_id, log
from shared.sync.engine import OutboundSync
from shared.sync.events import BusinessEvent

logger = logging.getLogger("loyaltysync.callbacks")

MAX_BODY_BYTES = 64 * 1024
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="callback")


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    body: dict[str, Any]


def _error(status: int, problem: str, **extra: Any) -> CallbackAnswer:
    return CallbackAnswer(status, {"error": problem, "correlation_id": correlation_id(), **extra})


def parse_event(body: bytes) -> BusinessEvent | CallbackAnswer:
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        raw = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    if not isinstance(raw, dict):
        return _error(400, f"body must be a JSON object (a business event), got {type(raw).__name__}")
    try:
        return BusinessEvent.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(400, f"not a business event: {problems}")


def key_from_event(plan: Plan, event: BusinessEvent) -> dict[str, Any] | CallbackAnswer:
    """The template's F&O key properties, matched case-insensitively among the event's fields."""
    extras = {name.lower(): value for name, value in event.extras().items()}
    key: dict[str, Any] = {}
    missing: list[str] = []
    for prop in plan.key_properties:
        value = extras.get(prop.lower())
        if value in (None, "") and prop == "dataAreaId":
            value = event.BusinessEventLegalEntity or None
        if value in (None, ""):
            missing.append(prop)
        elif not isinstance(value, str):
            return _error(400, f"key field {prop} must be a string, got {type(value).__name__}")
        else:
            key[prop] = value
    if missing:
        return _error(400, f"the event does not name the record: missing key field(s) {', '.join(missing)}",
                      template=plan.name)
    return key


def handle_callback(engine: OutboundSync, body: bytes, *, budget_s: float) -> CallbackAnswer:
    parsed = parse_event(body)
    if isinstance(parsed, CallbackAnswer):
        log(logger, logging.WARNING, "callback rejected", template=engine.name, status=parsed.status,
            problem=parsed.body["error"])
        return parsed
    event = parsed
    base = {"template": engine.name, "event_id": event.EventId, "correlation_id": correlation_id()}
    if event.is_test_event:
        log(logger, logging.INFO, "activation test event accepted and ignored", template=engine.name,
            event_id=event.EventId)
        return CallbackAnswer(200, {**base, "status": "ignored", "reason": "activation test event"})
    key = key_from_event(engine.plan, event)
    if isinstance(key, CallbackAnswer):
        return key
    log(logger, logging.INFO, "callback received", template=engine.name, event_id=event.EventId,
        business_event=event.BusinessEventId, control_number=event.ControlNumber, key=key)
    cid = correlation_id()
    future = _pool.submit(_sync_in_scope, engine, key, cid)
    try:
        outcome = future.result(timeout=budget_s)
    except TimeoutError:
        log(logger, logging.WARNING, "callback still running at the answer deadline; finishing in the background",
            template=engine.name, key=key, budget_s=budget_s)
        return CallbackAnswer(202, {**base, "status": "accepted", "key": key})
    except Exception as exc:  # state store unreachable etc.: make F&O retry, nothing is lost
        log(logger, logging.ERROR, "callback failed before the record could be kept", template=engine.name,
            key=key, error=f"{type(exc).__name__}: {exc}")
        return _error(503, "could not process or park the record; retry later", template=engine.name)
    status = 202 if outcome == "parked" else 200
    return CallbackAnswer(status, {**base, "status": outcome, "key": key})


def _sync_in_scope(engine: OutboundSync, key: dict[str, Any], cid: str) -> str:
    from shared.observability import correlation_scope

    with correlation_scope(cid):
        return engine.sync_key(key, source="callback")
