"""Commerce -> Dataverse: the engine behind the timer, the queue worker and replays.

Change detection. The loyalty entities expose no modified time, so every timer run reads the whole
entity set (per legal entity for company-specific templates) and compares each record's mapped
content hash with the hash last written, kept per key in Table Storage: a new key is a create, a
different hash an update, a known key that no longer comes back a delete (confirmed by a read by
key before anything is deleted). Only differences are written; a run over unchanged data writes
nothing.

Concurrency. The timer and callbacks may touch the same key at once. Each write records its hash
with the ETag of the state it read; whoever loses that race re-reads the record from Commerce and
writes again, so the last write to Dataverse always carries Commerce's current content.

Two-way. Every write also records the shared image hash (``twoway.py``). Before overwriting a record
that Dataverse may have changed since the last sync, the Dataverse row is read: if it changed too,
that is a conflict, recorded and resolved by ``SYNC_CONFLICT_POLICY``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError

from shared.commerce.client import CommerceClient
from shared.dataverse.client import DataverseClient
from shared.http.errors import ApiError
from shared.mapping.model import Direction
from shared.mapping.plan import DataverseRecord, MappingError, Plan, changed_columns, column_digests
from shared.observability import log
from shared.state.records import ParkedKeys
from shared.state.store import (
    ConcurrencyConflict,
    StateStore,
    SyncedEntry,
    SyncedState,
    bucket_of,
    decode_key,
    encode_key,
)
from shared.sync.chunks import ChunkPool, Pending
from shared.sync.conflicts import ConflictResolver, Verdict
from shared.sync.derived import Deriver
from shared.sync.digests import KeyDigests
from shared.sync.failfast import FailFast
from shared.sync.guard import DeleteGuard
from shared.sync.parking import Parking
from shared.sync.runs import MAX_CONFLICT_ROUNDS, Outcome, RunSummary
from shared.sync.twoway import SharedImage
from shared.sync.writer import DataverseWriter

logger = logging.getLogger("loyaltysync.sync")

DIRECTION = Direction.TO_DATAVERSE.value
OVERWRITE = "overwrite"  # a conflict Commerce won: every column goes out, not only the ones it changed

# Called when Dataverse wins a conflict: write the Dataverse row to Commerce instead.
DataverseWins = Callable[[Mapping[str, Any]], str]


@dataclass
class DeleteTally:
    """What a delete search's count found: ``candidates`` (keys no range saw and Commerce confirmed missing),
    ``states`` (the synced states read) and the state buckets that hold candidates."""

    candidates: int = 0
    states: int = 0
    buckets: set[int] = field(default_factory=set)


class OutboundSync:
    """Moves one template's records from Commerce to Dataverse."""

    def __init__(self, plan: Plan, commerce: CommerceClient, dataverse: DataverseClient, state: StateStore,
                 *, delete_policy: str = "delete", lease_s: int = 900, two_way: bool = False,
                 resolver: ConflictResolver | None = None, bulk_size: int = 200, page_size: int = 5000,
                 identities: list[DataverseClient] | None = None, delete_threshold: int = 500,
                 delete_threshold_share: float = 0.2, fail_fast: int = 0) -> None:
        self.plan = plan
        self.name = plan.name
        self.entity_set = plan.template.commerce.entity_set
        self.commerce = commerce
        self.dataverse = dataverse
        self.state = state
        self.writer = DataverseWriter(dataverse, plan)
        self.images = SharedImage(plan, dataverse)
        self.delete_policy = delete_policy
        # How many deletes a full scan may make without an operator's consent (only rows are guarded: ``ignore``
        # deletes none).
        self.delete_guard = DeleteGuard(delete_threshold, delete_threshold_share, enabled=delete_policy == "delete")
        self.lease_s = lease_s
        self.two_way = two_way
        self.resolver = resolver or ConflictResolver(state, plan.name)
        self.parking = Parking(state, plan.name, Direction.TO_DATAVERSE, plan=plan)
        self.bulk_size = bulk_size
        self.page_size = page_size  # keys per checkpointed range of a full scan
        self.identities = identities or [dataverse]  # application users the bulk chunks are spread over
        self.fail_fast = fail_fast  # a scan whose first this many records all fail one way stops (0: never)
        # What reads a scan's key ranges (None: ``RangeReader``, one row per key); an aggregate reads lines.
        self.reader_factory: Callable[[Any, int], Any] | None = None
        # Derived columns (``shared.sync.derived``), computed into each row read before it is mapped; the clock is
        # read through the state store so a test's clock reaches "today".
        self.deriver = Deriver(plan, commerce, lambda: state.clock)
        # A one-way template (no field flows to F&O) has no Dataverse edit to look for before it overwrites.
        self.two_way = two_way and not plan.template.one_way

    def derive(self, rows: list[dict[str, Any]], *, contiguous: bool = False) -> list[dict[str, Any]]:
        """``rows`` with the template's derived columns set (the rows themselves when it has none)."""
        return self.deriver.augment(rows, contiguous=contiguous) if self.deriver else rows

    def read(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """One Commerce row by its full key, with its derived columns (None: Commerce does not have it)."""
        row = self.commerce.get(self.entity_set, self.plan.key_as_dict(key), select=list(self.plan.select_properties),
                                where=self.plan.template.commerce.filter)
        return None if row is None else self.derive([row])[0]

    def where(self, clause: str | None) -> str | None:
        """``clause`` (a key range, a group) and the template's source filter (``commerce.filter``), if any."""
        source = self.plan.template.commerce.filter
        if not source or not clause:
            return clause or source
        return f"({clause}) and ({source})"

    # -- scopes ------------------------------------------------------------------------------------

    def partition(self, company: str | None) -> str:
        return f"{self.name}.{company}" if company else self.name

    # -- full scans (driven page by page by ``shared.sync.scan``) --------------------------------------

    def chunk_pool(self, partition: str, parked: set[str]) -> ChunkPool:
        """Writes this scope's changed records in chunks, spread over the identities; its ``guard`` stops the
        run (``RunAborted``) when the first records all fail the same way."""
        guard = FailFast(self.fail_fast)
        return ChunkPool(lambda chunk, client: self._flush(chunk, partition, parked, client, guard), self.identities,
                         guard=guard)

    def compare_rows(self, rows: Iterable[dict[str, Any]], partition: str, parked: set[str], summary: RunSummary,
                     pool: ChunkPool, seen: Callable[[str], None]) -> None:
        """Map one page of Commerce rows, compare each with the state in the page's key range, and submit the
        changed ones in chunks; every key seen (mappable or not) is reported to ``seen``."""
        mapped: list[tuple[str, DataverseRecord, Mapping[str, Any]]] = []
        for row in self.derive(list(rows), contiguous=True):
            summary.read()
            try:
                record = self.plan.to_dataverse(row)
            except MappingError as exc:
                summary.count(self._park_unmappable(row, exc, "timer"))
                pool.guard.failed(exc)
                with contextlib.suppress(MappingError):
                    seen(encode_key(self.plan.key_of(row)))
                continue
            mapped.append((encode_key(record.key), record, row))
        self.compare_records(mapped, partition, parked, summary, pool, seen)

    def compare_records(self, mapped: list[tuple[str, DataverseRecord, Mapping[str, Any]]], partition: str,
                        parked: set[str], summary: RunSummary, pool: ChunkPool, seen: Callable[[str], None], *,
                        known: dict[str, SyncedState] | None = None,
                        before_write: Callable[[list[Pending]], None] | None = None) -> None:
        """Compare mapped records (row key, record, source row) with the state in their key range (or ``known``)
        and submit the changed ones in chunks, after ``before_write`` saw them all; every key is reported to
        ``seen``."""
        keys = [row_key for row_key, _, _ in mapped]
        if known is None:
            known = self.state.synced.between(partition, min(keys), max(keys)) if keys else {}
        if before_write is not None:
            changed = [(record, row, known.get(row_key)) for row_key, record, row in mapped
                       if (known.get(row_key) is None or known[row_key].content_hash != record.content_hash)]
            if changed:
                before_write(changed)
        waiting = parked.waiting if isinstance(parked, ParkedKeys) else {}
        pending: list[Pending] = []
        for row_key, record, fo_row in mapped:
            seen(row_key)
            previous = known.get(row_key)
            if previous is not None and previous.content_hash == record.content_hash:
                if row_key in parked:
                    self.state.parked.unpark(self.name, row_key)
                summary.count("unchanged")
                pool.guard.succeeded()
                continue
            if waiting.get(row_key) == record.content_hash:
                summary.count(Outcome.PARKED)  # refused for a reason in this very content: no request until it changes
                continue
            pending.append((record, fo_row, previous))
            if len(pending) >= self.bulk_size:
                pool.submit(pending, summary)
                pending = []
        if pending:
            pool.submit(pending, summary)

    def find_deletes(self, partition: str, seen: KeyDigests, summary: RunSummary, heartbeat: Callable[[], None],
                     buckets: Sequence[int] | None = None, *, delete: bool) -> DeleteTally:
        """After a complete scan: every state (of the scope, or of its state ``buckets``) whose key the scan
        did not see is a delete candidate, confirmed by a read by key first (streamed, never all loaded).

        ``delete=False``, the count: a key Commerce has after all (changed key casing, a race) is synced; the
        others are counted as candidates, and nothing is deleted. ``delete=True``, the deletes: each candidate
        Commerce still does not have is deleted; a key it has (again) is left to the count and to callbacks."""
        seen.freeze()
        tally = DeleteTally()
        for previous in self.state.synced.iter(partition, buckets):
            tally.states += 1
            if previous.row_key in seen:
                continue
            heartbeat()
            key = decode_key(previous.row_key)
            current = self.read(key)
            if current is not None:
                if not delete:
                    summary.count(self._sync_row(current, partition, {previous.row_key: previous}, parked=set(),
                                                 source="timer"))
            elif delete:
                summary.count(self._delete(key, previous, partition, source="timer"))
            else:
                tally.candidates += 1
                tally.buckets.add(bucket_of(previous.row_key, self.state.buckets))
        return tally

    def _flush(self, pending: list[Pending], partition: str, parked: set[str], client: DataverseClient | None = None,
               guard: FailFast | None = None) -> list[str]:
        """Write a chunk of changed records in bulk, record their state in batches; one outcome each."""
        outcomes: list[str] = []
        writes: list[tuple[DataverseRecord, Mapping[str, Any], SyncedState | None, str]] = []
        whole: set[int] = set()  # Commerce won a conflict: its whole record goes out, not only what it changed
        for record, row, previous in pending:
            _, shared = self.images.from_commerce(row)
            if self.two_way and previous is not None and previous.shared:
                try:
                    verdict = self._check_conflict(record, row, previous, shared, "timer")
                except ApiError as exc:
                    outcomes.append(self._park(encode_key(record.key), exc, "timer", row))
                    if guard is not None:
                        guard.failed(exc, encode_key(record.key))
                    continue
                if verdict == OVERWRITE:
                    whole.add(len(writes))
                elif verdict is not None:
                    outcomes.append(verdict)
                    continue
            writes.append((record, row, previous, shared))
        digests = [column_digests(record.columns, record.company) for record, _, _, _ in writes]
        changed = [changed_columns(record.columns, record.company, previous.columns)
                   if previous is not None and previous.columns and n not in whole else None
                   for n, (record, _, previous, _) in enumerate(writes)]
        errors = self.writer.upsert_many([record for record, _, _, _ in writes], client=client,
                                         changed=changed) if writes else []
        if guard is not None and any(error is None for error in errors):
            guard.succeeded()  # before the failures of the chunk are counted: the first records did not all fail
        done: list[SyncedEntry] = []
        for (record, row, previous, shared), error, columns in zip(writes, errors, digests, strict=True):
            row_key = encode_key(record.key)
            if error is not None:
                outcomes.append(self._park(row_key, error, "timer", row, record.content_hash))
                if guard is not None:
                    guard.failed(error, row_key)
                continue
            done.append((row_key, record.content_hash, previous, shared, columns))
        try:
            conflicted = set(self.state.synced.put_many(partition, done))
        except AzureError as exc:
            # Dataverse has the records; only their state is missing, so the next run writes them again
            # (upserts are idempotent). Not worth failing the run over.
            log(logger, logging.WARNING, "could not record the state of written records; they are rewritten next run",
                template=self.name, records=len(done), error=f"{type(exc).__name__}: {exc}")
            return [*outcomes, *(["written"] * len(done))]
        for row_key, _, _, shared, _ in done:
            if row_key in conflicted:
                # Another writer synced this key while the chunk was in flight: re-read and write again. What this
                # chunk just wrote is no edit in Dataverse: the conflict check must not take it for one.
                outcomes.append(self.sync_key(self.plan.key_as_dict(decode_key(row_key)), source="timer", force=True,
                                              ours=frozenset({shared})))
                continue
            if row_key in parked:
                self.state.parked.unpark(self.name, row_key)
            outcomes.append("written")
        return outcomes

    # -- one key (callbacks, replays, the other direction) -----------------------------------------

    def sync_key(self, fo_key: Mapping[str, Any], *, source: str = "callback", control_number: int = 0,
                 decided: bool = False, force: bool = False, ours: frozenset[str] = frozenset()) -> str:
        """Re-read one record from Commerce and bring Dataverse in line; returns the outcome.

        ``decided``: a conflict on this key was already recorded and resolved for Commerce. ``ours``: images
        this app itself just wrote to Dataverse, which the conflict check must not take for an agent's edit.
        """
        key = self.plan.key_of(fo_key)
        if self.deriver:
            return self._sync_group(key, source=source, control_number=control_number, decided=decided, force=force,
                                    ours=ours)
        partition = self.partition(self.plan.company_of(key))
        previous = self.state.synced.get(partition, encode_key(key))  # before Commerce is read: a later sync wins
        return self._sync_one(key, previous, self.read(key), source=source, control_number=control_number,
                              decided=decided, force=force, ours=ours)

    def _sync_one(self, key: tuple[str, ...], previous: SyncedState | None, current: dict[str, Any] | None, *,
                  source: str, control_number: int, decided: bool, force: bool, ours: frozenset[str],
                  parked: set[str] | None = None) -> str:
        """Bring Dataverse in line with ``current``, Commerce's row of ``key`` read after ``previous``, its state
        (None: Commerce has no such row)."""
        partition = self.partition(self.plan.company_of(key))
        row_key = encode_key(key)
        if current is None:
            if previous is None:
                # Never written and gone from Commerce: nothing is left to sync, so no earlier failure of the
                # key stays parked (a replay of it would otherwise find nothing to do, for good).
                self.state.parked.unpark(self.name, row_key)
                return Outcome.UNCHANGED
            return self._delete(key, previous, partition, source=source)
        known = {row_key: previous} if previous else {}
        return self._sync_row(current, partition, known, self.state.parked.keys(self.name) if parked is None else parked,
                              source=source, control_number=control_number, decided=decided, force=force, ours=ours)

    def _sync_group(self, key: tuple[str, ...], *, source: str, control_number: int, decided: bool, force: bool,
                    ours: frozenset[str]) -> str:
        """A key of a template with derived columns: its whole group is read once (one ``$filter``), the key's record
        synced, then every other record of the group whose content changed (a change to one tier row can flip
        another's current flag). A key the group read does not list is read by key, to confirm a delete. The
        group's states are read before Commerce is, as for one key. A sibling the group read no longer lists is left
        to the next scan's delete search (a delete is confirmed there). Returns the key's own outcome."""
        spec = next(iter(self.deriver.specs.values()))
        partition = self.partition(self.plan.company_of(key))
        prefix = encode_key(key[:len(spec.group_by)]) + "|"
        known = self.state.synced.between(partition, prefix, prefix + "\x7f")  # encoded keys are ASCII below 0x7f
        parked = self.state.parked.keys(self.name)
        group = self.deriver.augment(self.deriver.group_rows(spec, self.plan.key_as_dict(key)), whole=True)
        mine = [row for row in group if self._same_key(row, key)]
        row_key = encode_key(key)
        previous = known.pop(row_key, None)
        outcome = self._sync_one(key, previous, mine[0] if mine else self.read(key), source=source,
                                 control_number=control_number, decided=decided, force=force, ours=ours, parked=parked)
        for row in group:
            if self._same_key(row, key) is False:
                self._sync_row(row, partition, known, parked, source=source)
        return outcome

    def _same_key(self, row: Mapping[str, Any], key: tuple[str, ...]) -> bool | None:
        try:
            return tuple(p.casefold() for p in self.plan.key_of(row)) == tuple(p.casefold() for p in key)
        except MappingError:
            return None

    # -- one record --------------------------------------------------------------------------------

    def _sync_row(self, row: Mapping[str, Any], partition: str, known: dict[str, SyncedState], parked: set[str],
                  *, source: str, control_number: int = 0, decided: bool = False, force: bool = False,
                  ours: frozenset[str] = frozenset()) -> str:
        try:
            record = self.plan.to_dataverse(row)
        except MappingError as exc:
            return self._park_unmappable(row, exc, source)
        row_key = encode_key(record.key)
        previous = known.pop(row_key, None)
        if not force and previous is not None and previous.content_hash == record.content_hash:
            if row_key in parked:
                self.state.parked.unpark(self.name, row_key)
            return "unchanged"
        try:
            outcome = self._write(record, row, previous, partition, control_number, source, decided, ours)
        except (ApiError, MappingError, ConcurrencyConflict) as exc:
            return self._park(row_key, exc, source, row, record.content_hash)
        if row_key in parked:
            self.state.parked.unpark(self.name, row_key)
        log(logger, logging.DEBUG, "record synced", template=self.name, key=row_key, source=source, outcome=outcome)
        return outcome

    def _write(self, record: DataverseRecord, row: Mapping[str, Any], previous: SyncedState | None, partition: str,
               control_number: int, source: str, decided: bool = False, ours: frozenset[str] = frozenset()) -> str:
        row_key = encode_key(record.key)
        for _ in range(MAX_CONFLICT_ROUNDS):
            _, shared = self.images.from_commerce(row)
            if self.two_way and not decided and previous is not None and previous.shared:
                verdict = self._check_conflict(record, row, previous, shared, source, ours)
                if verdict is not None and verdict != OVERWRITE:
                    return verdict
            self.writer.upsert(record)
            ours |= {shared}  # a re-read after a lost race must not take this write for an agent's edit
            try:
                self.state.synced.put(partition, row_key, record.content_hash, previous,
                                      control_number=control_number, shared=shared,
                                      columns=column_digests(record.columns, record.company))
                return "written"
            except ConcurrencyConflict:
                # Someone synced this key meanwhile: our write may be older than theirs. Re-read
                # Commerce and write again so the last write carries the current content.
                log(logger, logging.INFO, "concurrent sync of the same key; re-reading", template=self.name,
                    key=row_key)
                previous = self.state.synced.get(partition, row_key)
                fresh = self.read(record.key)
                if fresh is None:
                    raise ConcurrencyConflict(f"{row_key} was deleted in Commerce while being synced") from None
                row = fresh
                record = self.plan.to_dataverse(fresh)
        raise ConcurrencyConflict(f"{row_key}: gave up after {MAX_CONFLICT_ROUNDS} concurrent updates")

    def _check_conflict(self, record: DataverseRecord, row: Mapping[str, Any], previous: SyncedState,
                        commerce_hash: str, source: str, ours: frozenset[str] = frozenset()) -> str | None:
        """Commerce changed; did Dataverse change too since the last sync? None: go ahead and write;
        ``OVERWRITE``: both changed and Commerce wins, so write the whole record."""
        dv_row = self.writer.read(self.writer.dataverse_key(record.columns, record.company), self.images.select)
        dv_image, dv_hash = self.images.from_dataverse(dv_row) if dv_row is not None else ({}, None)
        verdict = self.resolver.outbound(dv_hash, commerce_hash, previous.shared, ours)
        if verdict is Verdict.NO_CONFLICT:
            return None
        commerce_image, _ = self.images.from_commerce(row)
        self.resolver.record(encode_key(record.key), verdict, commerce=commerce_image, dataverse=dv_image,
                             detected_by=f"{DIRECTION}/{source}")
        if verdict is Verdict.COMMERCE_WINS:
            return OVERWRITE
        assert dv_row is not None
        self.resolver.dataverse_wins(dv_row)
        return Outcome.CONFLICT

    def write_row(self, fo_row: Mapping[str, Any], previous: SyncedState | None, *, source: str) -> str:
        """Write a Commerce row just read (by the other direction) to Dataverse; no conflict check."""
        record = self.plan.to_dataverse(fo_row)
        partition = self.partition(record.company)
        known = {encode_key(record.key): previous} if previous else {}
        return self._sync_row(fo_row, partition, known, set(), source=source, decided=True)

    def record_synced(self, fo_row: Mapping[str, Any], *, previous: SyncedState | None = None) -> None:
        """Record that both sides now hold ``fo_row`` (after the other direction wrote Commerce)."""
        record = self.plan.to_dataverse(fo_row)
        partition = self.partition(record.company)
        row_key = encode_key(record.key)
        previous = previous or self.state.synced.get(partition, row_key)
        _, shared = self.images.from_commerce(fo_row)
        self.state.synced.put(partition, row_key, record.content_hash, previous, shared=shared)

    def _delete(self, key: tuple[str, ...], previous: SyncedState, partition: str, *, source: str) -> str:
        """Commerce no longer has ``key`` (confirmed by a read): delete its Dataverse row and its state.

        The key may be re-created in Commerce and synced (by a callback) at any moment in between, so the
        state is first replaced by a tombstone (ETag-guarded: a sync since ``previous`` was read cancels the
        delete), then the row is deleted, then the tombstone is removed with its own ETag. If that is refused,
        the key was synced while its row was being deleted: it is synced again, so the new row is not lost."""
        row_key = encode_key(key)
        try:
            tombstone = self.state.synced.tombstone(partition, previous)
        except ConcurrencyConflict:
            log(logger, logging.INFO, "key synced again since it was found deleted; nothing deleted",
                template=self.name, key=row_key, source=source)
            return Outcome.UNCHANGED
        if self.delete_policy == "delete":
            try:
                existed = self.writer.delete(key)
            except ApiError as exc:
                return self._park(row_key, exc, source, None)
            log(logger, logging.INFO, "record deleted in Dataverse" if existed else "record already absent in Dataverse",
                template=self.name, key=row_key, source=source)
        else:
            log(logger, logging.INFO, "record deleted in Commerce; kept in Dataverse (SYNC_DELETE_POLICY=ignore)",
                template=self.name, key=row_key, source=source)
        try:
            self.state.synced.delete(partition, tombstone)
        except ConcurrencyConflict:
            log(logger, logging.WARNING, "key synced again while its Dataverse row was deleted; syncing it again",
                template=self.name, key=row_key, source=source)
            return self.sync_key(self.plan.key_as_dict(key), source=source, force=True)
        self.state.parked.unpark(self.name, row_key)
        return Outcome.DELETED

    def _park(self, row_key: str, exc: Exception, source: str, row: Mapping[str, Any] | None,
              content_hash: str = "") -> str:
        return self.parking.park(row_key, exc, source, row, content_hash=content_hash)

    def _park_unmappable(self, row: Mapping[str, Any], exc: MappingError, source: str) -> str:
        try:
            row_key = encode_key(self.plan.key_of(row))
        except MappingError:
            # No usable key: park under a digest of the row so it is still kept and visible.
            row_key = "invalid-key:" + uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(row, sort_keys=True, default=str)).hex
        return self._park(row_key, exc, source, row)
