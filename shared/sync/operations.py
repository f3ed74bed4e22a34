"""Operator actions shared by the command line and the admin HTTP endpoints.

Replay parked records (one, a selection, or all), pause and resume a template, retry parked records
whose cause may have gone away (a missing currency that now exists, throttling, outages).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from shared.messages.events import WorkItem
from shared.observability import log
from shared.runtime import Runtime
from shared.state.store import decode_key, split_parked_key

logger = logging.getLogger("loyaltysync.operations")

# Validation failures come back on every full scan anyway; these are worth a quicker retry.
RETRIABLE = frozenset({"lookup_missing", "throttled", "server", "transport", "conflict"})


@dataclass(frozen=True)
class ReplayResult:
    template: str
    key: str
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def parked_entry(entity: dict[str, Any]) -> dict[str, Any]:
    """A parked record as operators see it."""
    names = ("key", "direction", "error_class", "error", "attempts", "first_failed", "last_failed", "source",
             "correlation_id", "payload")
    return {"template": entity["PartitionKey"], "row_key": entity["RowKey"], **{n: entity.get(n) for n in names}}


def replay(runtime: Runtime, template: str | None = None, row_keys: list[str] | None = None,
           error_classes: frozenset[str] | None = None) -> list[ReplayResult]:
    """Re-sync parked records from Commerce's current state; each one leaves the table when it lands."""
    results: list[ReplayResult] = []
    for entity in list(runtime.state.parked.all(template)):
        name, row_key = entity["PartitionKey"], entity["RowKey"]
        if row_keys is not None and row_key not in row_keys:
            continue
        if error_classes is not None and entity.get("error_class") not in error_classes:
            continue
        if runtime.catalog.get(name) is None:
            results.append(ReplayResult(name, row_key, "skipped", "the template no longer exists"))
            continue
        if row_key.startswith("invalid-key:"):
            results.append(ReplayResult(name, row_key, "skipped", "the record had no usable key; fix it in Commerce"))
            continue
        direction, key = split_parked_key(row_key)
        if direction == "dataverse_to_fo":
            # The failed write was a Dataverse edit on its way to Commerce: replay it from Dataverse, never
            # by syncing Commerce over it.
            outcome = runtime.inbound(name).replay(key)
            if outcome == "not_found":
                runtime.state.parked.unpark(name, row_key)
        else:
            engine = runtime.outbound(name)
            outcome = engine.sync_key(engine.plan.key_as_dict(decode_key(key)), source="replay")
        results.append(ReplayResult(name, row_key, outcome))
    if row_keys is not None:
        found = {r.key for r in results}
        results += [ReplayResult(template or "", k, "not_found", "no parked record with that key") for k in row_keys
                    if k not in found]
    log(logger, logging.INFO, "replay finished", template=template or "*", replayed=len(results),
        landed=sum(r.outcome in ("written", "unchanged", "deleted") for r in results))
    return results


def retry_parked(runtime: Runtime) -> list[ReplayResult]:
    return replay(runtime, error_classes=RETRIABLE)


def pause(runtime: Runtime, template: str, *, by: str) -> None:
    runtime.state.callbacks.set_paused(template, True, by=by)
    log(logger, logging.WARNING, "template paused; callbacks are queued and held", template=template, by=by)


def resume(runtime: Runtime, template: str, *, by: str) -> int:
    """Unpause, then put the held backlog back on the queue in arrival order; returns how many."""
    runtime.state.callbacks.set_paused(template, False, by=by)
    count = 0
    for order_key, message in list(runtime.state.callbacks.held_items(template)):
        runtime.queues.send(WorkItem.model_validate_json(message))
        runtime.state.callbacks.release_held(template, order_key)
        count += 1
    log(logger, logging.WARNING, "template resumed; backlog re-queued in order", template=template, by=by, items=count)
    return count
