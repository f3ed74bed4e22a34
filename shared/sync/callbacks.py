"""Commerce callbacks: a business-event body in, a queued work item and an HTTP answer out.

F&O waits 10 s for a 2xx and retries three times one second apart (protocols.md §4.1). The trigger
only validates and enqueues (milliseconds), answering 202; the queue-triggered worker re-reads the
record from Commerce OData and writes it. The payload is trusted for the key only.

Answers. 400: the body is not a business event (§4.2 base fields missing or of the wrong JSON type) or
it names the record with an unusable key value. 200 ``ignored``: the activation test event, and a
well-formed event that names no record of this template (another event, or one without the template's
key fields; counted as ``callbacks_ignored``): a 4xx would make F&O retry it and fill its error log.
503: only when the queue (storage) cannot be reached. No input gets a 5xx.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import copy_context
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError
from pydantic import ValidationError

from shared.clock import SYSTEM_CLOCK
from shared.mapping.plan import Plan
from shared.messages.events import MAX_KEY_LENGTH, BusinessEvent, WorkItem, is_data_area_id, is_test_event, text_problem
from shared.observability import correlation_id, log
from shared.state.queues import CallbackQueues
from shared.state.store import StateStore

logger = logging.getLogger("loyaltysync.callbacks")

MAX_BODY_BYTES = 64 * 1024
SECRET_HEADER = "x-loyaltysync-secret"
COMPANY_KEY = "dataAreaId"
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


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


class _RepeatedMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose member names repeat is refused: readers disagree on which value counts."""
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise _RepeatedMember(ascii(name)[:60])
        obj[name] = value
    return obj


def read_body(body: bytes) -> dict[str, Any] | CallbackAnswer:
    """The body as a JSON object, or the 4xx that says why it is not one."""
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        raw = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_members)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    except _RepeatedMember as exc:
        return _error(400, f"body repeats the member name {exc}")
    except ValueError:  # Python reads no integer of more than 4,300 digits
        return _error(400, "body holds a number with too many digits")
    except RecursionError:
        return _error(400, "body is nested too deeply")
    if not isinstance(raw, dict):
        return _error(400, f"body must be a JSON object (a business event), got {type(raw).__name__}")
    return raw


def parse_event(raw: dict[str, Any]) -> BusinessEvent | CallbackAnswer:
    try:
        return BusinessEvent.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(400, f"not a business event: {problems}")


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def key_problem(prop: str, value: Any) -> str | None:
    """Why a key field's value cannot name a record (None when it can)."""
    if not isinstance(value, str):
        return f"key field {prop} must be a string, got {_json_type(value)}"
    problem = text_problem(value)
    if problem is not None:
        return f"key field {prop} {problem}"
    if len(value) > MAX_KEY_LENGTH:
        return f"key field {prop} is longer than {MAX_KEY_LENGTH} characters"
    if prop == COMPANY_KEY and not is_data_area_id(value):
        return f"key field {prop} must be a dataAreaId: 1 to 4 letters or digits"
    return None


def key_from_event(plan: Plan, event: BusinessEvent) -> dict[str, str] | CallbackAnswer | None:
    """The template's F&O key properties, matched case-insensitively among the event's fields; None when the
    event names no record of this template (none of the key fields that name a record is there: the company
    alone does not). The company (``dataAreaId``) defaults to ``BusinessEventLegalEntity``."""
    fields: dict[str, list[Any]] = {}
    for name, value in event.extras().items():
        fields.setdefault(name.lower(), []).append(value)
    naming = [p for p in plan.key_properties if p != COMPANY_KEY] or list(plan.key_properties)
    if not any(p.lower() in fields for p in naming):
        return None
    key: dict[str, str] = {}
    missing: list[str] = []
    for prop in plan.key_properties:
        values = fields.get(prop.lower(), [])
        if len(values) > 1:
            return _error(400, f"more than one field names key field {prop} (names differ only in case)")
        if prop == COMPANY_KEY and (not values or values[0] in (None, "")):
            values = [event.BusinessEventLegalEntity]
        if not values:
            missing.append(prop)
            continue
        problem = key_problem(prop, values[0])
        if problem is not None:
            return _error(400, problem)
        key[prop] = values[0]
    if missing:
        return _error(400, f"the event does not name the record: missing key field(s) {', '.join(missing)}",
                      template=plan.name)
    return key


