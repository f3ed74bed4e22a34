"""All-or-nothing units of work over the row store: ``$batch`` change sets (protocols.md
§2.9: "A change set is atomic (all roll back on failure), like ExecuteTransaction") and bulk
actions on standard tables (§2.10: "any error rolls back the whole request").

:class:`Transaction` holds :attr:`Store.lock` for its whole duration (other requests wait,
like SQL row locks would make them) and snapshots the store's state when it starts; a
rollback puts the snapshot back. The snapshot covers every attribute of the store except
the lock and the table metadata, so state added for change tracking (the change log and its
floors) rolls back with the rows: a rolled-back write never appears in a delta response.
Row versions handed out meanwhile are not reused (like SQL ``rowversion``; inferred).
Transactions nest (the store lock is re-entrant): an inner rollback restores the inner
snapshot only.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from .store import Store

#: Store attributes that are shared, not copied (the lock itself, immutable table metadata).
_SHARED = frozenset({"lock", "tables"})


def _copy_state(value: Any) -> Any:
    """Copy containers (dict/list/set, recursively) so that later in-place writes do not
    reach the copy; other values (str, int, frozen dataclasses, ...) are shared."""
    if isinstance(value, dict):
        return {k: _copy_state(v) if isinstance(v, (dict, list, set)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_state(v) if isinstance(v, (dict, list, set)) else v for v in value]
    if isinstance(value, set):
        return set(value)
    return value


def snapshot(store: Store) -> dict[str, Any]:
    """A copy of the store's mutable state (call with :attr:`Store.lock` held)."""
    return {name: _copy_state(value) for name, value in vars(store).items() if name not in _SHARED}


def restore(store: Store, state: dict[str, Any]) -> None:
    """Put back a :func:`snapshot` (call with :attr:`Store.lock` held). The version counter
    keeps its current value: versions are never handed out twice."""
    version = getattr(store, "_version", None)
    for name, value in state.items():
        current = getattr(store, name, None)
        # In place where possible, so that references held elsewhere stay valid.
        if isinstance(current, list) and isinstance(value, list):
            current[:] = value
        elif isinstance(current, (dict, set)) and type(current) is type(value):
            current.clear()
            current.update(value)
        else:
            setattr(store, name, value)
    if version is not None:
        store._version = version


class Transaction:
    """``with Transaction(store) as tx:`` … ``tx.rollback()`` (also automatic when the block
    raises). The store lock is held from ``__enter__`` to ``__exit__``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rolled_back = False
        self._state: dict[str, Any] = {}

    def __enter__(self) -> Self:
        self.store.lock.acquire()
        try:
            self._state = snapshot(self.store)
        except BaseException:
            self.store.lock.release()
            raise
        return self

    def rollback(self) -> None:
        """Undo every write made since the transaction started (idempotent)."""
        if not self.rolled_back:
            restore(self.store, self._state)
            self.rolled_back = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is not None:
                self.rollback()
        finally:
            self._state = {}
            self.store.lock.release()
