"""All-or-nothing units of work over the row store: ``$batch`` change sets (docs/protocol-notes.md
§2.9: "A change set is atomic (all roll back on failure), like ExecuteTransaction") and bulk
actions on standard tables (§2.10: "any error rolls back the whole request").

:class:`Transaction` holds :attr:`Store.lock` for its whole duration (other requests wait,
like SQL row locks would make them) and opens a frame of the store's undo journal: every
row write and change-log entry made meanwhile records how to undo itself, so state kept for
change tracking rolls back with the rows (a rolled-back write never appears in a delta
response) and a rollback costs what the transaction wrote, not the size of the tables.
Row versions handed out meanwhile are not reused (like SQL ``rowversion``; inferred).
Transactions nest (the store lock is re-entrant): an inner rollback undoes the inner writes
only; an inner commit leaves its writes to the enclosing transaction's rollback.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from .store import Store


class Transaction:
    """``with Transaction(store) as tx:`` … ``tx.rollback()`` (also automatic when the block
    raises). The store lock is held from ``__enter__`` to ``__exit__``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rolled_back = False
        self._open = False

    def __enter__(self) -> Self:
        self.store.lock.acquire()
        self.store.begin_journal()
        self._open = True
        return self

    def rollback(self) -> None:
        """Undo every write made since the transaction started (idempotent)."""
        if self._open and not self.rolled_back:
            self.store.rollback_journal()
            self.rolled_back = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is not None:
                self.rollback()
            elif not self.rolled_back:
                self.store.commit_journal()
        finally:
            self._open = False
            self.store.lock.release()
