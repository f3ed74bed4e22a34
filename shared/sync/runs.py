"""A sync run's bookkeeping, the same for both directions: the lease on a scope, the summary, and the
watermark that advances only after every record below it was written (or parked), never backwards."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.mapping.model import Direction
from shared.observability import log
from shared.state.store import ConcurrencyConflict, StateStore, Watermark
from shared.telemetry import metrics, tracing

logger = logging.getLogger("loyaltysync.sync")
MAX_CONFLICT_ROUNDS = 3
ALL = "all"  # the scope of a template that is not company-specific
DIRECTION_OUT = Direction.TO_DATAVERSE.value
DIRECTION_IN = Direction.TO_COMMERCE.value


def scope_company(scope: str) -> str | None:
    """The legal entity a scope names (None for ``all``)."""
    return None if scope == ALL else scope


def scope_of(company: str | None) -> str:
    """The scope of a run over one legal entity (``all`` for a template that is not company-specific)."""
    return company or ALL


class RunStatus(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_PARKED = "completed_with_parked"
    FAILED = "failed"
    SKIPPED = "skipped"
    DELETES_HELD = "deletes_held"  # every record synced, but more deletes than the guard allows: none made
    FANNED_OUT = "fanned_out"  # planned and queued; the page workers finish it


class Outcome(StrEnum):
    """What happened to one record (counted into a ``RunSummary``)."""

    WRITTEN = "written"
    CREATED = "created"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    PARKED = "parked"
    CONFLICT = "conflict"
    IGNORED = "ignored"
    NOT_FOUND = "not_found"


_COUNTERS = ("seen", "written", "unchanged", "deleted", "failed", "conflicts")
_COUNTED_AS = {Outcome.WRITTEN: "written", Outcome.CREATED: "written", Outcome.UNCHANGED: "unchanged",
               Outcome.DELETED: "deleted", Outcome.PARKED: "failed", Outcome.CONFLICT: "conflicts"}


class LeaseLost(RuntimeError):
    """The run's lease expired and another run took it: stop without touching the watermark."""


class LeaseKeeper:
    """Keeps one run's lease on a scope alive, the one way every party of a run does it (the run itself, a
    fanned-out key range, a delete check): ``renew`` extends it (``LeaseLost`` when another run holds it
    now); ``heartbeat`` renews at most every third of the lease, since renewing reads the watermark."""

    def __init__(self, state: StateStore, template: str, direction: str, scope: str, owner: str, lease_s: int) -> None:
        self.state = state
        self.key = (template, direction, scope)
        self.owner = owner
        self.lease_s = lease_s
        self.renewed = state.clock.monotonic()

    def renew(self) -> None:
        if not self.state.watermarks.renew_lease(*self.key, self.owner, self.lease_s):
            raise LeaseLost(f"{self.key[0]}/{self.key[2]}: another run took the lease")
        self.renewed = self.state.clock.monotonic()

    def heartbeat(self) -> None:
        if self.state.clock.monotonic() - self.renewed >= self.lease_s / 3:
            self.renew()


