"""The queue-triggered worker: one callback's work item, deduplicated, applied, or held while paused.

Business events arrive at least once, possibly twice and out of order (docs/protocol-notes.md §4.1). A work
item is dropped, and counted as a duplicate, when its ``EventId`` (compared case-insensitively) was
already processed, or when its ``ControlNumber`` equals the one last applied to the same key. Any other
event re-reads the record from Commerce, so an old event can never write old data. An event id is
remembered only after its work is done, so a worker that dies mid-way replays it.

F&O data events (docs/protocol-notes.md §4.4) carry no ``EventId`` and no ``ControlNumber``: the callback gives each a
de-duplication id (``OperationId``, else ``MessageName`` + ``Target.Id`` + ``OperationCreatedOn``), remembered
like an event id, and ControlNumber logic never applies to them (every such event re-reads its record). A
Created/Updated event that names its key records ``Target.Id`` -> key first; an event naming its record only by
``Target.Id`` (every Deleted) is resolved through that index and takes the same path, so a delete happens only
when the read by key finds the record gone; one carrying part of its key (an Updated event carries only the
changed columns) is looked up in Commerce by those fields (one read). An id nobody knows, or an event Dataverse
cut for size, asks for the template's refresh instead (``request_refresh``): it joins the one pending refresh of
the template, which ``timer_refresh_pending`` starts at most once per ``SYNC_REFRESH_MIN_INTERVAL_S``, and is
skipped when a scan that began after the event arrived already ran. No callback starts a scan by itself, so many
of them cost one scan, not many. Nothing is deleted on a payload's word.

Failures. An outage (storage, Commerce or Dataverse unreachable) leaves the message to the host, which
retries it and finally moves it to the poison queue. Any other error is a fault that a retry would only
repeat, possibly after Dataverse was already written: it is logged with the key and correlation id, the
record is parked (``unexpected``, not retried by the timer; the next scan or an operator's replay syncs
it) and the message is finished. Bookkeeping after the work (remembering the event) never
fails the message either: a redelivery would only redo finished work.

Metrics, not table rows: every work item's outcome is ``loyaltysync.work_items``; a duplicate dropped is also
``loyaltysync.callbacks`` result duplicate; a record's outcome is ``loyaltysync.records`` (scope: the key's
legal entity, or all); a record written or deleted from an event that carries its time (a business event's
EventTime, a data event's OperationCreatedOn) is ``loyaltysync.lag``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from azure.core.exceptions import AzureError

from shared.http.errors import ApiError
from shared.mapping.model import Direction
from shared.messages import PageTask
from shared.messages.events import WorkItem, WorkKind
from shared.observability import correlation_scope, log
from shared.runtime import Runtime
from shared.state.store import ConcurrencyConflict, decode_key, encode_key
from shared.sync.parking import Parking
from shared.sync.runs import ALL, DIRECTION_OUT, Outcome, RunStatus, scope_of
from shared.telemetry import metrics

logger = logging.getLogger("loyaltysync.worker")

# Worth the host's retries: the service may be back by the next delivery.
OUTAGES = (ApiError, AzureError, ConcurrencyConflict, OSError)


def is_paused(runtime: Runtime, template: str) -> bool:
    return template in runtime.settings.paused_templates or runtime.state.callbacks.is_paused(template)


def process(runtime: Runtime, item: WorkItem) -> str:
    """Apply one work item; returns held, duplicate, failed, or the engine's outcome (counted as
    ``loyaltysync.work_items``; an outage raises and is not counted: the host delivers the item again)."""
    outcome = _process(runtime, item)
    metrics.record_work_item(item.template, item.kind.value, outcome)
    return outcome


def _process(runtime: Runtime, item: WorkItem) -> str:
    state = runtime.state
    with correlation_scope(item.correlation_id or None):
        if is_paused(runtime, item.template):
            state.callbacks.hold(item.template, item.order_key, item.model_dump_json())
            log(logger, logging.INFO, "template paused; work item held", template=item.template, key=item.key,
                event_id=item.event_id)
            return "held"
        event_id = item.event_id.upper()  # F&O sends upper-case GUIDs; a retry in another case is the same event
        if event_id and state.callbacks.event_applied(item.template, event_id):
            _duplicate(item)
            log(logger, logging.INFO, "duplicate event dropped", template=item.template, event_id=item.event_id)
            return "duplicate"
        if item.kind is not WorkKind.BUSINESS_EVENT:
            outcome = _data_event(runtime, item)
            _finish(runtime, item, event_id, outcome)
            return outcome
        engine = runtime.outbound(item.template)
        key = engine.plan.key_of(item.key)
        if item.control_number:  # business events only: data events have none (an equal 0 would drop all but one)
            # Only an equal ControlNumber is skipped (the same event delivered again). A lower one is not:
            # the record is re-read anyway, so skipping older events would only save a read, and trusting
            # "higher is newer" lets one event with a huge ControlNumber (2^63-1 is valid) silence its key
            # for good. Re-reading costs one Commerce GET and writes nothing when nothing changed.
            applied = state.synced.get(engine.partition(engine.plan.company_of(key)), encode_key(key))
            if applied is not None and applied.control_number == item.control_number:
                _duplicate(item)
                log(logger, logging.INFO, "event already applied to this key; dropped", template=item.template,
                    key=item.key, control_number=item.control_number)
                return "duplicate"
        try:
            outcome = engine.sync_key(item.key, source="callback", control_number=item.control_number)
        except OUTAGES:
            raise  # the host retries the message
        except Exception as exc:
            outcome = _unexpected(runtime, item, encode_key(key), exc)
        _finish(runtime, item, event_id, outcome)
        return outcome


def _duplicate(item: WorkItem) -> None:
    kind = "business_event" if item.kind is WorkKind.BUSINESS_EVENT else "data_event"
    metrics.record_callback(item.template, kind, metrics.DUPLICATE, None)


# A data event carrying only part of its key is looked up in Commerce by those fields; at most this many records
# it may name are synced from it (more: a refresh instead).
MAX_CANDIDATES = 10


def _data_event(runtime: Runtime, item: WorkItem) -> str:
    """A data event's work: find its record (key; ``Target.Id`` through the index; the key fields it carried, looked
    up in Commerce), re-read and sync it; the template's refresh when no record can be named."""
    state = runtime.state
    engine = runtime.outbound(item.template)
    key = dict(item.key)
    if key and item.target_id and item.kind is WorkKind.DATA_UPSERT:
        # First, so that a Deleted event arriving later finds it even if this sync fails; an outage raises (retried).
        state.target_ids.remember(item.template, item.target_id, encode_key(engine.plan.key_of(key)))
    elif not key and item.target_id:
        row_key = state.target_ids.key_of(item.template, item.target_id)
        if row_key is not None:
            key = engine.plan.key_as_dict(decode_key(row_key))
            log(logger, logging.INFO, "data event resolved through Target.Id", template=item.template,
                target_id=item.target_id, key=key, kind=item.kind.value)
    if not key and item.partial_key:
        found = _by_partial_key(runtime, item)
        if found:
            return _sync_found(runtime, item, found)
    if not key:
        reason = (REASON_PARTIAL_KEY if item.partial_key else REASON_UNKNOWN_TARGET_ID if item.target_id
                  else REASON_SIZE_EXCEEDED)
        if reason == REASON_UNKNOWN_TARGET_ID:
            log(logger, logging.INFO, "no record known for this Target.Id; asking for the template's refresh",
                template=item.template, target_id=item.target_id, kind=item.kind.value, event_id=item.event_id)
        return request_refresh(runtime, item, reason)
    try:
        outcome = engine.sync_key(key, source="callback")
    except OUTAGES:
        raise  # the host retries the message
    except Exception as exc:
        return _unexpected(runtime, item, encode_key(engine.plan.key_of(key)), exc)
    if item.kind is WorkKind.DATA_DELETE and item.target_id:
        try:  # F&O never reuses a RecId: the id names nothing any more (only bookkeeping; a failure is logged)
            state.target_ids.forget(item.template, item.target_id)
        except Exception as exc:
            log(logger, logging.WARNING, "Target.Id not removed from the index", template=item.template,
                target_id=item.target_id, error=f"{type(exc).__name__}: {exc}")
    return outcome


