"""``<prefix>synced``: per key, what was last written to Dataverse (content hash, per-column digests), the
shared image both sides held (two-way), and the newest business event applied. Spread over hash buckets:
a scope's states live in partitions ``<scope>~00`` to ``<scope>~NN`` (``SYNC_STATE_BUCKETS``), chosen by a
hash of the row key. One Table Storage partition serves about 2,000 entities/s; buckets multiply that, and
Azurite, which scans a partition on every insert, stays fast (measured: 1,000 inserts into a 35,000-entity
partition take 9.5 s, into 16 partitions of 2,500 about 0.25 s). Callers name the scope only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient

from shared.clock import Clock
from shared.state.keys import ConcurrencyConflict, bucket_of, int64, plain
from shared.state.transactions import MAX_OPERATIONS, Operation, TransactionRefused, create_or_replace, submit

DEFAULT_BUCKETS = 16
TOMBSTONE = ""  # the content hash of a key whose Dataverse row is being deleted (no real hash is empty)
_COLUMNS = ["RowKey", "hash", "control_number", "shared", "columns"]


@dataclass(frozen=True)
class SyncedState:
    row_key: str
    content_hash: str
    etag: str | None
    control_number: int = 0  # the newest business event applied for this key (0: none)
    shared: str = ""  # hash of the image both sides held at the last sync (two-way echo and conflict detection)
    columns: str = ""  # per-column digests of what was written (plan.column_digests): which columns changed

    @property
    def deleting(self) -> bool:
        """A tombstone: the outbound side is deleting this key's Dataverse row (``SyncedStates.tombstone``)."""
        return self.content_hash == TOMBSTONE


def _synced(entity: Any) -> SyncedState:
    return SyncedState(entity["RowKey"], entity.get("hash", ""), entity.metadata.get("etag"),
                       plain(entity.get("control_number")), entity.get("shared", ""), entity.get("columns", ""))


# (row key, content hash, previous state, shared hash, column digests): one write to record.
SyncedEntry = tuple[str, str, "SyncedState | None", str, str]


