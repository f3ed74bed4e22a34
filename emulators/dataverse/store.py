"""Thread-safe in-memory row store of the Dataverse emulator (docs/protocol-notes.md §5.1).

Rows are plain dicts keyed by property name as the Web API returns them: the primary id,
the writable columns, lookups as ``_<attribute>_value`` GUID strings and the server-managed
``createdon``/``modifiedon`` (ISO UTC ``...Z``) and ``versionnumber`` (a store-wide
increasing counter, the basis of ``@odata.etag: W/"<n>"``, §2.7).

One re-entrant lock guards everything; request handlers hold :attr:`Store.lock` across a
read-check-write sequence so that conditional operations are atomic.

Change-tracking hook (§2.11, served by :mod:`emulators.dataverse.changetracking`): every row
write goes through :meth:`Store.insert`, :meth:`Store.update` or :meth:`Store.delete`, and
each of them appends a :class:`ChangeRecord` to :attr:`Store.change_log` (versions strictly
increasing, under the lock). Any new write path (``$batch``, bulk actions, ...) must use these
three methods, or call :meth:`Store.record_change` itself, so that delta queries see it.
:meth:`Store.reset` empties tables without logging deletions; it raises
:attr:`Store.change_log_floor` for those tables instead, so older delta tokens expire.

Undo journal (for :mod:`emulators.dataverse.transactions`): while a transaction is open, each of
those writes also records how to undo itself, so a rollback costs what the transaction wrote,
not the size of the store (a full copy per ``$batch`` made a million-row benchmark quadratic).
"""

from __future__ import annotations

import bisect
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from emulators.common.odata import sort_key

from .indexes import SortedIndex
from .schema import SYSTEM_COLUMNS, Table

Row = dict[str, Any]