def _by_partial_key(runtime: Runtime, item: WorkItem) -> list[dict[str, str]]:
    """The keys of the Commerce records whose key fields equal what the event carried (one read); empty when there
    are none or more than ``MAX_CANDIDATES`` (a refresh then)."""
    engine = runtime.outbound(item.template)
    plan = engine.plan
    rows = engine.commerce.find(engine.entity_set, item.partial_key, select=list(plan.key_properties),
                                limit=MAX_CANDIDATES)
    keys = list({plan.key_of(row): plan.key_as_dict(plan.key_of(row)) for row in rows}.values())
    if len(keys) > MAX_CANDIDATES:
        log(logger, logging.INFO, "the key fields a data event carried name too many records; asking for a refresh",
            template=item.template, carried=item.partial_key, found=len(keys))
        return []
    log(logger, logging.INFO, "data event resolved by the key fields it carried", template=item.template,
        carried=item.partial_key, keys=len(keys), target_id=item.target_id)
    return keys


def _sync_found(runtime: Runtime, item: WorkItem, keys: list[dict[str, str]]) -> str:
    """Re-read and sync each record found (an Updated event of one of them: the others come out unchanged); the
    ``Target.Id`` is remembered when exactly one was found."""
    engine = runtime.outbound(item.template)
    if len(keys) == 1 and item.target_id and item.kind is WorkKind.DATA_UPSERT:
        runtime.state.target_ids.remember(item.template, item.target_id, encode_key(engine.plan.key_of(keys[0])))
    outcomes: list[str] = []
    for key in keys:
        try:
            outcomes.append(str(engine.sync_key(key, source="callback")))
        except OUTAGES:
            raise
        except Exception as exc:
            outcomes.append(_unexpected(runtime, item, encode_key(engine.plan.key_of(key)), exc))
    return next((o for o in outcomes if o != Outcome.UNCHANGED), Outcome.UNCHANGED.value)


