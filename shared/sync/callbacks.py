"""Commerce callbacks: a business-event or data-event body in, a queued work item and an HTTP answer out.

One route per template takes both formats. A **business event** (§4.2) names its record by the template's F&O
key properties. An F&O **data event** arrives through Dataverse as a ``RemoteExecutionContext`` (§4.4): the
template file's ``data_event`` section says which virtual table it names and which ``mserp_`` columns of
``Target`` carry the key; a Deleted event carries only ``Target.Id``, which the worker resolves through an
index filled from Created and Updated events. An Updated event carries only the changed columns, so it may name
its record by ``Target.Id`` alone or with part of the key (a level's phrase without its company): the worker
tries the index, then a Commerce lookup by the key fields carried, then the template's coalesced refresh
(``shared.state.refresh``); such an event is never answered 4xx (a Dataverse webhook does not retry one).

F&O waits 10 s for a 2xx and retries three times one second apart (§4.1); a Dataverse webhook waits 60 s
and retries 502/503/504 once (§4.4). The trigger only validates and enqueues (one bounded queue write, no
table read in front of the answer), answering 202; the queue-triggered worker re-reads the record from
Commerce OData and writes it. The payload is trusted for the key (or ``Target.Id``) only.

Answers. 400: the body is neither format or not JSON at all (RFC 8259: ``NaN`` and ``Infinity`` are not JSON;
a business event's §4.2 base fields missing or of the wrong JSON type, ``EventTimeIso8601`` not ISO 8601; a data
event's envelope unreadable) or it names the record with an unusable key value (empty, a control or format
character, a lone surrogate). 401: ``SYNC_CALLBACK_SECRET`` is set and the callback does not carry it, in the
``x-loyaltysync-secret`` header (any callback) or ``?secret=`` (a business event only: F&O's endpoint takes a URL
only; docs/protocol-notes.md §4.5). 200
``ignored``: the activation test event, and a well-formed event that names no record of this template
(another business event, one without the template's key fields, a data event of another table or another
message; counted as ``loyaltysync.callbacks`` result ignored): a 4xx would make F&O retry it and fill its error log. 413: a
business event over 64 KiB, or any body over 512 KiB (Dataverse cuts data events at 256 KB). 503: only
when the queue (storage) cannot be reached. No input gets a 5xx.

Every answer is counted (``loyaltysync.callbacks`` by result: accepted, ignored, rejected, failed) with its latency
(``loyaltysync.callback.ack_latency``, by kind: business_event, data_event, or unknown for a body that is no JSON
object), by ``acknowledged``; no table is written for it (the answer never waits on a counter).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError
from opentelemetry.trace import Span
from pydantic import ValidationError

from shared.clock import SYSTEM_CLOCK, Clock
from shared.mapping.plan import EMPTY_DATE, Plan
from shared.messages.data_events import DataChange, DataEvent, DataEventError, looks_like_data_event, parse_data_event
from shared.messages.events import (
    MAX_KEY_LENGTH,
    BusinessEvent,
    WorkItem,
    WorkKind,
    is_data_area_id,
    is_test_event,
    text_problem,
    wcf_date,
)
from shared.observability import correlation_id, log
from shared.state.queues import CallbackQueues
from shared.telemetry import metrics

logger = logging.getLogger("loyaltysync.callbacks")

MAX_BODY_BYTES = 512 * 1024  # any body: a Dataverse webhook sends up to 256 KB whole, then cuts it (§4.4)
MAX_BUSINESS_EVENT_BYTES = 64 * 1024  # business events are small; F&O keeps them so (§4.1)
SECRET_HEADER = "x-loyaltysync-secret"  # the callback secret's header: the way for data events (below)
SECRET_QUERY_PARAMETER = "secret"  # the URL form: only for F&O's HTTPS business-event endpoint (it takes a URL only)
SECRET_IN_HEADER, SECRET_IN_URL, NO_SECRET = "header", "url", "none"  # where a callback's secret was found
COMPANY_KEY = "dataAreaId"
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


BUSINESS_EVENT, DATA_EVENT, UNKNOWN = "business_event", "data_event", "unknown"  # a callback's kind


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    body: dict[str, Any]
    kind: str = UNKNOWN  # business_event, data_event, or unknown (not read as either)

    @property
    def result(self) -> str:
        """What ``loyaltysync.callbacks`` counts: accepted (queued), ignored, rejected (4xx) or failed (5xx)."""
        if self.status >= 500:
            return metrics.FAILED
        if self.status >= 400:
            return metrics.REJECTED
        return metrics.IGNORED if self.body.get("status") == "ignored" else metrics.ACCEPTED


def acknowledged(template: str, answer: CallbackAnswer, latency_ms: float, span: Span | None = None) -> None:
    """Count one answered callback and its latency; ``span`` (the request's ``sync.callback``) gets the same."""
    metrics.record_callback(template, answer.kind, answer.result, latency_ms)
    if span is not None:
        span.set_attributes({"kind": answer.kind, "result": answer.result, "status_code": answer.status})


def _error(status: int, problem: str, **extra: Any) -> CallbackAnswer:
    return CallbackAnswer(status, {"error": problem, "correlation_id": correlation_id(), **extra})


def secret_matches(expected: str | None, provided: str | None) -> bool:
    """The optional shared secret (``SYNC_CALLBACK_SECRET``), compared in constant time."""
    if not expected:
        return True
    return provided is not None and hmac.compare_digest(expected.encode(), provided.encode())


def secret_check(expected: str | None, header_value: str | None, query_value: str | None) -> str | None:
    """Where the callback carried the right secret (``SECRET_IN_HEADER`` or ``SECRET_IN_URL``; ``NO_SECRET`` when
    none is configured), or None when it did not. A header that is there decides, even when the URL holds the
    right one: a wrong header is refused. docs/protocol-notes.md §4.5: a Dataverse webhook registered with HttpHeader
    authentication sends headers (``x-functions-key: <function key>`` plus this one); F&O's HTTPS business-event
    endpoint takes only a URL, so its secret can only be ``?secret=``."""
    if not expected:
        return NO_SECRET
    if header_value is not None:
        return SECRET_IN_HEADER if secret_matches(expected, header_value) else None
    return SECRET_IN_URL if query_value is not None and secret_matches(expected, query_value) else None


class _RepeatedMember(ValueError):
    pass


class _NotJsonConstant(ValueError):
    pass


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259), though Python's reader takes them."""
    raise _NotJsonConstant(name)


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
        raw = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    except _NotJsonConstant as exc:
        return _error(400, f"body is not valid JSON: {exc} is not a JSON value (RFC 8259)")
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


