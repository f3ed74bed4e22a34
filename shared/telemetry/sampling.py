"""The storage sample behind the observable gauges: backlog (queued, poison, held), parked records and watermark
ages, read by one timer every few minutes (a timer trigger runs on one instance at a time) rather than by every
instance at every export. The sample is kept in ``metrics.GAUGES``; the gauges report it while it is fresh.

Cheap reads only: a queue's approximate message count (one call per queue), held and parked rows by key only,
and the watermark table (a row per template, direction and scope).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime

from shared.observability import log
from shared.state.queues import CallbackQueues, QueueKind
from shared.state.store import StateStore
from shared.telemetry import metrics

logger = logging.getLogger("loyaltysync.telemetry")


def backlog(state: StateStore, queues: CallbackQueues, template: str) -> list[tuple[int, dict[str, str]]]:
    """``loyaltysync.backlog`` of one template: queued and poison messages of both its queues (``queue``: callbacks
    or pages, ``CallbackQueues.backlog``), and the work items held while it is paused."""
    found = [(count, {"template": template, "kind": kind, "queue": queue})
             for queue, counts in queues.backlog(template).items() for kind, count in counts.items()]
    held = sum(1 for _ in state.callbacks.held_items(template))
    found.append((held, {"template": template, "kind": metrics.HELD, "queue": QueueKind.CALLBACKS.value}))
    return found


def watermark_ages(state: StateStore, now: datetime) -> list[tuple[float, dict[str, str]]]:
    """Seconds since the last successful run of each scope started (what the data in Dataverse is as of)."""
    ages: list[tuple[float, dict[str, str]]] = []
    for mark in state.watermarks.all():
        if not mark.last_run_started:
            continue  # never completed: no watermark yet (``loyaltysync.runs`` says why)
        with contextlib.suppress(ValueError):
            started = datetime.fromisoformat(mark.last_run_started)
            ages.append((round((now - started).total_seconds(), 3),
                         {"template": mark.template, "direction": mark.direction, "scope": mark.scope}))
    return ages


def sample(state: StateStore, queues: CallbackQueues, templates: Iterable[str]) -> metrics.Snapshot:
    """Read storage once and publish the sample to the gauges."""
    names = list(templates)
    snapshot = metrics.Snapshot(
        backlog=[entry for template in names for entry in backlog(state, queues, template)],
        parked=[(len(state.parked.keys(template)), {"template": template}) for template in names],
        watermark_age=watermark_ages(state, state.clock.now()),
        taken_monotonic=metrics.GAUGES.monotonic(),
    )
    metrics.GAUGES.snapshot = snapshot
    log(logger, logging.INFO, "telemetry sampled", templates=len(names),
        queued=sum(v for v, a in snapshot.backlog if a["kind"] == metrics.QUEUED),
        poison=sum(v for v, a in snapshot.backlog if a["kind"] == metrics.POISON),
        held=sum(v for v, a in snapshot.backlog if a["kind"] == metrics.HELD),
        parked=sum(v for v, _ in snapshot.parked))
    return snapshot
