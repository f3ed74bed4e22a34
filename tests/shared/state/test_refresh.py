"""Pending template refreshes: one per template, joined by every later request, claimed once per interval, and
never claimed twice (each write carries the row's ETag)."""

from __future__ import annotations

import pytest

from shared.state.refresh import RefreshRequests
from shared.state.store import StateStore
from tests.clock import ManualClock

TEMPLATE = "loyalty_cards"
INTERVAL = 300.0


@pytest.fixture()
def clock(state: StateStore) -> ManualClock:
    clock = ManualClock()
    state.clock = clock
    state.ensure_tables()
    return clock


def instance(state: StateStore) -> RefreshRequests:
    """Another worker's view of the same row (each Function instance has its own)."""
    return RefreshRequests(state.refresh.table, state.clock)


def test_the_first_request_makes_a_refresh_pending_and_the_others_join_it(state: StateStore, clock: ManualClock) -> None:
    other = instance(state)
    assert state.refresh.request(TEMPLATE, "size_exceeded") is True
    clock.advance(8)
    assert [other.request(TEMPLATE, "unknown_target_id"), state.refresh.request(TEMPLATE, "partial_key")] == [
        False, False]
    pending = state.refresh.get(TEMPLATE)
    assert (pending.pending, pending.requests, pending.reason) == (True, 3, "size_exceeded")
    assert pending.last_requested_at > pending.first_requested_at


def test_a_pending_refresh_is_claimed_once(state: StateStore, clock: ManualClock) -> None:
    state.refresh.request(TEMPLATE, "size_exceeded")
    claimed = state.refresh.claim(TEMPLATE, INTERVAL)
    assert claimed is not None and claimed.requests == 1
    assert instance(state).claim(TEMPLATE, INTERVAL) is None  # nothing pending any more
    assert not state.refresh.get(TEMPLATE).pending


def test_the_next_refresh_is_due_only_an_interval_after_the_last_one_started(state: StateStore,
                                                                              clock: ManualClock) -> None:
    state.refresh.request(TEMPLATE, "size_exceeded")
    assert state.refresh.claim(TEMPLATE, INTERVAL) is not None
    clock.advance(1)
    state.refresh.request(TEMPLATE, "size_exceeded")
    clock.advance(INTERVAL - 2)
    assert state.refresh.claim(TEMPLATE, INTERVAL) is None
    clock.advance(1)
    assert state.refresh.claim(TEMPLATE, INTERVAL) is not None


def test_a_claim_made_with_a_stale_row_loses_to_the_request_that_changed_it(state: StateStore,
                                                                            clock: ManualClock) -> None:
    """The ETag: a request joining between a claim's read and its write makes the claim read again, so the claim
    takes that request along (its time decides which scopes the refresh may skip)."""
    state.refresh.request(TEMPLATE, "size_exceeded")
    stale = state.refresh.table.get_entity("refresh", TEMPLATE)
    clock.advance(5)
    instance(state).request(TEMPLATE, "unknown_target_id")
    assert state.refresh._write(stale, {"first_requested_at": ""}, TEMPLATE) is False
    claimed = state.refresh.claim(TEMPLATE, INTERVAL)
    assert claimed is not None and claimed.requests == 2