def _ignored(plan: Plan, reason: str, **fields: Any) -> CallbackAnswer:
    log(logger, logging.INFO, "callback acknowledged and ignored", template=plan.name, reason=reason, **fields)
    return CallbackAnswer(200, {"template": plan.name, **fields, "correlation_id": correlation_id(),
                                "status": "ignored", "reason": reason})


def _rejected(plan: Plan, answer: CallbackAnswer) -> CallbackAnswer:
    log(logger, logging.WARNING, "callback rejected", template=plan.name, status=answer.status,
        problem=answer.body["error"])
    return answer


def _queue(plan: Plan, queues: CallbackQueues, item: WorkItem) -> CallbackAnswer | None:
    """Put ``item`` on the template's queue (one bounded write); the answer when that failed, else None."""
    try:
        queues.send(item)
    except (AzureError, OSError) as exc:  # storage is unreachable: make the sender retry; nothing was accepted
        log(logger, logging.ERROR, "callback could not be queued", template=plan.name, key=item.key,
            target_id=item.target_id, error=f"{type(exc).__name__}: {exc}")
        return _error(503, "could not queue the event; retry later", template=plan.name)
    except Exception as exc:  # a fault of this code, not of the input (validated above) nor of storage
        log(logger, logging.ERROR, "callback failed unexpectedly", template=plan.name, key=item.key,
            target_id=item.target_id, event_id=item.event_id, error=f"{type(exc).__name__}: {exc}")
        return _error(500, "the event could not be handled (an internal error; see the log)", template=plan.name)
    return None


def handle_callback(plan: Plan, queues: CallbackQueues, body: bytes,
                    headers: Mapping[str, str] | None = None, *, secret_in_url: bool = False,
                    clock: Clock = SYSTEM_CLOCK) -> CallbackAnswer:
    """Validate one callback, a business event or a data event, and queue its work item; ``headers`` are the
    request's (a data event cut for size says so in one). The answer says which kind the body was.
    ``clock`` stamps the work item's arrival (the runtime's: a refresh compares it with scan start times).
    ``secret_in_url``: the callback secret came as ``?secret=``, which only a business event may use (F&O's
    endpoint takes a URL only); a data event comes through a Dataverse webhook, which can send the header
    (the trigger passes False when ``SYNC_CALLBACK_SECRET_IN_URL=any`` lets data events use the URL too)."""
    raw = read_body(body)
    if isinstance(raw, CallbackAnswer):
        return _rejected(plan, raw)
    if looks_like_data_event(raw):
        if secret_in_url:
            return replace(_rejected(plan, _error(
                401, f"a data event carries the callback secret in the {SECRET_HEADER} header (register the "
                     f"Dataverse webhook with HttpHeader authentication: x-functions-key and {SECRET_HEADER}); "
                     f"?{SECRET_QUERY_PARAMETER}= is only for F&O's business-event endpoint unless "
                     f"SYNC_CALLBACK_SECRET_IN_URL=any")), kind=DATA_EVENT)
        return replace(handle_data_event(plan, queues, raw, headers, clock), kind=DATA_EVENT)
    return replace(_business_event(plan, queues, raw, body, clock), kind=BUSINESS_EVENT)


