"""Thread-safe in-memory row store with F&O-style RecId / RecVersion ETags.

ETag format ``W/"<base64 of 'RecVersion,RecId'>"``: docs/protocol-notes.md §3.3 (one data source per
entity here). Keys compare case-insensitively like SQL Server's default collation and
``dataAreaId`` is stored in lower case (docs/protocol-notes.md §5.2; inferred).

F&O has no null strings (docs/protocol-notes.md §3.3): an X++ string field is ``""`` when empty, so every
string property of a stored row is a string, and reads and the POST response carry ``""``, never
null. The seed and admin edits may leave a string out or null; the store turns that into ``""``. An OData
write that sends null for a string property is refused by validation (400, ODataLib's null-value text):
string properties are declared ``Nullable="false"`` in $metadata (inferred: X++ cannot hold null in a string
field; the reference documents no F&O answer to such a write), so a client must send ``""``.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .entities import EntitySet

Row = dict[str, Any]
Key = tuple[Any, ...]

#: First RecId handed out; real F&O RecIds look like 5637144576 + n (inferred).
FIRST_REC_ID = 5_637_144_576


class StoreError(Exception):
    """Base class of store failures (mapped to HTTP errors by the server)."""


class DuplicateKeyError(StoreError):
    pass


class NotFoundError(StoreError):
    pass


class ETagMismatchError(StoreError):
    pass


def no_null_strings(entity_set: EntitySet, row: Mapping[str, Any], *, fill_missing: bool = True) -> Mapping[str, Any]:
    """``row`` with each null string property as ``""`` (and, with ``fill_missing``, each absent one); ``row``
    itself when there is none (the store copies what it keeps)."""
    empty = [p.name for p in entity_set.properties if p.edm_type == "Edm.String" and row.get(p.name) is None
             and (fill_missing or p.name in row)]
    return {**row, **dict.fromkeys(empty, "")} if empty else row


def normalize_key_value(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def make_etag(rec_version: int, rec_id: int) -> str:
    token = base64.b64encode(f"{rec_version},{rec_id}".encode("ascii")).decode("ascii")
    return f'W/"{token}"'


def etag_matches(if_match: str, current: str) -> bool:
    """``If-Match`` check: ``*`` or any listed tag equal to the current one (weak comparison)."""
    def bare(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    candidates = [t for t in (part.strip() for part in if_match.split(",")) if t]
    return any(t == "*" or bare(t) == bare(current) for t in candidates)


class StoredRow:
    """One row: the data dict is replaced, never mutated, on update (copy-on-write), so
    references handed out by :meth:`EntityStore.rows` stay consistent snapshots."""

    __slots__ = ("data", "etag", "rec_id", "rec_version")

    def __init__(self, data: Row, rec_id: int, rec_version: int = 1) -> None:
        self.data = data
        self.rec_id = rec_id
        self.rec_version = rec_version
        self.etag = make_etag(rec_version, rec_id)

    def replace(self, changes: Mapping[str, Any]) -> None:
        self.data = {**self.data, **changes}
        self.rec_version += 1
        self.etag = make_etag(self.rec_version, self.rec_id)

    def snapshot(self) -> tuple[Row, str]:
        # Values are JSON scalars, so a shallow copy is a safe private snapshot.
        return dict(self.data), self.etag


class EntityStore:
    """Rows of every entity set, keyed by the normalised entity key."""

    def __init__(self, entity_sets: Iterable[EntitySet]) -> None:
        self._sets = {s.name: s for s in entity_sets}
        self._lock = threading.RLock()
        self._rows: dict[str, dict[Key, StoredRow]] = {name: {} for name in self._sets}
        self._order: dict[str, list[Key] | None] = {name: None for name in self._sets}
        self._next_rec_id = FIRST_REC_ID

    # -- keys -------------------------------------------------------------------------------
    def key_of(self, entity_set: EntitySet, values: Mapping[str, Any]) -> Key:
        return tuple(normalize_key_value(values.get(k)) for k in entity_set.keys)

    # -- bulk -------------------------------------------------------------------------------
    def load(self, rows_by_set: Mapping[str, Iterable[Row]]) -> None:
        """Replace every set's rows (used on start-up and by ``POST /_emulator/reset``)."""
        with self._lock:
            self._next_rec_id = FIRST_REC_ID
            for name in self._sets:
                self._rows[name] = {}
                self._order[name] = None
            for name, rows in rows_by_set.items():
                entity_set = self._sets[name]
                for given in rows:
                    row = no_null_strings(entity_set, given)
                    self._rows[name][self.key_of(entity_set, row)] = self._new_row(row)

    def count(self, entity_set: EntitySet) -> int:
        with self._lock:
            return len(self._rows[entity_set.name])

    def rows(self, entity_set: EntitySet) -> list[tuple[Row, str]]:
        """All rows in stable key order, each with its ETag.

        The row dicts are shared read-only snapshots (copy-on-write): do not mutate them.
        """
        with self._lock:
            table = self._rows[entity_set.name]
            order = self._order[entity_set.name]
            if order is None:
                order = sorted(table, key=_sort_key)
                self._order[entity_set.name] = order
            return [(table[k].data, table[k].etag) for k in order]

    # -- single rows ------------------------------------------------------------------------
    def get(self, entity_set: EntitySet, key: Key) -> tuple[Row, str] | None:
        with self._lock:
            stored = self._rows[entity_set.name].get(key)
            return stored.snapshot() if stored else None

    def insert(self, entity_set: EntitySet, given: Row) -> tuple[Row, str]:
        row = no_null_strings(entity_set, given)
        with self._lock:
            key = self.key_of(entity_set, row)
            table = self._rows[entity_set.name]
            if key in table:
                raise DuplicateKeyError(key)
            stored = self._new_row(row)
            table[key] = stored
            self._order[entity_set.name] = None
            return stored.snapshot()

    def update(self, entity_set: EntitySet, key: Key, changes: Mapping[str, Any],
               if_match: str | None = None) -> tuple[Row, str]:
        with self._lock:
            stored = self._rows[entity_set.name].get(key)
            if stored is None:
                raise NotFoundError(key)
            if if_match is not None and not etag_matches(if_match, stored.etag):
                raise ETagMismatchError(key)
            stored.replace(no_null_strings(entity_set, changes, fill_missing=False))
            return stored.snapshot()

    def delete(self, entity_set: EntitySet, key: Key, if_match: str | None = None) -> Row:
        with self._lock:
            table = self._rows[entity_set.name]
            stored = table.get(key)
            if stored is None:
                raise NotFoundError(key)
            if if_match is not None and not etag_matches(if_match, stored.etag):
                raise ETagMismatchError(key)
            del table[key]
            self._order[entity_set.name] = None
            return dict(stored.data)

    def _new_row(self, row: Mapping[str, Any]) -> StoredRow:
        stored = StoredRow(dict(row), self._next_rec_id)
        self._next_rec_id += 1
        return stored


def _sort_key(key: Key) -> tuple[tuple[int, Any], ...]:
    # None sorts first; mixed types never occur within one key position.
    return tuple((0, "") if part is None else (1, part) for part in key)
