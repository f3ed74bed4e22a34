"""Sync state in Azure Table Storage: watermarks, last-synced hashes, parked records.

Tables ``<prefix>watermarks``, ``<prefix>synced``, ``<prefix>parked`` and a few more, partitioned by
template (and legal entity where the template is company-specific). Every write that could race carries
the entity's ETag (``If-Match``), so two overlapping runs can never move a watermark backwards or let a
stale write win silently.

Synced states are spread over hash buckets: a scope's states live in partitions ``<scope>~00`` to
``<scope>~NN`` (``SYNC_STATE_BUCKETS``), chosen by a hash of the row key. One Table Storage partition
serves about 2,000 entities/s; buckets multiply that, and Azurite, which scans a partition on every
insert, stays fast (measured: 1,000 inserts into a 35,000-entity partition take 9.5 s, into 16
partitions of 2,500 about 0.25 s). Callers still name the scope only; the buckets are this module's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode

from shared.clock import SYSTEM_CLOCK, Clock
from shared.state.checkpoints import PageCheckpoints
from shared.state.transactions import MAX_OPERATIONS, Operation, TransactionRefused, create_or_replace, submit

# RowKey may not hold / \ # ? or control characters; '|' separates key parts and '%' escapes.
_ROWKEY_SAFE = " !\"$&'()*+,-.:;<=>@[]^_`{}~"
MAX_TEXT = 32_000  # a Table Storage string property holds 64 KiB (32K UTF-16 characters)


def encode_key(parts: tuple[str, ...]) -> str:
    return "|".join(quote(part, safe=_ROWKEY_SAFE) for part in parts)


def decode_key(row_key: str) -> tuple[str, ...]:
    return tuple(unquote(part) for part in row_key.split("|"))


def _int64(value: int) -> EntityProperty:
    """Table Storage keeps a plain int as Int32; ControlNumber and counters need Int64."""
    return EntityProperty(value, EdmType.INT64)


def _plain(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value or 0)


_SYNCED_COLUMNS = ["RowKey", "hash", "control_number", "shared", "columns"]


def _synced(entity: Any) -> SyncedState:
    return SyncedState(entity["RowKey"], entity.get("hash", ""), entity.metadata.get("etag"),
                       _plain(entity.get("control_number")), entity.get("shared", ""), entity.get("columns", ""))


# Parked records of the Dataverse -> F&O direction get this prefix: '%' is always escaped by encode_key,
# so no Commerce key can collide with it, and each direction's failure stays its own record.
INBOUND_PARKED_PREFIX = "%in%"


def parked_key(row_key: str, direction: str) -> str:
    return f"{INBOUND_PARKED_PREFIX}{row_key}" if direction == "dataverse_to_fo" else row_key


def split_parked_key(parked: str) -> tuple[str, str]:
    """(direction, row key) of a parked record's RowKey."""
    if parked.startswith(INBOUND_PARKED_PREFIX):
        return "dataverse_to_fo", parked[len(INBOUND_PARKED_PREFIX):]
    return "fo_to_dataverse", parked


def now() -> datetime:
    return datetime.now(UTC)


class ConcurrencyConflict(Exception):
    """Someone else changed the state entity since it was read."""


TOMBSTONE = ""  # the content hash of a key whose Dataverse row is being deleted (no real hash is empty)


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
        """A tombstone: the outbound side is deleting this key's Dataverse row (``StateStore.tombstone``)."""
        return self.content_hash == TOMBSTONE


