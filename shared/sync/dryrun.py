"""A dry run of a template's full outbound scan: what it would write, writing nothing.

It reads what a scan reads (Commerce in key ranges, the sync states of each range, then the states no range
saw, each confirmed by a read by key) and decides as the scan decides, but takes no lease, writes no
checkpoint, no state, no parked record and nothing to Dataverse or Commerce. Per record:

- ``create``: a key with no sync state (written whole);
- ``update``: a key whose mapped content changed since the last write, with the columns a scan would send
  (from the per-column digests; every column when they cannot tell), each with Commerce's value and the
  value Dataverse holds now (read with the range's ``$filter``, only for ranges that have updates);
- ``delete``: a synced key Commerce no longer has (``SYNC_DELETE_POLICY=ignore``: only its state would go);
- ``park``: a row the template cannot map.

Not predicted: the two-way conflict check (an update whose Dataverse row was edited since the last sync is
a conflict, settled by ``SYNC_CONFLICT_POLICY``), write failures, and whatever changes between the dry run
and the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from shared.mapping.plan import COMPANY_COLUMN, DataverseRecord, LookupValue, MappingError, changed_columns
from shared.observability import log
from shared.state.store import SyncedState, decode_key, encode_key
from shared.sync.compare import ColumnDiff, Finding, KeyRange, MatchKey, Sides, Sink, match_key
from shared.sync.digests import KeyDigests
from shared.sync.engine import OutboundSync
from shared.sync.runs import Progress, RunSummary, scope_of

logger = logging.getLogger("loyaltysync.dryrun")
CREATE, UPDATE, DELETE, PARK = "create", "update", "delete", "park"


@dataclass
class DryRunSummary:
    template: str
    scope: str
    seen: int = 0
    unchanged: int = 0
    create: int = 0
    update: int = 0
    delete: int = 0
    park: int = 0
    duration_s: float = 0.0

    @property
    def writes(self) -> int:
        return self.create + self.update + self.delete

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(value: Any) -> Any:
    return value.match_value if isinstance(value, LookupValue) else value


class DryRun:
    """What one template's full scan would write, per scope."""

    def __init__(self, engine: OutboundSync, *, page_size: int | None = None) -> None:
        self.engine = engine
        self.plan = engine.plan
        self.sides = Sides(engine, page_size)

    def run(self, company: str | None, sink: Sink, *, progress: Progress | None = None) -> DryRunSummary:
        engine = self.engine
        scope = scope_of(company)
        summary = DryRunSummary(engine.name, scope)
        live = RunSummary(template=engine.name, scope=scope, run_id="", mode="dry_run")
        started = time.monotonic()
        total: list[int] = []
        seen = KeyDigests()
        for key_range in self.sides.ranges(company, on_total=total.append):
            for finding in self._range(key_range, company, summary, seen, live, total, progress):
                sink(finding)
        for finding in self._deletes(company, summary, seen):
            sink(finding)
        summary.duration_s = round(time.monotonic() - started, 3)
        log(logger, logging.INFO, "dry run finished (nothing written)", **summary.as_dict())
        return summary

    def _finding(self, summary: DryRunSummary, kind: str, key: tuple[str, ...], **fields: Any) -> Finding:
        setattr(summary, kind, getattr(summary, kind) + 1)
        return Finding(summary.template, summary.scope, kind, key, **fields)

    def _range(self, key_range: KeyRange, company: str | None, summary: DryRunSummary, seen: KeyDigests,
               live: RunSummary, total: list[int], progress: Progress | None) -> list[Finding]:
        """One key range as ``OutboundSync.compare_rows`` sees it; findings in Commerce's key order."""
        mapped: list[tuple[str, DataverseRecord]] = []
        findings: list[Finding] = []
        for row in self.engine.derive(key_range.rows, contiguous=True):
            summary.seen += 1
            live.seen += 1
            if progress is not None:
                progress(live, total[0] if total else None)
            try:
                record = self.plan.to_dataverse(row)
            except MappingError as exc:
                try:
                    key = self.plan.key_of(row)
                    seen.add(encode_key(key))
                except MappingError:
                    key = ()
                findings.append(self._finding(summary, PARK, key, detail=str(exc)))
                continue
            mapped.append((encode_key(record.key), record))
            seen.add(encode_key(record.key))
        keys = [row_key for row_key, _ in mapped]
        known = self.engine.state.synced.between(self.engine.partition(company), min(keys), max(keys)) if keys else {}
        updates: dict[MatchKey, Finding] = {}
        for row_key, record in mapped:
            previous = known.get(row_key)
            if previous is not None and previous.content_hash == record.content_hash:
                summary.unchanged += 1
                continue
            if previous is None or previous.deleting:
                findings.append(self._finding(summary, CREATE, record.key, detail="new key: the whole record"))
                continue
            finding = self._update(summary, record, previous)
            updates[match_key(record.key)] = finding
            findings.append(finding)
        if updates:
            self._current_values(updates, key_range, company)
        return findings

    def _update(self, summary: DryRunSummary, record: DataverseRecord, previous: SyncedState) -> Finding:
        names = changed_columns(record.columns, record.company, previous.columns)
        columns = [ColumnDiff(c, _value(v), None) for c, v in record.columns.items() if names is None or c in names]
        if names is not None and COMPANY_COLUMN in names:
            columns.append(ColumnDiff(COMPANY_COLUMN, record.company, None))
        detail = "" if names is not None else "the column digests cannot tell: every column"
        return self._finding(summary, UPDATE, record.key, columns=columns, detail=detail)

    def _current_values(self, updates: dict[MatchKey, Finding], key_range: KeyRange, company: str | None) -> None:
        """Fill in what Dataverse holds now for the columns the updates would send."""
        found: set[MatchKey] = set()
        for dv_row in self.sides.dataverse_rows(company, key_range.after, key_range.through):
            key = self.sides.key_of(dv_row, company)
            finding = updates.get(match_key(key)) if key is not None else None
            if finding is None:
                continue
            found.add(match_key(finding.key))
            current = self.sides.columns_of(dv_row)
            finding.columns = [ColumnDiff(c.column, c.commerce, company if c.column == COMPANY_COLUMN else current.get(c.column))
                               for c in finding.columns]
        for wanted, finding in updates.items():
            if wanted not in found:
                finding.detail = "no row in Dataverse: the whole record is written"

    def _deletes(self, company: str | None, summary: DryRunSummary, seen: KeyDigests) -> list[Finding]:
        """Synced keys no range saw, confirmed by a read by key, as the delete search does."""
        engine = self.engine
        seen.freeze()
        findings: list[Finding] = []
        partition = engine.partition(company)
        for previous in engine.state.synced.iter(partition):
            if previous.row_key in seen:
                continue
            key = decode_key(previous.row_key)
            current = self.sides.commerce_row(key)
            if current is None:
                detail = ("the Dataverse row is deleted" if engine.delete_policy == "delete"
                          else "SYNC_DELETE_POLICY=ignore: the Dataverse row is kept, only its sync state goes")
                findings.append(self._finding(summary, DELETE, key, detail=detail))
                continue
            summary.seen += 1
            try:  # Commerce has it after all (another key casing, a race): the search syncs it
                record = self.plan.to_dataverse(current)
            except MappingError as exc:
                findings.append(self._finding(summary, PARK, key, detail=str(exc)))
                continue
            if record.content_hash == previous.content_hash:
                summary.unchanged += 1
            else:
                findings.append(self._update(summary, record, previous))
        return findings
