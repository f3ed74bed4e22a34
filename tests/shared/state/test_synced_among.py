"""The states of a set of keys in one query over a scope's state buckets (what an inbound baseline reads per page)."""

from __future__ import annotations

from shared.state.store import StateStore, encode_key


def test_the_states_of_some_keys_come_from_every_bucket_of_their_scope_only(state: StateStore) -> None:
    keys = [f"CARD-{i:04d}" for i in range(200)]
    state.synced.put_many("loyalty_cards", [(key, f"h{key}", None, "s", "") for key in keys])
    state.synced.put_many("loyalty_cards.x", [(key, "other scope", None, "s", "") for key in keys])
    state.synced.put_many("loyalty_levels.usmf", [(encode_key(("usmf", "Gold")), "h", None, "s", "")])

    asked = [*keys[10:40:3], "CARD-9999"]  # one key without a state
    found = state.synced.among("loyalty_cards", asked)

    assert set(found) == set(keys[10:40:3])
    assert {s.content_hash for s in found.values()} == {f"h{k}" for k in keys[10:40:3]}
    assert state.synced.among("loyalty_cards", []) == {}
    assert set(state.synced.among("loyalty_levels.usmf", [encode_key(("usmf", "Gold"))])) == {"usmf|Gold"}