class SyncedStates:
    def __init__(self, table: TableClient, clock: Clock, buckets: int = DEFAULT_BUCKETS) -> None:
        if not 1 <= buckets <= 256:
            raise ValueError("state buckets must be between 1 and 256")
        self.table = table
        self.clock = clock
        self.buckets = buckets

    def _pk(self, partition: str, row_key: str) -> str:
        return f"{partition}~{bucket_of(row_key, self.buckets):02x}"

    def _bucket_partitions(self, partition: str, buckets: Sequence[int] | None = None) -> list[str]:
        return [f"{partition}~{b:02x}" for b in (buckets if buckets is not None else range(self.buckets))]

    def load(self, partition: str) -> dict[str, SyncedState]:
        return {state.row_key: state for state in self.iter(partition)}

    def between(self, partition: str, low: str, high: str) -> dict[str, SyncedState]:
        """The states whose row keys sort between ``low`` and ``high`` (inclusive): one page's worth,
        a range query per bucket."""
        found: dict[str, SyncedState] = {}
        for pk in self._bucket_partitions(partition):
            query = self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                parameters={"pk": pk, "low": low, "high": high}, select=_COLUMNS)
            found.update((e["RowKey"], _synced(e)) for e in query)
        return found

    def among(self, partition: str, row_keys: Iterable[str]) -> dict[str, SyncedState]:
        """The states of ``row_keys`` (those that have one), in one query over the scope's state buckets: their
        partitions, and row keys from the smallest to the largest asked for, keeping only those asked for. RowKey
        order is Table Storage's ordinal order of the encoded key, not Commerce's collation, so a key range of a
        scan is no RowKey range; the keys themselves always lie between their own minimum and maximum."""
        asked = set(row_keys)
        if not asked:
            return {}
        query = self.table.query_entities(
            "PartitionKey ge @first and PartitionKey le @last and RowKey ge @low and RowKey le @high",
            parameters={"first": f"{partition}~00", "last": f"{partition}~{self.buckets - 1:02x}",
                        "low": min(asked), "high": max(asked)}, select=_COLUMNS)
        return {e["RowKey"]: _synced(e) for e in query if e["RowKey"] in asked}

    def empty(self, partition: str) -> bool:
        """Whether the scope has no state at all (one query over its state buckets, one row asked for)."""
        query = self.table.query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={"first": f"{partition}~00", "last": f"{partition}~{self.buckets - 1:02x}"},
            select=["RowKey"], results_per_page=1)
        return next(iter(query), None) is None

    def iter(self, partition: str, buckets: Sequence[int] | None = None) -> Iterator[SyncedState]:
        """Every state of a scope (or of some of its ``buckets``), streamed bucket by bucket, page by page
        (never all in memory)."""
        for pk in self._bucket_partitions(partition, buckets):
            for entity in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                     select=_COLUMNS):
                yield _synced(entity)

    def get(self, partition: str, row_key: str) -> SyncedState | None:
        try:
            return _synced(self.table.get_entity(self._pk(partition, row_key), row_key))
        except ResourceNotFoundError:
            return None

    def put(self, partition: str, row_key: str, content_hash: str, previous: SyncedState | None,
                   *, control_number: int = 0, shared: str | None = None, columns: str = "") -> str | None:
        """Record what was written; the ETag of ``previous`` guards against a concurrent writer. Without
        ``columns`` no per-column digests are kept, so the next write of the key sends every column.
        Returns the new ETag."""
        applied = max(control_number, previous.control_number if previous else 0)
        entity = {"PartitionKey": self._pk(partition, row_key), "RowKey": row_key, "hash": content_hash,
                  "synced_at": self.clock.now().isoformat(), "control_number": int64(applied),
                  "shared": shared if shared is not None else (previous.shared if previous else ""),
                  "columns": columns}
        try:
            return create_or_replace(self.table, entity, previous.etag if previous else None)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrencyConflict(f"synced state {partition}/{row_key} changed meanwhile") from exc

    def tombstone(self, partition: str, previous: SyncedState) -> SyncedState:
        """Mark ``previous`` as being deleted (ETag-guarded: ``ConcurrencyConflict`` when the key was synced
        since it was read). A sync of the key meanwhile replaces the tombstone, which the deleting party then
        sees when it removes the tombstone with this ETag, so neither write is lost."""
        etag = self.put(partition, previous.row_key, TOMBSTONE, previous, shared=previous.shared)
        return SyncedState(previous.row_key, TOMBSTONE, etag, previous.control_number, previous.shared)

    def put_many(self, partition: str, entries: list[SyncedEntry]) -> list[str]:
        """Record many writes of one scope in entity-group transactions (per bucket, up to 100 each); each
        entry is (row key, content hash, previous state, shared hash, column digests). Returns the row keys
        that hit a concurrent writer (their ETag or existence changed): the caller re-reads and writes
        those again."""
        by_bucket: dict[str, list[SyncedEntry]] = {}
        for entry in entries:
            by_bucket.setdefault(self._pk(partition, entry[0]), []).append(entry)
        conflicted: list[str] = []
        synced_at = self.clock.now().isoformat()
        for pk, group in by_bucket.items():
            for start in range(0, len(group), MAX_OPERATIONS):
                chunk = group[start:start + MAX_OPERATIONS]
                operations: list[Operation] = []
                for row_key, content_hash, previous, shared, columns in chunk:
                    entity = {"PartitionKey": pk, "RowKey": row_key, "hash": content_hash, "synced_at": synced_at,
                              "control_number": int64(previous.control_number if previous else 0), "shared": shared,
                              "columns": columns}
                    if previous is None or previous.etag is None:
                        operations.append(Operation("create", entity))
                    else:
                        operations.append(Operation("replace", entity, etag=previous.etag))
                try:
                    submit(self.table, operations)
                except TransactionRefused:
                    # One entity changed meanwhile and the whole group was refused: write one by one to find it.
                    for row_key, content_hash, previous, shared, columns in chunk:
                        try:
                            self.put(partition, row_key, content_hash, previous, shared=shared, columns=columns)
                        except ConcurrencyConflict:
                            conflicted.append(row_key)
        return conflicted

    def delete(self, partition: str, previous: SyncedState) -> None:
        try:
            self.table.delete_entity(self._pk(partition, previous.row_key), previous.row_key, etag=previous.etag,
                                      match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise ConcurrencyConflict(f"synced state {partition}/{previous.row_key} changed meanwhile") from exc
