"""The queue-triggered worker: one callback's work item, deduplicated, applied, or held while paused.

Business events arrive at least once, possibly twice and out of order (protocols.md §4.1). A work
item is dropped, and counted, when its ``EventId`` was already processed, or when a newer event
(higher ``ControlNumber``) was already applied to the same key. Either way the record is re-read from
Commerce, so an old event can never write old data; dropping only saves the work. An event id is
remembered only after its work is done, so a worker that dies mid-way replays it.
"""

from __future__ import annotations

import logging

from shared.observability import correlation_scope, log
from shared.runtime import Runtime
from shared.state.store import encode_key
from shared.sync.events import WorkItem

logger = logging.getLogger("loyaltysync.worker")


def is_paused(runtime: Runtime, template: str) -> bool:
    return template in runtime.settings.paused_templates or runtime.state.is_paused(template)


def process(runtime: Runtime, item: WorkItem) -> str:
    """Apply one work item; returns held, duplicate, stale, or the engine's outcome."""
    state = runtime.state
    with correlation_scope(item.correlation_id or None):
        if is_paused(runtime, item.template):
            state.hold(item.template, item.order_key, item.model_dump_json())
            state.bump(item.template, held=1)
            log(logger, logging.INFO, "template paused; work item held", template=item.template, key=item.key,
                event_id=item.event_id)
            return "held"
        if item.event_id and state.event_applied(item.template, item.event_id):
            state.bump(item.template, duplicates_dropped=1)
            log(logger, logging.INFO, "duplicate event dropped", template=item.template, event_id=item.event_id)
            return "duplicate"
        engine = runtime.outbound(item.template)
        key = engine.plan.key_of(item.key)
        if item.control_number:
            applied = state.get_synced(engine.partition(engine.plan.company_of(key)), encode_key(key))
            if applied is not None and applied.control_number >= item.control_number:
                state.bump(item.template, stale_dropped=1)
                log(logger, logging.INFO, "event older than the one applied; dropped", template=item.template,
                    key=item.key, control_number=item.control_number, applied=applied.control_number)
                return "stale"
        outcome = engine.sync_key(item.key, source="callback", control_number=item.control_number)
        if item.event_id:
            state.remember_event(item.template, item.event_id, outcome)
        state.bump(item.template, **{f"callbacks_{outcome}": 1})
        log(logger, logging.INFO, "work item done", template=item.template, key=item.key, outcome=outcome,
            event_id=item.event_id)
        return outcome
