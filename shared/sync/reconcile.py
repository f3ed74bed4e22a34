"""Reconcile: compare Commerce and Dataverse record by record, and optionally repair what drifted.

Change detection trusts the sync state: a record whose mapped content hash equals the one recorded is not
written again. Drift that happens behind the app's back (a Dataverse table emptied, a column changed by a
script or a plug-in that change tracking does not bring back as an edit) is invisible to it. Reconcile does
not look at the hashes: it reads both stores (``compare.Sides``, a key range at a time, flat memory) and
reports, per record:

- ``missing``: in Commerce, not in Dataverse;
- ``extra``: in Dataverse, not in Commerce (confirmed by a read by key in Commerce first);
- ``different``: in both, with the columns that differ (both values);
- ``unmappable``: a Commerce row the template cannot map (a sync parks it).

``repair`` fixes them through the engine, so the sync state is recorded as a sync would: missing and
different records are written whole in chunks through the normal writer (``OutboundSync.chunk_pool``: bulk,
fallbacks, parking on failure, the two-way conflict check for a row edited in Dataverse since the last
sync); unmappable rows are parked; an extra row is deleted only under ``SYNC_DELETE_POLICY=delete``, and
only when the app synced that key before or runs one way (two-way, a Dataverse row with no sync state may be
an agent's new record that the inbound run has yet to take to Commerce: it is reported and kept).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from shared.http.errors import ApiError
from shared.mapping.plan import DataverseRecord, MappingError
from shared.observability import log
from shared.state.store import encode_key
from shared.sync.chunks import ChunkPool, Pending
from shared.sync.compare import ColumnDiff, Finding, KeyRange, MatchKey, Sides, Sink, match_key
from shared.sync.engine import OutboundSync
from shared.sync.runs import Outcome, Progress, RunSummary, scope_of

logger = logging.getLogger("loyaltysync.reconcile")
SOURCE = "reconcile"

MISSING, EXTRA, DIFFERENT, UNMAPPABLE = "missing", "extra", "different", "unmappable"
WRITE = "write"  # --repair writes the record whole (the summary counts what landed, was parked or met a conflict)
Fix = tuple[DataverseRecord, dict[str, Any], str]  # a record to write whole, its Commerce row, and why


@dataclass
class ReconcileSummary:
    template: str
    scope: str
    repair: bool = False
    commerce: int = 0  # Commerce rows read
    dataverse: int = 0  # Dataverse rows read
    equal: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    unmappable: int = 0
    written: int = 0  # repaired: missing or different records written
    deleted: int = 0  # repaired: extra rows deleted
    kept: int = 0  # extra rows not deleted (the delete policy, or no sync state in a two-way sync)
    parked: int = 0  # repairs that failed (and unmappable rows), parked as a sync parks them
    conflicts: int = 0  # repairs that met an edit made in Dataverse since the last sync (SYNC_CONFLICT_POLICY)
    duration_s: float = 0.0

    @property
    def found(self) -> int:
        return self.missing + self.extra + self.different + self.unmappable

    @property
    def left(self) -> int:
        """Drift still there: everything found without ``repair``; what could not be repaired with it."""
        return self.parked + self.kept if self.repair else self.found

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "found": self.found, "left": self.left}


class Reconciler:
    """Reconciles one template's scopes."""

    def __init__(self, engine: OutboundSync, *, page_size: int | None = None) -> None:
        self.engine = engine
        self.plan = engine.plan
        self.sides = Sides(engine, page_size)

    def run(self, company: str | None, sink: Sink, *, repair: bool = False,
            progress: Progress | None = None) -> ReconcileSummary:
        engine = self.engine
        scope = scope_of(company)
        summary = ReconcileSummary(engine.name, scope, repair)
        live = RunSummary(template=engine.name, scope=scope, run_id="", mode=SOURCE)  # what the progress bar shows
        outcomes = RunSummary(template=engine.name, scope=scope, run_id="", mode=SOURCE)  # the repair writes
        started = time.monotonic()
        total: list[int] = []
        log(logger, logging.INFO, "reconcile started", template=engine.name, scope=scope, repair=repair)
        pool = engine.chunk_pool(engine.partition(company), engine.state.parked.keys(engine.name)) if repair else None
        scope_run = _ScopeRun(self, company, sink, summary, live, outcomes, pool, total, progress)
        try:
            for key_range in self.sides.ranges(company, on_total=total.append):
                scope_run.compare(key_range)
                if pool is not None:
                    pool.wait()
            if pool is not None:
                pool.finish()
        except BaseException:
            if pool is not None:
                pool.abandon()
            raise
        summary.written += outcomes.written
        summary.parked += outcomes.failed
        summary.conflicts += outcomes.conflicts
        summary.duration_s = round(time.monotonic() - started, 3)
        log(logger, logging.WARNING if summary.found else logging.INFO, "reconcile finished", **summary.as_dict())
        return summary