def _count_ignored(state: StateStore, template: str) -> None:
    try:
        state.callbacks.bump(template, callbacks_ignored=1)
    except Exception as exc:  # only a counter: the answer stands
        log(logger, logging.WARNING, "ignored callback not counted", template=template,
            error=f"{type(exc).__name__}: {exc}")


# Counting an ignored event is a read-modify-write on a table (with the SDK's retries): the answer waits for it
# at most this long, so slow or unreachable storage cannot hold F&O's callback (10 s, §4.3); the count still
# lands when storage answers later. Normally it takes milliseconds.
COUNT_WAIT_S = 1.0
_COUNTER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="callback-counter")


def _ignored(plan: Plan, state: StateStore | None, reason: str, **fields: Any) -> CallbackAnswer:
    if state is not None:
        counting = _COUNTER.submit(copy_context().run, _count_ignored, state, plan.name)
        with contextlib.suppress(FutureTimeout):
            counting.result(timeout=COUNT_WAIT_S)
    log(logger, logging.INFO, "callback acknowledged and ignored", template=plan.name, reason=reason, **fields)
    return CallbackAnswer(200, {"template": plan.name, **fields, "correlation_id": correlation_id(),
                                "status": "ignored", "reason": reason})


def _rejected(plan: Plan, answer: CallbackAnswer) -> CallbackAnswer:
    log(logger, logging.WARNING, "callback rejected", template=plan.name, status=answer.status,
        problem=answer.body["error"])
    return answer


def handle_callback(plan: Plan, queues: CallbackQueues, body: bytes, state: StateStore | None = None) -> CallbackAnswer:
    """Validate one callback and queue its work item; ``state`` (optional) counts ignored events."""
    raw = read_body(body)
    if isinstance(raw, CallbackAnswer):
        return _rejected(plan, raw)
    if is_test_event(raw.get("BusinessEventId")):
        # Accepted whatever its other fields hold: F&O must be able to activate the endpoint (§4.1).
        log(logger, logging.INFO, "activation test event accepted and ignored", template=plan.name)
        return CallbackAnswer(200, {"template": plan.name, "correlation_id": correlation_id(), "status": "ignored",
                                    "reason": "activation test event"})
    event = parse_event(raw)
    if isinstance(event, CallbackAnswer):
        return _rejected(plan, event)
    key = key_from_event(plan, event)
    if key is None:
        return _ignored(plan, state, f"the event names no {' / '.join(plan.key_properties)}",
                        event_id=event.EventId, business_event=event.BusinessEventId)
    if isinstance(key, CallbackAnswer):
        return _rejected(plan, key)
    item = WorkItem(template=plan.name, key=key, event_id=event.EventId, business_event_id=event.BusinessEventId,
                    control_number=event.ControlNumber, event_time=event.event_time.isoformat(),
                    received_at=SYSTEM_CLOCK.now().isoformat(), correlation_id=correlation_id())
    try:
        queues.send(item)
    except (AzureError, OSError) as exc:  # storage is unreachable: make F&O retry; nothing was accepted
        log(logger, logging.ERROR, "callback could not be queued", template=plan.name, key=key,
            error=f"{type(exc).__name__}: {exc}")
        return _error(503, "could not queue the event; retry later", template=plan.name)
    except Exception as exc:  # a fault of this code, not of the input (validated above) nor of storage
        log(logger, logging.ERROR, "callback failed unexpectedly", template=plan.name, key=key,
            event_id=event.EventId, error=f"{type(exc).__name__}: {exc}")
        return _error(500, "the event could not be handled (an internal error; see the log)", template=plan.name)
    log(logger, logging.INFO, "callback queued", template=plan.name, event_id=event.EventId,
        business_event=event.BusinessEventId, control_number=event.ControlNumber, key=key)
    return CallbackAnswer(202, {"template": plan.name, "event_id": event.EventId, "correlation_id": correlation_id(),
                                "status": "queued", "key": key})
