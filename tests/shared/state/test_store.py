"""Table Storage state against Azurite: ETag-guarded watermarks and hashes, leases, parked records."""

from __future__ import annotations

import json

import pytest

from shared.state.store import ConcurrencyConflict, StateStore, decode_key, encode_key
from tests.clock import ManualClock


def test_a_missing_watermark_reads_as_never_run(state: StateStore) -> None:
    mark = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (mark.run_seq, mark.etag, mark.last_status) == (0, None, "")


def test_a_watermark_saved_with_a_stale_etag_is_refused(state: StateStore) -> None:
    first = state.watermarks.save(state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all"))
    stale_etag = first.etag
    first.run_seq = 1
    state.watermarks.save(first)
    stale = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    stale.etag = stale_etag
    stale.run_seq = 0
    with pytest.raises(ConcurrencyConflict):
        state.watermarks.save(stale)
    assert state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all").run_seq == 1


def test_two_creators_of_one_watermark_cannot_both_win(state: StateStore) -> None:
    a = state.watermarks.get("loyalty_levels", "fo_to_dataverse", "usmf")
    b = state.watermarks.get("loyalty_levels", "fo_to_dataverse", "usmf")
    state.watermarks.save(a)
    with pytest.raises(ConcurrencyConflict):
        state.watermarks.save(b)


def test_a_held_lease_blocks_a_second_run(state: StateStore) -> None:
    assert state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "run-1", 60) is not None
    assert state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "run-2", 60) is None


def test_an_expired_lease_can_be_taken_over(state: StateStore) -> None:
    state.clock = clock = ManualClock()
    assert state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "run-1", 60) is not None
    clock.advance(61)
    taken = state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "run-2", 60)
    assert taken is not None and taken.lease_owner == "run-2"


def test_synced_hash_update_with_a_stale_etag_is_a_conflict(state: StateStore) -> None:
    state.synced.put("loyalty_cards", "LC-1", "hash-1", None)
    stale = state.synced.get("loyalty_cards", "LC-1")
    state.synced.put("loyalty_cards", "LC-1", "hash-2", stale)
    with pytest.raises(ConcurrencyConflict):
        state.synced.put("loyalty_cards", "LC-1", "hash-3", stale)
    current = state.synced.get("loyalty_cards", "LC-1")
    assert current is not None and current.content_hash == "hash-2"


def test_creating_a_hash_that_another_writer_created_is_a_conflict(state: StateStore) -> None:
    state.synced.put("loyalty_cards", "LC-2", "hash-1", None)
    with pytest.raises(ConcurrencyConflict):
        state.synced.put("loyalty_cards", "LC-2", "hash-x", None)


def test_load_synced_reads_one_partition(state: StateStore) -> None:
    state.synced.put("loyalty_levels.usmf", "usmf|Gold", "h1", None)
    state.synced.put("loyalty_levels.usrt", "usrt|Gold", "h2", None)
    assert set(state.synced.load("loyalty_levels.usmf")) == {"usmf|Gold"}


def test_parking_twice_counts_attempts_and_keeps_the_reason(state: StateStore) -> None:
    for _ in range(2):
        state.parked.park("loyalty_reward_points", "XTS-AMOUNT", direction="fo_to_dataverse", error_class="lookup_missing",
                   error="The lookup wasn't found: XTS.", source="timer", correlation_id="c-1",
                   payload={"RewardPointId": "XTS-AMOUNT"})
    [entry] = list(state.parked.all("loyalty_reward_points"))
    assert (entry["attempts"], entry["error_class"]) == (2, "lookup_missing")
    assert json.loads(entry["payload"]) == {"RewardPointId": "XTS-AMOUNT"}


@pytest.mark.parametrize("key", [("O'Brien/1#?",), ("usmf", "Gold|Silver"), ("100%\\x",), ("Ünïcødé ✓",)])
def test_keys_with_forbidden_row_key_characters_round_trip(state: StateStore, key: tuple[str, ...]) -> None:
    row_key = encode_key(key)
    assert not set(row_key) & set("/\\#?")
    state.synced.put("loyalty_cards", row_key, "h", None)
    assert decode_key(next(iter(state.synced.load("loyalty_cards")))) == key


def test_synced_states_spread_over_bucket_partitions_but_read_as_one_scope(state: StateStore) -> None:
    keys = [f"CARD-{i:04d}" for i in range(200)]
    state.synced.put_many("loyalty_cards", [(key, "h", None, "s", "") for key in keys])

    partitions = {e["PartitionKey"] for e in state.synced.table.list_entities(select=["PartitionKey"])}
    assert len(partitions) == state.buckets
    assert all(p.startswith("loyalty_cards~") for p in partitions)
    assert sorted(s.row_key for s in state.synced.iter("loyalty_cards")) == keys
    assert set(state.synced.between("loyalty_cards", "CARD-0010", "CARD-0019")) == set(keys[10:20])
    assert state.synced.get("loyalty_cards", "CARD-0150") is not None