@dataclass
class Watermark:
    """A template's progress in one direction and scope (a legal entity, or ``all``)."""

    template: str
    direction: str
    scope: str
    run_seq: int = 0
    initial_completed_at: str = ""
    last_run_id: str = ""
    last_run_started: str = ""
    last_run_finished: str = ""
    last_status: str = ""
    last_counts: str = "{}"
    last_error: str = ""  # why the last run failed (empty once one succeeds)
    lease_owner: str = ""
    lease_until: str = ""
    delta_link: str = ""  # Dataverse -> F&O: where the change feed resumes
    open_run: str = ""  # F&O -> Dataverse: a paged scan not yet finalised (its checkpoints let it resume)
    etag: str | None = None

    @property
    def row_key(self) -> str:
        return f"{self.direction}.{self.scope}"

    def to_entity(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.__dict__.items() if k not in ("etag",)}
        return {"PartitionKey": self.template, "RowKey": self.row_key, **fields}

    @classmethod
    def from_entity(cls, entity: Any) -> Watermark:
        known = {k: entity[k] for k in cls.__dataclass_fields__ if k != "etag" and k in entity}
        return cls(**known, etag=entity.metadata.get("etag"))


DEFAULT_BUCKETS = 16


def bucket_of(row_key: str, buckets: int) -> int:
    return hashlib.blake2b(row_key.encode("utf-8"), digest_size=2).digest()[0] % buckets if buckets > 1 else 0


# (row key, content hash, previous state, shared hash, column digests): one write to record.
SyncedEntry = tuple[str, str, "SyncedState | None", str, str]