def run_page_task(runtime: Runtime, task: PageTask) -> str:
    """One message of a template's pages queue: a key range, delete check or delete pass of a fanned-out scan
    (``Scan.run_task``), or a key range (or the planning) of a fanned-out inbound baseline (``InboundSync.run_task``)."""
    if task.kind in ("inbound", "inbound_plan"):
        return runtime.inbound(task.template).run_task(task, runtime.queues.send_page)
    return runtime.scan(task.template).run_task(task)


REASON_SIZE_EXCEEDED, REASON_UNKNOWN_TARGET_ID, REASON_PARTIAL_KEY = "size_exceeded", "unknown_target_id", "partial_key"


def _known_scopes(runtime: Runtime, template: str) -> list[str]:
    """The template's scopes as far as the state knows them, with no call to F&O (a request must stay cheap): ``all``,
    or the configured legal entities, else those its watermarks name."""
    if not runtime.outbound(template).plan.company_specific:
        return [ALL]
    if runtime.settings.legal_entities:
        return [scope_of(company) for company in runtime.settings.legal_entities]
    return sorted({m.scope for m in runtime.state.watermarks.all()
                   if m.template == template and m.direction == DIRECTION_OUT and m.scope != ALL})


def _covered(runtime: Runtime, template: str, since: datetime) -> bool:
    """A scan of every scope of the template started at or after ``since`` (it read Commerce after the change)."""
    scopes = _known_scopes(runtime, template)
    for scope in scopes:
        mark = runtime.state.watermarks.get(template, DIRECTION_OUT, scope)
        if not mark.last_run_started or datetime.fromisoformat(mark.last_run_started) < since:
            return False
    return bool(scopes)


def request_refresh(runtime: Runtime, item: WorkItem, reason: str) -> str:
    """Ask for a scan of the template for a callback that names no record found: never a scan from here. The
    request joins the template's pending refresh (``shared.state.refresh``), or makes one pending, unless a scan
    that began after the callback arrived already covers it. The refresh timer (``run_pending_refreshes``) starts a
    pending refresh once the minimum interval since the last one has passed. Returns ``refresh_pending``,
    ``refresh_coalesced`` or ``refresh_covered``; every request is counted (``loyaltysync.refresh.requests``)."""
    template = item.template
    if _covered(runtime, template, datetime.fromisoformat(item.received_at)):
        outcome = "covered"
    else:
        outcome = "pending" if runtime.state.refresh.request(template, reason) else "coalesced"
    metrics.record_refresh_request(template, reason, outcome)
    log(logger, logging.INFO, "template refresh requested", template=template, reason=reason, outcome=outcome,
        target_id=item.target_id, event_id=item.event_id)
    return f"refresh_{outcome}"