def _business_event(plan: Plan, queues: CallbackQueues, raw: dict[str, Any], body: bytes,
                    clock: Clock = SYSTEM_CLOCK) -> CallbackAnswer:
    if is_test_event(raw.get("BusinessEventId")):
        # Accepted whatever its other fields hold: F&O must be able to activate the endpoint (§4.1).
        log(logger, logging.INFO, "activation test event accepted and ignored", template=plan.name)
        return CallbackAnswer(200, {"template": plan.name, "correlation_id": correlation_id(), "status": "ignored",
                                    "reason": "activation test event"})
    if len(body) > MAX_BUSINESS_EVENT_BYTES:
        return _rejected(plan, _error(413, f"body is {len(body)} bytes; the limit is {MAX_BUSINESS_EVENT_BYTES} "
                                           "for a business event"))
    event = parse_event(raw)
    if isinstance(event, CallbackAnswer):
        if "BusinessEventId" not in raw:  # nothing says which format it meant: name both
            event.body["error"] = (f"neither a business event nor a data event (a RemoteExecutionContext with "
                                   f"MessageName and InputParameters): {event.body['error']}")
        return _rejected(plan, event)
    key = key_from_event(plan, event)
    if key is None:
        return _ignored(plan, f"the event names no {' / '.join(plan.key_properties)}",
                        event_id=event.EventId, business_event=event.BusinessEventId)
    if isinstance(key, CallbackAnswer):
        return _rejected(plan, key)
    item = WorkItem(template=plan.name, key=key, event_id=event.EventId, business_event_id=event.BusinessEventId,
                    control_number=event.ControlNumber, event_time=event.event_time.isoformat(),
                    received_at=clock.now().isoformat(), correlation_id=correlation_id())
    failed = _queue(plan, queues, item)
    if failed is not None:
        return failed
    log(logger, logging.INFO, "callback queued", template=plan.name, event_id=event.EventId,
        business_event=event.BusinessEventId, control_number=event.ControlNumber, key=key)
    return CallbackAnswer(202, {"template": plan.name, "event_id": event.EventId, "correlation_id": correlation_id(),
                                "status": "queued", "key": key})


# -- data events (docs/protocol-notes.md §4.4) -----------------------------------------------------------------


@dataclass(frozen=True)
class PartialKey:
    """Some of the template's key fields, as a data event carried them (an Updated event carries only the changed
    columns: a level's phrase without its company)."""

    fields: dict[str, str]
    missing: list[str]


def key_from_data_event(plan: Plan, event: DataEvent) -> dict[str, str] | PartialKey | CallbackAnswer | None:
    """The template's key from the virtual table's key columns: in ``Target``, else (an Updated event carries only
    the changed columns) in its ``PreImage``. None when neither names the record (the company alone does not):
    then only ``Target.Id`` names it; a ``PartialKey`` when the image names it but lacks some key columns. Values
    are held to the same rules as a business event's key fields (a value that cannot name a record is a 400)."""
    spec = plan.template.data_event
    assert spec is not None
    naming = [p for p in plan.key_properties if p != COMPANY_KEY] or list(plan.key_properties)
    images = [image for image in (event.target, event.pre_image) if image is not None]
    image = next((i for i in images if any(i.values(spec.key_columns[p]) for p in naming)), None)
    if image is None:
        return None
    key: dict[str, str] = {}
    missing: list[str] = []
    for prop in plan.key_properties:
        column = spec.key_columns[prop]
        values = image.values(column)
        if len(values) > 1:
            return _error(400, f"more than one attribute names key column {column} (key field {prop})")
        if not values:
            missing.append(f"{prop} ({column})")
            continue
        problem = key_problem(prop, values[0])
        if problem is not None:
            return _error(400, f"{problem} (attribute {column})")
        key[prop] = values[0]
    dates = [p for p in plan.date_key_properties if p not in key]
    if dates and len(missing) == len(dates):
        # Every other key part is there: a data event drops null dates, and F&O's empty date is null there
        # (docs/protocol-notes.md §4.4), so an absent date key part is the empty date 1900-01-01 (an open ValidTo;
        # inferred). With other parts missing too, the image is partial (an Updated event) and the dates stay unknown.
        key.update(dict.fromkeys(dates, EMPTY_DATE))
        missing = []
    if missing:
        return PartialKey(key, missing)
    return key