class StateStore:
    def __init__(self, service: TableServiceClient, prefix: str, *, buckets: int = DEFAULT_BUCKETS,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if not 1 <= buckets <= 256:
            raise ValueError("state buckets must be between 1 and 256")
        self.service = service
        self.clock = clock  # leases expire by it; tests move it instead of editing lease times
        self.buckets = buckets
        self.watermarks = service.get_table_client(f"{prefix}watermarks")
        self.synced = service.get_table_client(f"{prefix}synced")
        self.parked = service.get_table_client(f"{prefix}parked")
        self.events = service.get_table_client(f"{prefix}events")
        self.control = service.get_table_client(f"{prefix}control")
        self.held = service.get_table_client(f"{prefix}held")
        self.conflicts = service.get_table_client(f"{prefix}conflicts")
        self.dataverse_ids = service.get_table_client(f"{prefix}dvids")
        self.pages = service.get_table_client(f"{prefix}pages")
        self.checkpoints = PageCheckpoints(self.pages)

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, prefix: str,
                      credential: TokenCredential | None = None, *, buckets: int = DEFAULT_BUCKETS) -> StateStore:
        if connection_string:
            service = TableServiceClient.from_connection_string(connection_string)
        else:
            assert endpoint is not None and credential is not None
            service = TableServiceClient(endpoint=endpoint, credential=credential)
        return cls(service, prefix, buckets=buckets)

    def ensure_tables(self) -> None:
        for table in (self.watermarks, self.synced, self.parked, self.events, self.control, self.held,
                      self.conflicts, self.dataverse_ids, self.pages):
            with contextlib.suppress(ResourceExistsError):
                table.create_table()

    # -- watermarks -------------------------------------------------------------------------------

    def get_watermark(self, template: str, direction: str, scope: str) -> Watermark:
        try:
            entity = self.watermarks.get_entity(template, f"{direction}.{scope}")
        except ResourceNotFoundError:
            return Watermark(template=template, direction=direction, scope=scope)
        return Watermark.from_entity(entity)

    def list_watermarks(self) -> list[Watermark]:
        return [Watermark.from_entity(e) for e in self.watermarks.list_entities()]

    def save_watermark(self, mark: Watermark) -> Watermark:
        """Write ``mark`` if nobody changed it since it was read; raise ``ConcurrencyConflict`` otherwise."""
        entity = mark.to_entity()
        try:
            mark.etag = create_or_replace(self.watermarks, entity, mark.etag)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ConcurrencyConflict(f"watermark {mark.template}/{mark.row_key} changed meanwhile") from exc
        return mark

    def delete_watermark(self, mark: Watermark) -> None:
        """Remove ``mark`` if nobody changed it since it was read; raise ``ConcurrencyConflict`` otherwise."""
        try:
            self.watermarks.delete_entity(mark.template, mark.row_key, etag=mark.etag,
                                          match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise ConcurrencyConflict(f"watermark {mark.template}/{mark.row_key} changed meanwhile") from exc

    def acquire_lease(self, template: str, direction: str, scope: str, owner: str, lease_s: int,
                      *, mark: Watermark | None = None) -> Watermark | None:
        """Take the run lease for one scope; None while another run holds an unexpired lease."""
        mark = mark or self.get_watermark(template, direction, scope)
        if mark.lease_owner and mark.lease_until and datetime.fromisoformat(mark.lease_until) > self.clock.now():
            return None
        mark.lease_owner = owner
        mark.lease_until = (self.clock.now() + timedelta(seconds=lease_s)).isoformat()
        try:
            return self.save_watermark(mark)
        except ConcurrencyConflict:
            return None

    def renew_lease(self, template: str, direction: str, scope: str, owner: str, lease_s: int) -> bool:
        """Extend ``owner``'s lease when less than half of it is left (several workers of one fanned-out run
        may call this at once); False when another run holds the lease now."""
        for _ in range(3):
            mark = self.get_watermark(template, direction, scope)
            if mark.lease_owner != owner:
                return False
            if mark.lease_until and datetime.fromisoformat(mark.lease_until) > self.clock.now() + timedelta(seconds=lease_s / 2):
                return True
            mark.lease_until = (self.clock.now() + timedelta(seconds=lease_s)).isoformat()
            try:
                self.save_watermark(mark)
                return True
            except ConcurrencyConflict:
                continue  # another worker renewed it meanwhile: read again
        return True

    # -- last-synced content hashes (bucketed partitions) ----------------------------------------------

    def _pk(self, partition: str, row_key: str) -> str:
        return f"{partition}~{bucket_of(row_key, self.buckets):02x}"

    def _bucket_partitions(self, partition: str, buckets: range | None = None) -> list[str]:
        return [f"{partition}~{b:02x}" for b in (buckets if buckets is not None else range(self.buckets))]

    def load_synced(self, partition: str) -> dict[str, SyncedState]:
        return {state.row_key: state for state in self.iter_synced(partition)}

    def synced_between(self, partition: str, low: str, high: str) -> dict[str, SyncedState]:
        """The states whose row keys sort between ``low`` and ``high`` (inclusive): one page's worth,
        a range query per bucket."""
        found: dict[str, SyncedState] = {}
        for pk in self._bucket_partitions(partition):
            query = self.synced.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                parameters={"pk": pk, "low": low, "high": high}, select=_SYNCED_COLUMNS)
            found.update((e["RowKey"], _synced(e)) for e in query)
        return found

    def iter_synced(self, partition: str, buckets: range | None = None) -> Iterator[SyncedState]:
        """Every state of a scope (or of some of its ``buckets``), streamed bucket by bucket, page by page
        (never all in memory)."""
        for pk in self._bucket_partitions(partition, buckets):
            for entity in self.synced.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                     select=_SYNCED_COLUMNS):
                yield _synced(entity)

    def get_synced(self, partition: str, row_key: str) -> SyncedState | None:
        try:
            return _synced(self.synced.get_entity(self._pk(partition, row_key), row_key))
        except ResourceNotFoundError:
            return None

    def put_synced(self, partition: str, row_key: str, content_hash: str, previous: SyncedState | None,
                   *, control_number: int = 0, shared: str | None = None, columns: str = "") -> str | None:
        """Record what was written; the ETag of ``previous`` guards against a concurrent writer. Without
        ``columns`` no per-column digests are kept, so the next write of the key sends every column.
        Returns the new ETag."""
        applied = max(control_number, previous.control_number if previous else 0)
        entity = {"PartitionKey": self._pk(partition, row_key), "RowKey": row_key, "hash": content_hash,
                  "synced_at": self.clock.now().isoformat(), "control_number": _int64(applied),
                  "shared": shared if shared is not None else (previous.shared if previous else ""),
                  "columns": columns}
        try:
            return create_or_replace(self.synced, entity, previous.etag if previous else None)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrencyConflict(f"synced state {partition}/{row_key} changed meanwhile") from exc

    def tombstone(self, partition: str, previous: SyncedState) -> SyncedState:
        """Mark ``previous`` as being deleted (ETag-guarded: ``ConcurrencyConflict`` when the key was synced
        since it was read). A sync of the key meanwhile replaces the tombstone, which the deleting party then
        sees when it removes the tombstone with this ETag, so neither write is lost."""
        etag = self.put_synced(partition, previous.row_key, TOMBSTONE, previous, shared=previous.shared)
        return SyncedState(previous.row_key, TOMBSTONE, etag, previous.control_number, previous.shared)

    def put_synced_many(self, partition: str, entries: list[SyncedEntry]) -> list[str]:
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
                              "control_number": _int64(previous.control_number if previous else 0), "shared": shared,
                              "columns": columns}
                    if previous is None or previous.etag is None:
                        operations.append(Operation("create", entity))
                    else:
                        operations.append(Operation("replace", entity, etag=previous.etag))
                try:
                    submit(self.synced, operations)
                except TransactionRefused:
                    # One entity changed meanwhile and the whole group was refused: write one by one to find it.
                    for row_key, content_hash, previous, shared, columns in chunk:
                        try:
                            self.put_synced(partition, row_key, content_hash, previous, shared=shared, columns=columns)
                        except ConcurrencyConflict:
                            conflicted.append(row_key)
        return conflicted

    def delete_synced(self, partition: str, previous: SyncedState) -> None:
        try:
            self.synced.delete_entity(self._pk(partition, previous.row_key), previous.row_key, etag=previous.etag,
                                      match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise ConcurrencyConflict(f"synced state {partition}/{previous.row_key} changed meanwhile") from exc

    # -- business events: duplicates, pause, held backlog, counters -------------------------------

    def event_applied(self, template: str, event_id: str) -> bool:
        """True when an event with this id was processed before (a duplicate delivery)."""
        try:
            self.events.get_entity(template, encode_key((event_id,)))
        except ResourceNotFoundError:
            return False
        return True

    def remember_event(self, template: str, event_id: str, outcome: str) -> None:
        """Record a processed event id, after the work is done (a crash before this replays the event)."""
        self.events.upsert_entity({"PartitionKey": template, "RowKey": encode_key((event_id,)),
                                   "processed_at": self.clock.now().isoformat(), "outcome": outcome}, mode=UpdateMode.REPLACE)

    def set_paused(self, template: str, paused: bool, *, by: str) -> None:
        self.control.upsert_entity({"PartitionKey": "pause", "RowKey": template, "paused": paused,
                                    "changed_at": self.clock.now().isoformat(), "changed_by": by}, mode=UpdateMode.REPLACE)

    def is_paused(self, template: str) -> bool:
        try:
            return bool(self.control.get_entity("pause", template).get("paused", False))
        except ResourceNotFoundError:
            return False

    def hold(self, template: str, order_key: str, message: str) -> None:
        """Keep a work item that arrived while its template is paused (no time limit)."""
        self.held.upsert_entity({"PartitionKey": template, "RowKey": order_key, "message": message[:MAX_TEXT]},
                                mode=UpdateMode.REPLACE)

    def held_items(self, template: str) -> Iterator[tuple[str, str]]:
        """Held work items in arrival order (RowKey order)."""
        for e in self.held.query_entities("PartitionKey eq @pk", parameters={"pk": template}):
            yield e["RowKey"], e["message"]

    def release_held(self, template: str, order_key: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.held.delete_entity(template, order_key)

    def bump(self, template: str, **deltas: int) -> None:
        """Add to a template's counters (ETag-guarded read-modify-write; best effort after 5 tries)."""
        for _ in range(5):
            entity: dict[str, Any]
            try:
                found = self.control.get_entity("counters", template)
                entity, etag = dict(found), found.metadata.get("etag")
            except ResourceNotFoundError:
                entity, etag = {"PartitionKey": "counters", "RowKey": template}, None
            for name, delta in deltas.items():
                entity[name] = _int64(_plain(entity.get(name, 0)) + delta)
            try:
                if etag is None:
                    self.control.create_entity(entity)
                else:
                    self.control.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue

    def counters(self, template: str) -> dict[str, int]:
        try:
            entity = self.control.get_entity("counters", template)
        except ResourceNotFoundError:
            return {}
        return {k: _plain(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}

    # -- Dataverse ids (only kept when Dataverse deletes flow to Commerce) ----------------------------

    def remember_dataverse_id(self, template: str, dataverse_id: str, row_key: str) -> None:
        self.dataverse_ids.upsert_entity({"PartitionKey": template, "RowKey": dataverse_id.lower(), "key": row_key},
                                         mode=UpdateMode.REPLACE)

    def key_of_dataverse_id(self, template: str, dataverse_id: str) -> str | None:
        try:
            return str(self.dataverse_ids.get_entity(template, dataverse_id.lower())["key"])
        except ResourceNotFoundError:
            return None

    def forget_dataverse_id(self, template: str, dataverse_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.dataverse_ids.delete_entity(template, dataverse_id.lower())

    # -- conflicts -----------------------------------------------------------------------------------

    def record_conflict(self, template: str, row_key: str, *, commerce: Any, dataverse: Any, winner: str,
                        detected_by: str, correlation_id: str) -> None:
        """Both sides changed a record since the last sync; kept for operators, with no time limit."""
        at = self.clock.now().isoformat()
        self.conflicts.create_entity({
            "PartitionKey": template, "RowKey": f"{at}|{row_key}", "key": json.dumps(list(decode_key(row_key))),
            "commerce": json.dumps(commerce, default=str)[:MAX_TEXT],
            "dataverse": json.dumps(dataverse, default=str)[:MAX_TEXT], "winner": winner, "detected_at": at,
            "detected_by": detected_by, "correlation_id": correlation_id})

    def list_conflicts(self, template: str | None = None) -> Iterator[dict[str, Any]]:
        if template is None:
            yield from self.conflicts.list_entities()
        else:
            yield from self.conflicts.query_entities("PartitionKey eq @pk", parameters={"pk": template})

    # -- parked records ----------------------------------------------------------------------------

    def park(self, template: str, row_key: str, *, direction: str, error_class: str, error: str,
             source: str, correlation_id: str, payload: Any = None) -> int:
        """Keep a record that could not be synced, with its reason; returns the attempt count."""
        table: TableClient = self.parked
        try:
            existing = table.get_entity(template, row_key)
            attempts = int(existing.get("attempts", 0)) + 1
            first = existing.get("first_failed", self.clock.now().isoformat())
        except ResourceNotFoundError:
            attempts, first = 1, self.clock.now().isoformat()
        entity = {
            "PartitionKey": template,
            "RowKey": row_key,
            "key": json.dumps(list(decode_key(split_parked_key(row_key)[1]))),
            "direction": direction,
            "error_class": error_class,
            "error": error[:MAX_TEXT],
            "attempts": attempts,
            "first_failed": first,
            "last_failed": self.clock.now().isoformat(),
            "source": source,
            "correlation_id": correlation_id,
            "payload": json.dumps(payload, default=str)[:MAX_TEXT] if payload is not None else "",
        }
        table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return attempts

    def unpark(self, template: str, row_key: str) -> bool:
        try:
            self.parked.delete_entity(template, row_key)
        except ResourceNotFoundError:
            return False
        return True

    def list_parked(self, template: str | None = None) -> Iterator[dict[str, Any]]:
        if template is None:
            yield from self.parked.list_entities()
        else:
            yield from self.parked.query_entities("PartitionKey eq @pk", parameters={"pk": template})

    def get_parked(self, template: str, row_key: str) -> dict[str, Any] | None:
        try:
            return dict(self.parked.get_entity(template, row_key))
        except ResourceNotFoundError:
            return None

    def parked_keys(self, template: str) -> set[str]:
        query = self.parked.query_entities("PartitionKey eq @pk", parameters={"pk": template}, select=["RowKey"])
        return {e["RowKey"] for e in query}
