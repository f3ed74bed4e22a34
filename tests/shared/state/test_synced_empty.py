"""Whether a scope has any synced state (what a scan's plan records: a first load needs no delete search)."""

from __future__ import annotations

from shared.state.store import StateStore


def test_a_scope_without_states_is_empty(state: StateStore) -> None:
    assert state.synced.empty("loyalty_cards")


def test_one_state_in_any_bucket_makes_its_scope_not_empty(state: StateStore) -> None:
    state.synced.put_many("loyalty_cards", [("CARD-0042", "h", None, "s", "")])
    assert not state.synced.empty("loyalty_cards")


def test_the_states_of_another_scope_do_not_count(state: StateStore) -> None:
    """Scopes share a table: ``loyalty_cards.usmf`` (a company) and ``loyalty_cards_x`` sort near ``loyalty_cards``."""
    state.synced.put_many("loyalty_cards.usmf", [("CARD-1", "h", None, "s", "")])
    state.synced.put_many("loyalty_cards_x", [("CARD-1", "h", None, "s", "")])
    state.synced.put_many("loyalty_card", [("CARD-1", "h", None, "s", "")])
    assert state.synced.empty("loyalty_cards")