def run_pending_refreshes(runtime: Runtime) -> dict[str, str]:
    """Start each template's pending refresh that is due (``SYNC_REFRESH_MIN_INTERVAL_S`` since the last one
    began): a scan of every scope, as its timer would, skipping scopes a scan began in since the last request
    joined. Returns the outcome per template with a pending refresh: started, busy (a scan holds the lease: it, or
    the next timer run, sees the change), covered, waiting (not due yet), paused (stays pending) or failed (made
    pending again, logged)."""
    results: dict[str, str] = {}
    known = {t.name for t in runtime.catalog}
    interval = runtime.settings.refresh_min_interval_s
    for pending in runtime.state.refresh.all():
        template = pending.template
        if not pending.pending or template not in known:
            continue
        if is_paused(runtime, template):
            results[template] = "paused"
            continue
        claimed = runtime.state.refresh.claim(template, interval)
        if claimed is None:
            results[template] = "waiting"
            continue
        try:
            outcome = _start_refresh(runtime, template, datetime.fromisoformat(claimed.last_requested_at))
        except Exception as exc:  # not lost: pending again, retried by the next tick
            log(logger, logging.ERROR, "template refresh failed to start; pending again", template=template,
                error=f"{type(exc).__name__}: {exc}")
            runtime.state.refresh.request(template, f"retry: {type(exc).__name__}")
            outcome = "failed"
        results[template] = outcome
        metrics.record_refresh(template, outcome)
        runtime.state.refresh.finished(template, outcome)
        log(logger, logging.INFO, "template refresh taken up", template=template, outcome=outcome,
            requests=claimed.requests, reason=claimed.reason, first_requested_at=claimed.first_requested_at)
    return results


def _start_refresh(runtime: Runtime, template: str, last_requested: datetime) -> str:
    scan = runtime.scan(template)
    started: list[str] = []
    busy: list[str] = []
    for company in scan.scopes(runtime.settings.legal_entities):
        scope = scope_of(company)
        mark = runtime.state.watermarks.get(template, DIRECTION_OUT, scope)
        if mark.last_run_started and datetime.fromisoformat(mark.last_run_started) >= last_requested:
            continue
        summary = scan.start(company) if runtime.settings.fan_out else scan.run_scope(company)
        (busy if summary.status == RunStatus.SKIPPED else started).append(scope)
    return "started" if started else "busy" if busy else "covered"


def _unexpected(runtime: Runtime, item: WorkItem, row_key: str, exc: Exception) -> str:
    """Park the record of a work item that hit a fault; never raise (a redelivery could write again)."""
    error = f"{type(exc).__name__}: {exc}"
    log(logger, logging.ERROR, "work item failed unexpectedly; record parked, message finished",
        template=item.template, key=item.key, event_id=item.event_id, error=error)
    logger.debug("traceback of the unexpected failure", exc_info=exc)
    try:
        Parking(runtime.state, item.template, Direction.TO_DATAVERSE, plan=runtime.outbound(item.template).plan).park(
            row_key, exc, "callback", None, correlation=item.correlation_id)
    except Exception as park_exc:
        log(logger, logging.ERROR, "record could not be parked", template=item.template, key=item.key,
            error=f"{type(park_exc).__name__}: {park_exc}")
    return "failed"


def _finish(runtime: Runtime, item: WorkItem, event_id: str, outcome: str) -> None:
    """Count the outcome and remember the event; a failure here is logged, not raised: the work is done."""
    _measure(runtime, item, outcome)
    try:
        if event_id:
            runtime.state.callbacks.remember_event(item.template, event_id, outcome)
    except Exception as exc:
        log(logger, logging.ERROR, "work item done but not recorded", template=item.template, key=item.key,
            event_id=item.event_id, outcome=outcome, error=f"{type(exc).__name__}: {exc}")
        return
    log(logger, logging.INFO, "work item done", template=item.template, key=item.key, outcome=outcome,
        event_id=item.event_id)


# Outcomes after which the record is as Commerce has it in Dataverse (its lag is measured).
_LANDED = frozenset({Outcome.WRITTEN.value, Outcome.CREATED.value, Outcome.DELETED.value})  # plain str: an Enum hashes by name


def _measure(runtime: Runtime, item: WorkItem, outcome: str) -> None:
    """``loyaltysync.records`` for a record's outcome (a parked one was counted when parked), and ``loyaltysync.lag``
    from the event's time when the record landed."""
    if outcome == Outcome.PARKED:
        return
    plan = runtime.outbound(item.template).plan
    try:  # a data event named by Target.Id only has no key here: its scope is not known, so all
        scope = scope_of(plan.company_of(plan.key_of(item.key))) if item.key else "all"
    except Exception:  # a key the plan cannot read failed already: count it under all
        scope = "all"
    metrics.record_outcome(item.template, DIRECTION_OUT, scope, outcome)
    if outcome in _LANDED and item.event_time:
        try:
            happened = datetime.fromisoformat(item.event_time)
        except ValueError:
            return
        if happened.tzinfo is not None:
            metrics.record_lag(item.template, DIRECTION_OUT, (runtime.state.clock.now() - happened).total_seconds())
