"""Commerce -> Dataverse: the engine behind both the timer and the callback triggers.

Change detection. The loyalty entities expose no modified time, so every timer run reads the whole
entity set (per legal entity for company-specific templates) and compares each record's mapped
content hash with the hash last written, kept per key in Table Storage: a new key is a create, a
different hash an update, a known key that no longer comes back a delete (confirmed by a read by
key before anything is deleted). Only differences are written; a run over unchanged data writes
nothing.

Concurrency. The timer and callbacks may touch the same key at once. Each write records its hash
with the ETag of the state it read; whoever loses that race re-reads the record from Commerce and
writes again, so the last write to Dataverse always carries Commerce's current content.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from shared.commerce.client import CommerceClient
from shared.dataverse.client import DataverseClient
from shared.http.errors import ApiError, AuthError
from shared.mapping.model import Direction
from shared.mapping.plan import DataverseRecord, MappingError, Plan
from shared.observability import correlation_id, log
from shared.state.store import ConcurrencyConflict, StateStore, SyncedState, Watermark, decode_key, encode_key, now
from shared.sync.writer import DataverseWriter

logger = logging.getLogger("loyaltysync.sync")

DIRECTION = Direction.TO_DATAVERSE.value
ALL = "all"
MAX_CONFLICT_ROUNDS = 3


@dataclass
class RunSummary:
    template: str
    scope: str
    run_id: str
    mode: str = "incremental"
    status: str = "completed"
    seen: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    duration_s: float = 0.0
    detail: str = ""

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("seen", "written", "unchanged", "deleted", "failed")}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutboundSync:
    """Moves one template's records from Commerce to Dataverse."""

    def __init__(self, plan: Plan, commerce: CommerceClient, dataverse: DataverseClient, state: StateStore,
                 *, delete_policy: str = "delete", lease_s: int = 900) -> None:
        self.plan = plan
        self.name = plan.name
        self.entity_set = plan.template.commerce.entity_set
        self.commerce = commerce
        self.state = state
        self.writer = DataverseWriter(dataverse, plan)
        self.delete_policy = delete_policy
        self.lease_s = lease_s

    # -- scopes ------------------------------------------------------------------------------------

    def partition(self, company: str | None) -> str:
        return f"{self.name}.{company}" if company else self.name

    def scopes(self, legal_entities: Iterable[str] = ()) -> list[str | None]:
        if not self.plan.company_specific:
            return [None]
        companies = [c.lower() for c in legal_entities] or self.commerce.legal_entities()
        return list(companies)

    # -- timer path --------------------------------------------------------------------------------

    def run(self, legal_entities: Iterable[str] = ()) -> list[RunSummary]:
        return [self.run_scope(company) for company in self.scopes(legal_entities)]

    def run_scope(self, company: str | None) -> RunSummary:
        scope = company or ALL
        run_id = str(uuid.uuid4())
        summary = RunSummary(template=self.name, scope=scope, run_id=run_id)
        started = time.monotonic()
        lease = self.state.acquire_lease(self.name, DIRECTION, scope, run_id, self.lease_s)
        if lease is None:
            summary.status = "skipped"
            summary.detail = "another run holds the lease for this scope"
            log(logger, logging.INFO, "run skipped", template=self.name, scope=scope, reason=summary.detail)
            return summary
        started_at = now().isoformat()
        summary.mode = "incremental" if lease.initial_completed_at else "initial"
        log(logger, logging.INFO, "run started", template=self.name, scope=scope, run_id=run_id, mode=summary.mode)
        try:
            self._compare_and_write(company, summary)
        except Exception as exc:
            summary.status = "failed"
            summary.detail = f"{type(exc).__name__}: {exc}"
            log(logger, logging.ERROR, "run failed; watermark not advanced", template=self.name, scope=scope,
                run_id=run_id, error=summary.detail)
            self._release(lease, summary, started_at, advance=False)
            raise
        finally:
            summary.duration_s = round(time.monotonic() - started, 3)
        self._release(lease, summary, started_at, advance=True)
        log(logger, logging.INFO, "run finished", template=self.name, scope=scope, run_id=run_id,
            mode=summary.mode, duration_s=summary.duration_s, **summary.counts())
        return summary

    def _compare_and_write(self, company: str | None, summary: RunSummary) -> None:
        partition = self.partition(company)
        known = self.state.load_synced(partition)
        parked = self.state.parked_keys(self.name)
        for row in self.commerce.iter_rows(self.entity_set, select=list(self.plan.select_properties), company=company):
            summary.seen += 1
            self._count(summary, self._sync_row(row, partition, known, parked, source="timer"))
        # The scan finished, so keys it did not return are candidates for deletion.
        for row_key, previous in list(known.items()):
            key = decode_key(row_key)
            current = self.commerce.get(self.entity_set, self.plan.key_as_dict(key), select=list(self.plan.select_properties))
            if current is not None:  # it exists after all (changed key casing, a race): sync it
                self._count(summary, self._sync_row(current, partition, {row_key: previous}, parked, source="timer"))
            else:
                self._count(summary, self._delete(key, previous, partition, source="timer"))

    @staticmethod
    def _count(summary: RunSummary, outcome: str) -> None:
        field = {"written": "written", "unchanged": "unchanged", "deleted": "deleted", "parked": "failed"}.get(outcome)
        if field:
            setattr(summary, field, getattr(summary, field) + 1)

    def _release(self, lease: Watermark, summary: RunSummary, started_at: str, *, advance: bool) -> None:
        """End the run: advance the watermark (only after every record below it is written or parked)."""
        for _ in range(MAX_CONFLICT_ROUNDS):
            mark = lease
            if mark.lease_owner != summary.run_id:
                return  # our lease was taken over after it expired: the newer run owns the watermark
            mark.lease_owner = ""
            mark.lease_until = ""
            if advance:
                if mark.last_run_started and mark.last_run_started > started_at:
                    return  # never move a watermark backwards
                mark.run_seq += 1
                mark.last_run_id = summary.run_id
                mark.last_run_started = started_at
                mark.last_run_finished = now().isoformat()
                mark.last_status = "completed_with_parked" if summary.failed else "completed"
                mark.last_counts = json.dumps(summary.counts())
                mark.initial_completed_at = mark.initial_completed_at or mark.last_run_finished
            else:
                mark.last_status = "failed"
            try:
                self.state.save_watermark(mark)
                return
            except ConcurrencyConflict:
                lease = self.state.get_watermark(self.name, DIRECTION, summary.scope)

    # -- callback path -----------------------------------------------------------------------------

    def sync_key(self, fo_key: Mapping[str, Any], *, source: str = "callback", control_number: int = 0) -> str:
        """Re-read one record from Commerce and bring Dataverse in line; returns the outcome."""
        key = self.plan.key_of(fo_key)
        partition = self.partition(self.plan.company_of(key))
        row_key = encode_key(key)
        previous = self.state.get_synced(partition, row_key)
        current = self.commerce.get(self.entity_set, self.plan.key_as_dict(key), select=list(self.plan.select_properties))
        if current is None:
            if previous is None:
                return "unchanged"
            return self._delete(key, previous, partition, source=source)
        known = {row_key: previous} if previous else {}
        return self._sync_row(current, partition, known, self.state.parked_keys(self.name), source=source,
                              control_number=control_number)

    # -- one record --------------------------------------------------------------------------------

    def _sync_row(self, row: Mapping[str, Any], partition: str, known: dict[str, SyncedState], parked: set[str],
                  *, source: str, control_number: int = 0) -> str:
        try:
            record = self.plan.to_dataverse(row)
        except MappingError as exc:
            return self._park_unmappable(row, exc, source)
        row_key = encode_key(record.key)
        previous = known.pop(row_key, None)
        if previous is not None and previous.content_hash == record.content_hash:
            if row_key in parked:
                self.state.unpark(self.name, row_key)
            return "unchanged"
        try:
            self._write(record, previous, partition, control_number)
        except AuthError:
            raise  # every record would fail: abort the run instead of parking them all
        except (ApiError, MappingError, ConcurrencyConflict) as exc:
            return self._park(row_key, exc, source, row)
        if row_key in parked:
            self.state.unpark(self.name, row_key)
        log(logger, logging.DEBUG, "record written", template=self.name, key=row_key, source=source)
        return "written"

    def _write(self, record: DataverseRecord, previous: SyncedState | None, partition: str,
               control_number: int = 0) -> None:
        row_key = encode_key(record.key)
        for _ in range(MAX_CONFLICT_ROUNDS):
            self.writer.upsert(record)
            try:
                self.state.put_synced(partition, row_key, record.content_hash, previous,
                                      control_number=control_number)
                return
            except ConcurrencyConflict:
                # Someone synced this key meanwhile: our write may be older than theirs. Re-read
                # Commerce and write again so the last write carries the current content.
                log(logger, logging.INFO, "concurrent sync of the same key; re-reading", template=self.name,
                    key=row_key)
                previous = self.state.get_synced(partition, row_key)
                fresh = self.commerce.get(self.entity_set, self.plan.key_as_dict(record.key),
                                          select=list(self.plan.select_properties))
                if fresh is None:
                    raise ConcurrencyConflict(f"{row_key} was deleted in Commerce while being synced") from None
                record = self.plan.to_dataverse(fresh)
        raise ConcurrencyConflict(f"{row_key}: gave up after {MAX_CONFLICT_ROUNDS} concurrent updates")

    def _delete(self, key: tuple[str, ...], previous: SyncedState, partition: str, *, source: str) -> str:
        row_key = encode_key(key)
        if self.delete_policy == "delete":
            try:
                existed = self.writer.delete(key)
            except AuthError:
                raise
            except ApiError as exc:
                return self._park(row_key, exc, source, None)
            log(logger, logging.INFO, "record deleted in Dataverse" if existed else "record already absent in Dataverse",
                template=self.name, key=row_key, source=source)
        else:
            log(logger, logging.INFO, "record deleted in Commerce; kept in Dataverse (SYNC_DELETE_POLICY=ignore)",
                template=self.name, key=row_key, source=source)
        with contextlib.suppress(ConcurrencyConflict):  # re-synced meanwhile: that state is newer than ours
            self.state.delete_synced(partition, previous)
        self.state.unpark(self.name, row_key)
        return "deleted"

    def _park(self, row_key: str, exc: Exception, source: str, row: Mapping[str, Any] | None) -> str:
        error_class = getattr(exc, "error_class", "validation" if isinstance(exc, MappingError) else "conflict")
        reason = exc.reason if isinstance(exc, ApiError) else str(exc)
        attempts = self.state.park(self.name, row_key, direction=DIRECTION, error_class=error_class, error=reason,
                                   source=source, correlation_id=correlation_id(), payload=row)
        log(logger, logging.WARNING, "record parked for retry", template=self.name, key=row_key,
            error_class=error_class, attempts=attempts, source=source, error=reason)
        return "parked"

    def _park_unmappable(self, row: Mapping[str, Any], exc: MappingError, source: str) -> str:
        try:
            row_key = encode_key(self.plan.key_of(row))
        except MappingError:
            # No usable key: park under a digest of the row so it is still kept and visible.
            row_key = "invalid-key:" + uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(row, sort_keys=True, default=str)).hex
        return self._park(row_key, exc, source, row)