@dataclass
class RunSummary:
    template: str
    scope: str
    run_id: str
    direction: str = DIRECTION_OUT
    mode: str = "incremental"
    status: RunStatus = RunStatus.COMPLETED
    seen: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    conflicts: int = 0
    duration_s: float = 0.0
    detail: str = ""

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _COUNTERS}

    def set_counts(self, counts: dict[str, int]) -> None:
        for name in _COUNTERS:
            setattr(self, name, int(counts.get(name, 0)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, counts: dict[str, int]) -> None:
        """Add another summary's counts (a checkpointed key range's) to these."""
        for name, value in counts.items():
            if name in _COUNTERS:
                setattr(self, name, getattr(self, name) + int(value))

    def count(self, outcome: str) -> None:
        """One record's outcome; also ``loyaltysync.records`` (parked ones are counted where they are parked,
        with their error class: ``shared.sync.parking``)."""
        name = _COUNTED_AS.get(outcome)  # type: ignore[call-overload]  # a StrEnum key matches its string
        if name:
            setattr(self, name, getattr(self, name) + 1)
        if outcome != Outcome.PARKED:
            metrics.record_outcome(self.template, self.direction, self.scope, outcome)

    def read(self, count: int = 1) -> None:
        """``count`` records read from the source (``seen``); also ``loyaltysync.records`` with outcome read."""
        self.seen += count
        metrics.record_outcome(self.template, self.direction, self.scope, metrics.READ, count=count)


# Called as a run moves, once per record: the counts so far and the expected total (None when unknown).
# The CLI's progress bar; scans, the inbound direction, reconcile and dry runs report through it.
Progress = Callable[[RunSummary, int | None], None]


@dataclass
class Run:
    """An acquired lease plus what the run learns; ``finish`` writes it back."""

    state: StateStore
    lease: Watermark
    summary: RunSummary
    lease_s: int = 900
    started_at: str = ""
    started: float = 0.0
    keeper: LeaseKeeper = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.state.clock.now().isoformat()
        self.started = self.started or self.state.clock.monotonic()
        self.keeper = LeaseKeeper(self.state, self.summary.template, self.summary.direction, self.summary.scope,
                                  self.summary.run_id, self.lease_s)

    @classmethod
    def begin(cls, state: StateStore, template: str, direction: str, scope: str, lease_s: int, *,
              resume: Callable[[Watermark], str | None] | None = None) -> Run | RunSummary:
        """Take the scope's lease; a ``RunSummary`` with status skipped when another run holds it.
        ``resume`` may name an unfinished run (from the watermark) whose id this run takes over."""
        mark = state.watermarks.get(template, direction, scope)
        resumed = resume(mark) if resume is not None else None
        run_id = resumed or str(uuid.uuid4())
        summary = RunSummary(template=template, scope=scope, run_id=run_id, direction=direction)
        lease = state.watermarks.acquire_lease(template, direction, scope, run_id, lease_s, mark=mark)
        if lease is None:
            holder = state.watermarks.get(template, direction, scope)  # who holds it now (it may have changed)
            summary.status = RunStatus.SKIPPED
            summary.detail = (f"run {holder.lease_owner} holds the lease on this scope until {holder.lease_until}"
                              if holder.lease_owner else "another run took the lease on this scope meanwhile")
            log(logger, logging.INFO, "run skipped", template=template, direction=direction, scope=scope,
                reason=summary.detail, lease_owner=holder.lease_owner, lease_until=holder.lease_until)
            metrics.record_run(template, direction, scope, RunStatus.SKIPPED)
            tracing.annotate_run(status=RunStatus.SKIPPED.value, detail=summary.detail)
            return summary
        summary.mode = "incremental" if lease.initial_completed_at else "initial"
        tracing.annotate_run(run_id=run_id, mode=summary.mode, resumed=bool(resumed))
        log(logger, logging.INFO, "run resumed" if resumed else "run started", template=template, direction=direction,
            scope=scope, run_id=run_id, mode=summary.mode)
        return cls(state, lease, summary, lease_s=lease_s)

    def elapsed(self) -> float:
        return self.state.clock.monotonic() - self.started

    def heartbeat(self) -> None:
        """Extend the lease while the run is alive (every third of its length); raise if it was lost."""
        self.keeper.heartbeat()

    def fail(self, exc: BaseException) -> RunSummary:
        """Record the run as failed with the reason; the watermark does not move."""
        self.summary.status = RunStatus.FAILED
        self.summary.detail = f"{type(exc).__name__}: {exc}"
        mark_recorded(exc)
        return self.finish(advance=False)

    def finish(self, *, advance: bool, status: RunStatus | None = None,
               update: Callable[[Watermark], None] | None = None, **fields: Any) -> RunSummary:
        """Release the lease; on success advance the watermark (and set ``fields`` such as a delta link, then let
        ``update`` change it); ``status``: what ``status`` shows instead of completed (e.g. deletes held)."""
        summary = self.summary
        summary.duration_s = round(self.elapsed(), 3)
        final = (status or (RunStatus.COMPLETED_WITH_PARKED if summary.failed else RunStatus.COMPLETED)) if advance \
            else RunStatus.FAILED
        mark = self.lease
        for _ in range(MAX_CONFLICT_ROUNDS):
            if mark.lease_owner != summary.run_id:
                break  # the lease expired and a newer run took it: that run owns the watermark now
            mark.lease_owner = ""
            mark.lease_until = ""
            if advance and mark.last_run_started and mark.last_run_started > self.started_at:
                pass  # a newer run moved the watermark on: never move it backwards (only the lease goes)
            elif advance:
                mark.run_seq += 1
                mark.last_run_id = summary.run_id
                mark.last_run_started = self.started_at
                mark.last_run_finished = self.state.clock.now().isoformat()
                mark.last_status = final
                mark.last_counts = json.dumps(summary.counts())
                mark.last_error = ""
                mark.last_failed_at = ""
                mark.initial_completed_at = mark.initial_completed_at or mark.last_run_finished
                for name, value in fields.items():
                    setattr(mark, name, value)
                if update is not None:
                    update(mark)
            else:
                mark.last_status = RunStatus.FAILED
                mark.last_error = summary.detail
                mark.last_failed_at = self.state.clock.now().isoformat()
            try:
                self.state.watermarks.save(mark)
                break
            except ConcurrencyConflict:
                mark = self.state.watermarks.get(mark.template, mark.direction, mark.scope)
        level = logging.INFO if advance and status != RunStatus.DELETES_HELD else logging.WARNING if advance else logging.ERROR
        log(logger, level, "run failed; watermark not advanced" if not advance else
            "run finished; deletes held" if status == RunStatus.DELETES_HELD else "run finished",
            template=summary.template, direction=summary.direction, scope=summary.scope, run_id=summary.run_id,
            mode=summary.mode, duration_s=summary.duration_s, detail=summary.detail, **summary.counts())
        metrics.record_run(summary.template, summary.direction, summary.scope, final)
        tracing.annotate_run(run_id=summary.run_id, status=final.value, **summary.counts())
        if final == RunStatus.FAILED:
            tracing.fail_run(summary.detail)
        return summary


_RECORDED = "_loyaltysync_failure_recorded"


def mark_recorded(exc: BaseException) -> None:
    """``exc`` is on a watermark already (a run's failure): the trigger that sees it escape records nothing more."""
    with contextlib.suppress(AttributeError, TypeError):  # a built-in exception without __dict__ stays unmarked
        setattr(exc, _RECORDED, True)


def is_recorded(exc: BaseException) -> bool:
    return bool(getattr(exc, _RECORDED, False))


def record_unscoped_failure(state: StateStore, template: str, direction: str, scope: str, reason: str,
                            exc: BaseException | None = None) -> None:
    """A run that failed before it knew its scopes (the legal entities could not be listed), or a trigger's
    failure outside any run's bookkeeping: its row under ``scope`` says failed, with ``reason``, so ``status``
    shows it (a lease on the row is left alone). Nothing is logged here: the caller raises ``exc``, which is
    marked as recorded."""
    if exc is not None:
        mark_recorded(exc)
    metrics.record_run(template, direction, scope, RunStatus.FAILED)
    for _ in range(MAX_CONFLICT_ROUNDS):
        mark = state.watermarks.get(template, direction, scope)
        mark.last_status = RunStatus.FAILED
        mark.last_error = reason
        mark.last_failed_at = state.clock.now().isoformat()
        try:
            state.watermarks.save(mark)
            return
        except ConcurrencyConflict:
            continue  # another run recorded the same failure meanwhile: read again


def abort_run(state: StateStore, template: str, direction: str, scope: str, run_id: str, reason: str) -> None:
    """A fanned-out run stopped by one of its workers (its first records all failed the same way): record it as
    failed with ``reason`` and release its lease, so the workers of its other ranges find it gone and stop. The
    open run stays in the watermark: the next run resumes it. Nothing is changed when another run holds the scope."""
    for _ in range(MAX_CONFLICT_ROUNDS):
        mark = state.watermarks.get(template, direction, scope)
        if mark.lease_owner != run_id:
            return
        mark.lease_owner = ""
        mark.lease_until = ""
        mark.last_status = RunStatus.FAILED
        mark.last_error = reason
        mark.last_failed_at = state.clock.now().isoformat()
        try:
            state.watermarks.save(mark)
        except ConcurrencyConflict:
            continue  # a worker renewed the lease meanwhile: read again
        log(logger, logging.ERROR, "run failed; watermark not advanced", template=template, direction=direction,
            scope=scope, run_id=run_id, detail=reason)
        metrics.record_run(template, direction, scope, RunStatus.FAILED)
        return


def clear_unscoped_failure(state: StateStore, template: str, direction: str, scope: str) -> None:
    """The scopes are known again: drop the failure ``record_unscoped_failure`` left under ``scope`` (only a
    failed row that no run holds; the caller makes sure ``scope`` is not a scope the template really runs)."""
    mark = state.watermarks.get(template, direction, scope)
    if mark.etag is None or mark.last_status != RunStatus.FAILED or mark.lease_owner:
        return
    with contextlib.suppress(ConcurrencyConflict, ResourceNotFoundError):
        state.watermarks.delete(mark)
