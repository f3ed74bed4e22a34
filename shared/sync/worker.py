"""The queue-triggered worker: one callback's work item, deduplicated, applied, or held while paused.

Business events arrive at least once, possibly twice and out of order (protocols.md §4.1). A work
item is dropped, and counted as a duplicate, when its ``EventId`` (compared case-insensitively) was
already processed, or when its ``ControlNumber`` equals the one last applied to the same key. Any other
event re-reads the record from Commerce, so an old event can never write old data. An event id is
remembered only after its work is done, so a worker that dies mid-way replays it.

Failures. An outage (storage, Commerce or Dataverse unreachable) leaves the message to the host, which
retries it and finally moves it to the poison queue. Any other error is a fault that a retry would only
repeat, possibly after Dataverse was already written: it is logged with the key and correlation id, the
record is parked (``unexpected``, not retried by the timer; the next scan or an operator's replay syncs
it) and the message is finished. Bookkeeping after the work (remembering the event, counters) never
fails the message either: a redelivery would only redo finished work.
"""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError

from shared.http.errors import ApiError
from shared.mapping.model import Direction
from shared.messages.events import WorkItem
from shared.observability import correlation_scope, log
from shared.runtime import Runtime
from shared.state.store import ConcurrencyConflict, encode_key
from shared.sync.parking import Parking

logger = logging.getLogger("loyaltysync.worker")

# Worth the host's retries: the service may be back by the next delivery.
OUTAGES = (ApiError, AzureError, ConcurrencyConflict, OSError)


def is_paused(runtime: Runtime, template: str) -> bool:
    return template in runtime.settings.paused_templates or runtime.state.callbacks.is_paused(template)


def process(runtime: Runtime, item: WorkItem) -> str:
    """Apply one work item; returns held, duplicate, failed, or the engine's outcome."""
    state = runtime.state
    with correlation_scope(item.correlation_id or None):
        if is_paused(runtime, item.template):
            state.callbacks.hold(item.template, item.order_key, item.model_dump_json())
            state.callbacks.bump(item.template, held=1)
            log(logger, logging.INFO, "template paused; work item held", template=item.template, key=item.key,
                event_id=item.event_id)
            return "held"
        event_id = item.event_id.upper()  # F&O sends upper-case GUIDs; a retry in another case is the same event
        if event_id and state.callbacks.event_applied(item.template, event_id):
            state.callbacks.bump(item.template, duplicates_dropped=1)
            log(logger, logging.INFO, "duplicate event dropped", template=item.template, event_id=item.event_id)
            return "duplicate"
        engine = runtime.outbound(item.template)
        key = engine.plan.key_of(item.key)
        if item.control_number:
            # Only an equal ControlNumber is skipped (the same event delivered again). A lower one is not:
            # the record is re-read anyway, so skipping older events would only save a read, and trusting
            # "higher is newer" lets one event with a huge ControlNumber (2^63-1 is valid) silence its key
            # for good. Re-reading costs one Commerce GET and writes nothing when nothing changed.
            applied = state.synced.get(engine.partition(engine.plan.company_of(key)), encode_key(key))
            if applied is not None and applied.control_number == item.control_number:
                state.callbacks.bump(item.template, duplicates_dropped=1)
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


def _unexpected(runtime: Runtime, item: WorkItem, row_key: str, exc: Exception) -> str:
    """Park the record of a work item that hit a fault; never raise (a redelivery could write again)."""
    error = f"{type(exc).__name__}: {exc}"
    log(logger, logging.ERROR, "work item failed unexpectedly; record parked, message finished",
        template=item.template, key=item.key, event_id=item.event_id, error=error)
    logger.debug("traceback of the unexpected failure", exc_info=exc)
    try:
        Parking(runtime.state, item.template, Direction.TO_DATAVERSE).park(row_key, exc, "callback", None,
                                                                          correlation=item.correlation_id)
    except Exception as park_exc:
        log(logger, logging.ERROR, "record could not be parked", template=item.template, key=item.key,
            error=f"{type(park_exc).__name__}: {park_exc}")
    return "failed"


def _finish(runtime: Runtime, item: WorkItem, event_id: str, outcome: str) -> None:
    """Remember the event and count the outcome; a failure here is logged, not raised: the work is done."""
    try:
        if event_id:
            runtime.state.callbacks.remember_event(item.template, event_id, outcome)
        runtime.state.callbacks.bump(item.template, **{f"callbacks_{outcome}": 1})
    except Exception as exc:
        log(logger, logging.ERROR, "work item done but not recorded", template=item.template, key=item.key,
            event_id=item.event_id, outcome=outcome, error=f"{type(exc).__name__}: {exc}")
        return
    log(logger, logging.INFO, "work item done", template=item.template, key=item.key, outcome=outcome,
        event_id=item.event_id)
