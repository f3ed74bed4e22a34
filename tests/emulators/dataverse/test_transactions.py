"""The emulator's transactions: a rollback undoes exactly what the transaction wrote, from its journal."""

from __future__ import annotations

import pytest

from emulators.dataverse.schema import TABLES
from emulators.dataverse.store import Store
from emulators.dataverse.transactions import Transaction

CARDS = "msdyn_loyaltycards"
ID = "msdyn_loyaltycardid"


def store_with_cards(*numbers: str) -> Store:
    store = Store(TABLES)
    for number in numbers:
        store.insert(CARDS, {"msdyn_cardnumber": number, "msdyn_partynumber": f"P-{number}"})
    return store


def picture(store: Store) -> tuple[list[tuple[str, str]], int]:
    """Rows in order (card and party) and the change log's length."""
    rows = [(r["msdyn_cardnumber"], r["msdyn_partynumber"]) for r in store.rows(CARDS)]
    return rows, len(store.change_log)


def test_a_rollback_undoes_inserts_updates_and_deletes_and_keeps_the_row_order() -> None:
    store = store_with_cards("A", "B", "C")
    before = picture(store)
    b = store.find_by_key(CARDS, {"msdyn_cardnumber": "B"})
    assert b is not None

    with Transaction(store) as tx:
        store.update(CARDS, b[ID], {"msdyn_partynumber": "changed", "msdyn_cardnumber": "B2"})
        store.delete(CARDS, b[ID])
        store.insert(CARDS, {"msdyn_cardnumber": "D"})
        tx.rollback()

    assert picture(store) == before
    assert store.find_by_key(CARDS, {"msdyn_cardnumber": "B"}) == b  # the key index is back too
    assert store.find_by_key(CARDS, {"msdyn_cardnumber": "B2"}) is None


def test_a_block_that_raises_rolls_back_and_a_block_that_ends_keeps_its_writes() -> None:
    store = store_with_cards("A")
    with pytest.raises(RuntimeError), Transaction(store):
        store.insert(CARDS, {"msdyn_cardnumber": "X"})
        raise RuntimeError("boom")
    with Transaction(store):
        store.insert(CARDS, {"msdyn_cardnumber": "Y"})

    assert [card for card, _ in picture(store)[0]] == ["A", "Y"]


def test_an_outer_rollback_undoes_an_inner_committed_transaction() -> None:
    store = store_with_cards("A")
    with Transaction(store) as outer:
        with Transaction(store):
            store.insert(CARDS, {"msdyn_cardnumber": "inner"})
        store.insert(CARDS, {"msdyn_cardnumber": "outer"})
        outer.rollback()

    assert picture(store) == ([("A", "P-A")], 1)


def test_an_inner_rollback_leaves_the_outer_writes() -> None:
    store = store_with_cards("A")
    with Transaction(store):
        store.insert(CARDS, {"msdyn_cardnumber": "outer"})
        with Transaction(store) as inner:
            store.insert(CARDS, {"msdyn_cardnumber": "inner"})
            inner.rollback()

    assert [card for card, _ in picture(store)[0]] == ["A", "outer"]


def test_a_rolled_back_reset_brings_the_rows_and_their_change_history_back() -> None:
    store = store_with_cards("A", "B")
    before = picture(store)
    with Transaction(store) as tx:
        store.reset([CARDS])
        tx.rollback()

    assert picture(store) == before
    assert store.change_log_floor.get(CARDS, 0) == 0
    assert store.find_by_key(CARDS, {"msdyn_cardnumber": "A"}) is not None


def test_versions_handed_out_inside_a_rolled_back_transaction_are_not_reused() -> None:
    store = store_with_cards("A")
    with Transaction(store) as tx:
        used = store.insert(CARDS, {"msdyn_cardnumber": "X"})["versionnumber"]
        tx.rollback()

    assert store.insert(CARDS, {"msdyn_cardnumber": "Y"})["versionnumber"] > used
