"""A sync run's bookkeeping, the same for both directions: the lease on a scope, the summary, and the
watermark that advances only after every record below it was written (or parked), never backwards."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.observability import log
from shared.state.store import ConcurrencyConflict, StateStore, Watermark, now

logger = logging.getLogger("loyaltysync.sync")
MAX_CONFLICT_ROUNDS = 3


class LeaseLost(RuntimeError):
    """The run's lease expired and another run took it: stop without touching the watermark."""


@dataclass
class RunSummary:
    template: str
    scope: str
    run_id: str
    direction: str = "fo_to_dataverse"
    mode: str = "incremental"
    status: str = "completed"
    seen: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    conflicts: int = 0
    duration_s: float = 0.0
    detail: str = ""

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("seen", "written", "unchanged", "deleted", "failed", "conflicts")}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, counts: dict[str, int]) -> None:
        """Add another summary's counts (a checkpointed key range's) to these."""
        for name, value in counts.items():
            if name in ("seen", "written", "unchanged", "deleted", "failed", "conflicts"):
                setattr(self, name, getattr(self, name) + int(value))

    def count(self, outcome: str) -> None:
        name = {"written": "written", "created": "written", "unchanged": "unchanged", "deleted": "deleted",
                "parked": "failed", "conflict": "conflicts"}.get(outcome)
        if name:
            setattr(self, name, getattr(self, name) + 1)


@dataclass
class Run:
    """An acquired lease plus what the run learns; ``finish`` writes it back."""

    state: StateStore
    lease: Watermark
    summary: RunSummary
    lease_s: int = 900
    started_at: str = field(default_factory=lambda: now().isoformat())
    started: float = field(default_factory=time.monotonic)
    renewed: float = field(default_factory=time.monotonic)

    @classmethod
    def begin(cls, state: StateStore, template: str, direction: str, scope: str, lease_s: int, *,
              resume: Callable[[Watermark], str | None] | None = None) -> Run | RunSummary:
        """Take the scope's lease; a ``RunSummary`` with status skipped when another run holds it.
        ``resume`` may name an unfinished run (from the watermark) whose id this run takes over."""
        mark = state.get_watermark(template, direction, scope)
        resumed = resume(mark) if resume is not None else None
        run_id = resumed or str(uuid.uuid4())
        summary = RunSummary(template=template, scope=scope, run_id=run_id, direction=direction)
        lease = state.acquire_lease(template, direction, scope, run_id, lease_s, mark=mark)
        if lease is None:
            summary.status = "skipped"
            summary.detail = "another run holds the lease for this scope"
            log(logger, logging.INFO, "run skipped", template=template, direction=direction, scope=scope,
                reason=summary.detail)
            return summary
        summary.mode = "incremental" if lease.initial_completed_at else "initial"
        log(logger, logging.INFO, "run resumed" if resumed else "run started", template=template, direction=direction,
            scope=scope, run_id=run_id, mode=summary.mode)
        return cls(state, lease, summary, lease_s=lease_s)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def heartbeat(self) -> None:
        """Extend the lease while the run is alive (every third of its length); raise if it was lost."""
        if time.monotonic() - self.renewed < self.lease_s / 3:
            return
        self.lease.lease_until = (now() + timedelta(seconds=self.lease_s)).isoformat()
        try:
            self.lease = self.state.save_watermark(self.lease)
        except ConcurrencyConflict:
            raise LeaseLost(f"{self.summary.template}/{self.summary.scope}: another run took the lease") from None
        self.renewed = time.monotonic()

    def finish(self, *, advance: bool, **fields: Any) -> RunSummary:
        """Release the lease; on success advance the watermark (and set ``fields`` such as a delta link)."""
        summary = self.summary
        summary.duration_s = round(time.monotonic() - self.started, 3)
        mark = self.lease
        for _ in range(MAX_CONFLICT_ROUNDS):
            if mark.lease_owner != summary.run_id:
                break  # the lease expired and a newer run took it: that run owns the watermark now
            mark.lease_owner = ""
            mark.lease_until = ""
            if advance:
                if mark.last_run_started and mark.last_run_started > self.started_at:
                    break  # never move a watermark backwards
                mark.run_seq += 1
                mark.last_run_id = summary.run_id
                mark.last_run_started = self.started_at
                mark.last_run_finished = now().isoformat()
                mark.last_status = "completed_with_parked" if summary.failed else "completed"
                mark.last_counts = json.dumps(summary.counts())
                mark.last_error = ""
                mark.initial_completed_at = mark.initial_completed_at or mark.last_run_finished
                for name, value in fields.items():
                    setattr(mark, name, value)
            else:
                mark.last_status = "failed"
                mark.last_error = summary.detail
            try:
                self.state.save_watermark(mark)
                break
            except ConcurrencyConflict:
                mark = self.state.get_watermark(mark.template, mark.direction, mark.scope)
        level = logging.INFO if advance else logging.ERROR
        log(logger, level, "run finished" if advance else "run failed; watermark not advanced",
            template=summary.template, direction=summary.direction, scope=summary.scope, run_id=summary.run_id,
            mode=summary.mode, duration_s=summary.duration_s, detail=summary.detail, **summary.counts())
        return summary


def record_unscoped_failure(state: StateStore, template: str, direction: str, scope: str, reason: str) -> None:
    """A run that failed before it knew its scopes (the legal entities could not be listed): its row under
    ``scope`` says failed, with ``reason``, so ``status`` shows it. Nothing is logged here: the caller raises."""
    for _ in range(MAX_CONFLICT_ROUNDS):
        mark = state.get_watermark(template, direction, scope)
        mark.last_status = "failed"
        mark.last_error = reason
        try:
            state.save_watermark(mark)
            return
        except ConcurrencyConflict:
            continue  # another run recorded the same failure meanwhile: read again


def clear_unscoped_failure(state: StateStore, template: str, direction: str, scope: str) -> None:
    """The scopes are known again: drop the failure ``record_unscoped_failure`` left under ``scope`` (only a
    failed row that no run holds; the caller makes sure ``scope`` is not a scope the template really runs)."""
    mark = state.get_watermark(template, direction, scope)
    if mark.etag is None or mark.last_status != "failed" or mark.lease_owner:
        return
    with contextlib.suppress(ConcurrencyConflict, ResourceNotFoundError):
        state.delete_watermark(mark)