class _ScopeRun:
    """One scope's reconcile: compares range after range, emits findings, submits repairs."""

    def __init__(self, reconciler: Reconciler, company: str | None, sink: Sink, summary: ReconcileSummary,
                 live: RunSummary, outcomes: RunSummary, pool: ChunkPool | None, total: list[int],
                 progress: Progress | None) -> None:
        self.engine = reconciler.engine
        self.plan = reconciler.plan
        self.sides = reconciler.sides
        self.company = company
        self.partition = self.engine.partition(company)
        self.sink = sink
        self.summary = summary
        self.live = live
        self.outcomes = outcomes
        self.pool = pool
        self.total = total
        self.progress = progress

    @property
    def repair(self) -> bool:
        return self.pool is not None

    def _finding(self, kind: str, key: tuple[str, ...], **fields: Any) -> Finding:
        return Finding(self.summary.template, self.summary.scope, kind, key, **fields)

    def _tick(self) -> None:
        self.live.seen += 1
        if self.progress is not None:
            self.progress(self.live, self.total[0] if self.total else None)

    def compare(self, key_range: KeyRange) -> None:
        """Compare one key range of both stores; findings in Commerce's key order, then the range's extras."""
        summary = self.summary
        records: dict[MatchKey, tuple[DataverseRecord, dict[str, Any]]] = {}
        for row in self.engine.derive(key_range.rows, contiguous=True):
            summary.commerce += 1
            self._tick()
            try:
                record = self.plan.to_dataverse(row)
            except MappingError as exc:
                self._unmappable(row, exc)
                continue
            records[match_key(record.key)] = (record, row)
        matched: dict[MatchKey, list[ColumnDiff]] = {}  # the Dataverse rows found: their differing columns
        extras: list[Finding] = []
        fixes: list[Fix] = []
        for dv_row in self.sides.dataverse_rows(self.company, key_range.after, key_range.through):
            summary.dataverse += 1
            key = self.sides.key_of(dv_row, self.company)
            wanted = match_key(key) if key is not None else None
            if wanted is None or wanted not in records or wanted in matched:
                extra = self._extra(dv_row, key, fixes)
                if extra is not None:
                    extras.append(extra)
                continue
            matched[wanted] = self.sides.differences(records[wanted][0], self.sides.columns_of(dv_row))
        findings: list[Finding] = []
        for wanted, (record, row) in records.items():
            diffs = matched.get(wanted)
            if diffs is not None and not diffs:
                summary.equal += 1
                continue
            kind = MISSING if diffs is None else DIFFERENT
            if kind == MISSING:
                summary.missing += 1
            else:
                summary.different += 1
            fixes.append((record, row, kind))
            findings.append(self._finding(kind, record.key, columns=diffs or [], repair=WRITE if self.repair else ""))
        if self.repair and fixes:
            self._write(fixes)
        for finding in [*findings, *extras]:
            self.sink(finding)

    # -- the kinds -------------------------------------------------------------------------------------

    def _unmappable(self, row: dict[str, Any], exc: MappingError) -> None:
        self.summary.unmappable += 1
        try:
            key = self.plan.key_of(row)
        except MappingError:
            key = ()
        if self.repair:
            self.outcomes.count(self.engine._park_unmappable(row, exc, SOURCE))  # parked as a sync parks it
        self.sink(self._finding(UNMAPPABLE, key, detail=str(exc), repair="parked" if self.repair else ""))

    def _extra(self, dv_row: dict[str, Any], key: tuple[str, ...] | None, fixes: list[Fix]) -> Finding | None:
        """A Dataverse row that no Commerce row of the range matched. Confirmed by a read by key in Commerce
        (created since the range was read, or ordered differently by the two services: then compared)."""
        summary = self.summary
        if key is None:
            summary.extra += 1
            summary.kept += self.repair
            row_id = dv_row.get(self.sides.primary_id)
            return self._finding(EXTRA, (), detail=f"Dataverse row {row_id} has an empty key column",
                                 repair="kept: no key to check against Commerce" if self.repair else "")
        current = self.sides.commerce_row(key)
        if current is not None:
            try:
                record = self.plan.to_dataverse(current)
            except MappingError as exc:
                self._unmappable(current, exc)
                return None
            summary.commerce += 1
            diffs = self.sides.differences(record, self.sides.columns_of(dv_row))
            if not diffs:
                summary.equal += 1
                return None
            summary.different += 1
            if self.repair:
                fixes.append((record, current, DIFFERENT))
            return self._finding(DIFFERENT, record.key, columns=diffs, repair=WRITE if self.repair else "")
        summary.extra += 1
        if not self.repair:
            return self._finding(EXTRA, key)
        return self._finding(EXTRA, key, repair=self._delete(key))

    def _delete(self, key: tuple[str, ...]) -> str:
        """Repair an extra row: delete it where the delete policy and the sync history allow it."""
        engine, summary = self.engine, self.summary
        row_key = encode_key(key)
        if engine.delete_policy != "delete":
            summary.kept += 1
            return "kept: SYNC_DELETE_POLICY=ignore"
        previous = engine.state.synced.get(self.partition, row_key)
        if previous is None and engine.two_way:
            summary.kept += 1
            log(logger, logging.WARNING, "reconcile: extra Dataverse row kept (no sync state; the inbound run may "
                "not have taken it to Commerce yet)", template=engine.name, key=row_key)
            return "kept: no sync state (two-way: it may be new in Dataverse)"
        if previous is not None:
            outcome = engine.sync_key(self.plan.key_as_dict(key), source=SOURCE)  # confirms the 404, deletes
        else:
            try:
                engine.writer.delete(key)
                engine.parking.unpark(row_key)
                outcome = Outcome.DELETED
            except ApiError as exc:
                outcome = engine.parking.park(row_key, exc, SOURCE, None)
        if outcome == Outcome.DELETED:
            summary.deleted += 1
            log(logger, logging.INFO, "reconcile: extra Dataverse row deleted", template=engine.name, key=row_key)
        elif outcome == Outcome.PARKED:
            summary.parked += 1
        else:
            summary.kept += 1
        return str(outcome)

    def _write(self, fixes: list[Fix]) -> None:
        """Write missing and different records whole through the engine's chunks, so their state is recorded."""
        assert self.pool is not None
        engine = self.engine
        keys = [encode_key(record.key) for record, _, _ in fixes]
        known = engine.state.synced.between(self.partition, min(keys), max(keys))
        pending: list[Pending] = []
        for (record, row, kind), row_key in zip(fixes, keys, strict=True):
            previous = known.get(row_key)
            if previous is not None:
                # The state says these columns are in Dataverse; they are not: every column goes out. A missing
                # row holds no edit to protect, so it skips the two-way conflict check (a read per record).
                previous = replace(previous, columns="", shared="" if kind == MISSING else previous.shared)
            log(logger, logging.INFO, "reconcile: writing record", template=engine.name, key=row_key, kind=kind)
            pending.append((record, row, previous))
            if len(pending) >= engine.bulk_size:
                self.pool.submit(pending, self.outcomes)
                pending = []
        if pending:
            self.pool.submit(pending, self.outcomes)