def utc_now_iso() -> str:
    """Current time as Dataverse serialises it: ``2024-05-01T12:34:56Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _normalise_key_value(value: Any) -> Any:
    # Dataverse compares key values with the database collation: case-insensitive for
    # strings (inferred from the default SQL collation; §2.8 states it for $filter).
    return value.casefold() if isinstance(value, str) else value


@dataclass(frozen=True)
class ChangeRecord:
    """One entry of the change log: ``operation`` is ``created``/``updated``/``deleted``."""

    version: int
    entity_set: str
    row_id: str
    operation: str


class Store:
    """Rows of every table, by entity-set name then primary id (insertion ordered)."""

    def __init__(self, tables: Mapping[str, Table], *, first_version: int = 1_000_000) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, Table] = dict(tables)
        self._rows: dict[str, dict[str, Row]] = {name: {} for name in self.tables}
        self._seed_ids: dict[str, set[str]] = {name: set() for name in self.tables}
        self._version = first_version
        self.change_log: list[ChangeRecord] = []
        #: Per table: change history at or below this version is gone (see :meth:`reset`).
        self.change_log_floor: dict[str, int] = {}
        #: Per table and alternate key: normalised key values -> row id, so key lookups stay O(1)
        #: at 10,000+ rows (the chaos suite and the benchmark write that many).
        self._key_index: dict[str, dict[tuple[str, ...], dict[tuple[Any, ...], str]]] = {
            name: {tuple(key): {} for key in table.alternate_keys} for name, table in self.tables.items()
        }
        #: One frame of undo steps per open transaction (innermost last); empty: no transaction.
        self._undo: list[list[Callable[[], None]]] = []
        #: Per table and column: rows sorted as ``$orderby`` sorts them (:mod:`.indexes`), built on first use and
        #: then kept up to date with every write, like the alternate-key index.
        self._sorted: dict[str, dict[str, SortedIndex]] = {name: {} for name in self.tables}

    # -- undo journal (call with the lock held) ---------------------------------------------
    def begin_journal(self) -> None:
        self._undo.append([])

    def commit_journal(self) -> None:
        """Keep the innermost frame's writes; an enclosing transaction can still undo them."""
        frame = self._undo.pop()
        if self._undo:
            self._undo[-1].extend(frame)

    def rollback_journal(self) -> None:
        """Undo the innermost frame's writes, newest first. The version counter is not wound back:
        versions are never handed out twice (like SQL ``rowversion``; inferred)."""
        for undo in reversed(self._undo.pop()):
            undo()

    def _remember(self, undo: Callable[[], None]) -> None:
        if self._undo:
            self._undo[-1].append(undo)

    # -- alternate-key index ---------------------------------------------------------------
    def _index_entries(self, entity_set: str, row: Mapping[str, Any]) -> list[tuple[tuple[str, ...], tuple[Any, ...]]]:
        entries = []
        for names in self._key_index[entity_set]:
            values = tuple(_normalise_key_value(row.get(n)) for n in names)
            if all(v is not None for v in values):
                entries.append((names, values))
        return entries

    def _index_add(self, entity_set: str, row: Mapping[str, Any], row_id: str) -> None:
        for names, values in self._index_entries(entity_set, row):
            self._key_index[entity_set][names].setdefault(values, row_id)
        for column, ordered in self._sorted[entity_set].items():
            ordered.add(row.get(column), row_id)

    def _index_remove(self, entity_set: str, row: Mapping[str, Any], row_id: str) -> None:
        for names, values in self._index_entries(entity_set, row):
            if self._key_index[entity_set][names].get(values) == row_id:
                del self._key_index[entity_set][names][values]
        for column, ordered in self._sorted[entity_set].items():
            ordered.remove(row.get(column), row_id)

    def _index_rebuild(self, entity_set: str) -> None:
        primary_id = self.tables[entity_set].primary_id
        for index in self._key_index[entity_set].values():
            index.clear()
        self._sorted[entity_set].clear()  # rebuilt on next use
        for row in self._rows[entity_set].values():
            self._index_add(entity_set, row, row[primary_id])

    def sorted_index(self, entity_set: str, column: str) -> SortedIndex:
        """The rows of a table sorted by one column (then id), built on first use; call with the lock held."""
        ordered = self._sorted[entity_set].get(column)
        if ordered is None:
            primary_id = self.tables[entity_set].primary_id
            ordered = SortedIndex([(sort_key(row.get(column)), row[primary_id])
                                   for row in self._rows[entity_set].values()])
            self._sorted[entity_set][column] = ordered
        return ordered

    def stored(self, entity_set: str, row_id: str) -> Row:
        """The stored row itself (not a copy: read it only, with the lock held)."""
        return self._rows[entity_set][row_id]

    def stored_rows(self, entity_set: str) -> Iterable[Row]:
        """Every stored row itself, in insertion order (read only, with the lock held)."""
        return self._rows[entity_set].values()

    def count(self, entity_set: str) -> int:
        with self.lock:
            return len(self._rows[entity_set])

    # -- reads -----------------------------------------------------------------------------
    def table(self, entity_set: str) -> Table | None:
        return self.tables.get(entity_set)

    def rows(self, entity_set: str) -> list[Row]:
        """Copies of all rows of a table, in insertion order."""
        with self.lock:
            return [dict(row) for row in self._rows[entity_set].values()]

    def get(self, entity_set: str, row_id: str) -> Row | None:
        with self.lock:
            row = self._rows[entity_set].get(row_id.lower())
            return dict(row) if row is not None else None

    def find_by_key(self, entity_set: str, key: Mapping[str, Any]) -> Row | None:
        """The row whose properties equal ``key`` (strings case-insensitively), if any."""
        wanted = {name: _normalise_key_value(value) for name, value in key.items()}
        with self.lock:
            for names, index in self._key_index[entity_set].items():
                if set(names) == set(wanted):
                    row_id = index.get(tuple(wanted[n] for n in names))
                    found = self._rows[entity_set].get(row_id) if row_id is not None else None
                    if found is not None and all(_normalise_key_value(found.get(n)) == v for n, v in wanted.items()):
                        return dict(found)
                    if found is None and row_id is None:
                        return None
                    break  # a stale entry (should not happen): fall back to the scan
            for row in self._rows[entity_set].values():
                if all(_normalise_key_value(row.get(n)) == v for n, v in wanted.items()):
                    return dict(row)
        return None

    def find_key_conflict(
        self, entity_set: str, candidate: Mapping[str, Any], *, exclude_id: str | None
    ) -> tuple[str, ...] | None:
        """The first alternate key whose (all non-null) values ``candidate`` shares with
        another row, or None. Keys with a null part are not enforced (inferred)."""
        table = self.tables[entity_set]
        with self.lock:
            for key in table.alternate_keys:
                values = {name: candidate.get(name) for name in key}
                if any(value is None for value in values.values()):
                    continue
                existing = self.find_by_key(entity_set, values)
                if existing is not None and existing[table.primary_id] != exclude_id:
                    return key
        return None

    @property
    def current_version(self) -> int:
        """The last version handed out (rows, deletions and reserved change-tracking points)."""
        with self.lock:
            return self._version

    def changes_after(self, entity_set: str, version: int) -> list[ChangeRecord]:
        """Change-log entries of ``entity_set`` with a version above ``version``, oldest first."""
        with self.lock:
            start = bisect.bisect_right(self.change_log, version, key=lambda change: change.version)
            return [change for change in self.change_log[start:] if change.entity_set == entity_set]

    # -- writes ----------------------------------------------------------------------------
    def next_version(self) -> int:
        with self.lock:
            self._version += 1
            return self._version

    def insert(self, entity_set: str, values: Mapping[str, Any], *, row_id: str | None = None) -> Row:
        """Create a row from validated ``values``; assigns id, timestamps and version."""
        table = self.tables[entity_set]
        with self.lock:
            new_id = (row_id or str(uuid.uuid4())).lower()
            now = utc_now_iso()
            row: Row = {name: None for name in table.readable_properties()}
            row.update(values)
            row[table.primary_id] = new_id
            row.update(createdon=now, modifiedon=now, versionnumber=self.next_version())
            self._rows[entity_set][new_id] = row
            self._index_add(entity_set, row, new_id)
            self._remember(partial(self._unset, entity_set, new_id))
            self._log(entity_set, new_id, "created", row["versionnumber"])
            return dict(row)

    def _unset(self, entity_set: str, row_id: str) -> None:
        row = self._rows[entity_set].pop(row_id)
        self._index_remove(entity_set, row, row_id)
        self._seed_ids[entity_set].discard(row_id)

    def update(self, entity_set: str, row_id: str, changes: Mapping[str, Any]) -> Row:
        """Apply validated ``changes`` to an existing row; bumps version and modifiedon."""
        table = self.tables[entity_set]
        with self.lock:
            row = self._rows[entity_set][row_id.lower()]
            if self._undo:
                self._remember(partial(self._put_back, entity_set, row, dict(row)))
            self._index_remove(entity_set, row, row[table.primary_id])
            for name, value in changes.items():
                if name == table.primary_id or name in SYSTEM_COLUMNS:
                    continue
                row[name] = value
            row.update(modifiedon=utc_now_iso(), versionnumber=self.next_version())
            self._index_add(entity_set, row, row[table.primary_id])
            self._log(entity_set, row[table.primary_id], "updated", row["versionnumber"])
            return dict(row)

    def _put_back(self, entity_set: str, row: Row, before: Row) -> None:
        """Undo an update: the row object keeps its identity and its place in the table."""
        primary_id = self.tables[entity_set].primary_id
        self._index_remove(entity_set, row, row[primary_id])
        row.clear()
        row.update(before)
        self._index_add(entity_set, row, row[primary_id])

    def delete(self, entity_set: str, row_id: str) -> bool:
        with self.lock:
            rows = self._rows[entity_set]
            if self._undo and row_id.lower() in rows:
                position = list(rows).index(row_id.lower())  # rows keep insertion order, also after an undo
                seeded = row_id.lower() in self._seed_ids[entity_set]
                self._remember(partial(self._reinsert, entity_set, rows[row_id.lower()], position, seeded))
            row = rows.pop(row_id.lower(), None)
            if row is None:
                return False
            self._index_remove(entity_set, row, row_id.lower())
            self._seed_ids[entity_set].discard(row_id.lower())
            self._log(entity_set, row_id.lower(), "deleted", self.next_version())
            return True

    def _reinsert(self, entity_set: str, row: Row, position: int, seeded: bool) -> None:
        row_id = row[self.tables[entity_set].primary_id]
        rows = self._rows[entity_set]
        items = list(rows.items())
        items.insert(position, (row_id, row))
        rows.clear()
        rows.update(items)
        self._index_add(entity_set, row, row_id)
        if seeded:
            self._seed_ids[entity_set].add(row_id)

    # -- tables defined at run time (app-owned tables, :mod:`.customization`) ---------------------------
    def define_table(self, table: Table) -> None:
        """Add a table, or replace its definition (a column, a lookup or an active key was added): its rows stay,
        its key index is rebuilt for the keys ``table`` declares."""
        with self.lock:
            name = table.entity_set
            self.tables[name] = table
            self._rows.setdefault(name, {})
            self._seed_ids.setdefault(name, set())
            self._key_index[name] = {tuple(key): {} for key in table.alternate_keys}
            self._sorted[name] = {}
            self._index_rebuild(name)

    def drop_table(self, entity_set: str) -> None:
        """Forget a table defined at run time, rows and change history with it."""
        with self.lock:
            for index in (self.tables, self._rows, self._seed_ids, self._key_index, self._sorted):
                index.pop(entity_set, None)
            self.change_log = [c for c in self.change_log if c.entity_set != entity_set]
            self.change_log_floor.pop(entity_set, None)

    def has_duplicates(self, entity_set: str, names: tuple[str, ...]) -> bool:
        """Whether two rows share the (all non-null) values of ``names``: an alternate key's index on them fails."""
        seen: set[tuple[Any, ...]] = set()
        with self.lock:
            for row in self._rows[entity_set].values():
                values = tuple(_normalise_key_value(row.get(n)) for n in names)
                if any(v is None for v in values):
                    continue
                if values in seen:
                    return True
                seen.add(values)
        return False

    def seed(self, entity_set: str, values: Mapping[str, Any]) -> Row:
        """Insert a reference row that survives :meth:`reset`."""
        with self.lock:
            row = self.insert(entity_set, values)
            self._seed_ids[entity_set].add(row[self.tables[entity_set].primary_id])
            return row

    def reset(self, entity_sets: Iterable[str] | None = None) -> None:
        """Empty the given tables (default: every table); seed rows are kept, rows added later go."""
        with self.lock:
            names = list(entity_sets) if entity_sets is not None else list(self.tables)
            if self._undo:
                self._remember(partial(self._unreset, {n: self._rows[n] for n in names}, self.change_log,
                                       dict(self.change_log_floor)))
            for name in names:
                seeds = self._seed_ids[name]
                self._rows[name] = {k: v for k, v in self._rows[name].items() if k in seeds}
                self._index_rebuild(name)
                self.change_log_floor[name] = self._version
            self.change_log = [c for c in self.change_log if c.entity_set not in names]

    def _unreset(self, rows: dict[str, dict[str, Row]], log: list[ChangeRecord], floor: dict[str, int]) -> None:
        for name, table_rows in rows.items():
            self._rows[name] = table_rows
            self._index_rebuild(name)
        self.change_log = log
        self.change_log_floor = floor

    @staticmethod
    def _unlog(log: list[ChangeRecord]) -> None:
        log.pop()

    def record_change(self, entity_set: str, row_id: str, operation: str, version: int) -> None:
        """Append to the change log (``operation``: ``created``/``updated``/``deleted``);
        ``version`` must be above every logged one (take it from :meth:`next_version`)."""
        with self.lock:
            self.change_log.append(ChangeRecord(version, entity_set, row_id, operation))
            self._remember(partial(self._unlog, self.change_log))

    _log = record_change