def _event_time(created_on: str | None) -> str | None:
    """A data event's ``OperationCreatedOn`` (a WCF date, or ISO 8601) as ISO 8601 for ``loyaltysync.lag``; None
    when absent or unreadable (the event is handled all the same)."""
    if not created_on:
        return None
    try:
        when = wcf_date(created_on) if created_on.startswith("/Date(") else datetime.fromisoformat(created_on)
    except ValueError:
        return None
    return when.isoformat() if when.tzinfo is not None else None


def handle_data_event(plan: Plan, queues: CallbackQueues, raw: dict[str, Any],
                      headers: Mapping[str, str] | None, clock: Clock = SYSTEM_CLOCK) -> CallbackAnswer:
    """A Dataverse ``RemoteExecutionContext`` carrying an F&O data event: queue a work item for its record (by key,
    or by ``Target.Id``), or a refresh of the template when Dataverse cut the body for size."""
    try:
        event = parse_data_event(raw, headers)
    except DataEventError as exc:
        return _rejected(plan, _error(400, f"not a data event: {exc}"))
    spec = plan.template.data_event
    ids = {"event_id": event.dedup_id(), "message_name": event.message_name, "entity": event.entity or ""}
    if event.change is None:
        return _ignored(plan, f"message {event.message_name} is not an F&O data event "
                                     "(OnExternalCreated, OnExternalUpdated, OnExternalDeleted)", **ids)
    if spec is None:
        return _ignored(plan, "the template file has no data_event section", **ids)
    if event.entity != spec.virtual_table:
        return _ignored(plan, f"a data event of {event.entity}, not of {spec.virtual_table}", **ids)
    received_at = clock.now().isoformat()

    def work_item(kind: WorkKind, key: dict[str, str] | None = None, target_id: str = "",
                  partial_key: dict[str, str] | None = None) -> WorkItem:
        return WorkItem(template=plan.name, kind=kind, key=key or {}, target_id=target_id,
                        partial_key=partial_key or {}, event_id=ids["event_id"],
                        event_time=_event_time(event.created_on), received_at=received_at,
                        correlation_id=correlation_id())

    if event.target is None:  # cut for size: no Target, so no record named; scan the template instead of dropping it
        log(logger, logging.WARNING, "data event cut for size by Dataverse (no InputParameters); a refresh of the "
            "template is asked for instead (coalesced with any pending one)", template=plan.name, **ids)
        item = work_item(WorkKind.REFRESH)
    else:
        found = key_from_data_event(plan, event)
        if isinstance(found, CallbackAnswer):
            return _rejected(plan, found)
        partial = found if isinstance(found, PartialKey) else None
        key = found if isinstance(found, dict) else None
        target_id = event.target_id or ""
        kind = WorkKind.DATA_DELETE if event.change is DataChange.DELETED else WorkKind.DATA_UPSERT
        if key is None and not target_id and partial is None:
            what = "Target.Id" if event.change is DataChange.DELETED else (
                f"key columns ({', '.join(spec.key_columns.values())}) and no Target.Id")
            return _rejected(plan, _error(400, f"the data event names no record: it has no {what}",
                                          template=plan.name))
        if partial is not None:
            # Never a 4xx for a well-formed event (a Dataverse webhook does not retry one): the worker finds the
            # record by Target.Id (the index its Created filled), else by the key fields carried, else asks for the
            # template's (coalesced) refresh.
            log(logger, logging.INFO, "data event carries only part of the key; the worker resolves it",
                template=plan.name, carried=partial.fields, missing=",".join(partial.missing),
                target_id=target_id, **ids)
            if not target_id:
                kind = WorkKind.REFRESH
        item = work_item(kind, key, target_id, partial.fields if partial is not None else None)
    failed = _queue(plan, queues, item)
    if failed is not None:
        return failed
    log(logger, logging.INFO, "data event queued", template=plan.name, kind=item.kind.value, key=item.key,
        target_id=item.target_id, **ids)
    return CallbackAnswer(202, {"template": plan.name, "event_id": item.event_id, "correlation_id": correlation_id(),
                                "status": "queued", "kind": item.kind.value, "key": item.key or None,
                                "target_id": item.target_id or None})
