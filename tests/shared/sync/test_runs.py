"""Run bookkeeping against Azurite: leases renewed while alive, lost leases stop a run, watermarks."""

from __future__ import annotations

import pytest

from shared.state.store import StateStore
from shared.sync.runs import LeaseLost, Run, RunSummary
from tests.clock import ManualClock


@pytest.fixture()
def clock(state: StateStore) -> ManualClock:
    state.clock = ManualClock()
    return state.clock


def begin(state: StateStore, lease_s: int = 60) -> Run:
    run = Run.begin(state, "loyalty_cards", "fo_to_dataverse", "all", lease_s)
    assert isinstance(run, Run)
    return run


def test_a_heartbeat_extends_a_long_runs_lease(state: StateStore, clock: ManualClock) -> None:
    run = begin(state, lease_s=30)
    before = run.lease.lease_until
    clock.advance(20)  # more than a third of the lease has passed
    run.heartbeat()
    assert state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all").lease_until > before


def test_a_run_whose_lease_was_taken_over_stops_at_its_next_heartbeat(state: StateStore, clock: ManualClock) -> None:
    run = begin(state, lease_s=30)
    clock.advance(31)  # it expired while the run was stuck
    assert state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "newer-run", 30) is not None
    with pytest.raises(LeaseLost):
        run.heartbeat()


def test_a_run_that_lost_its_lease_leaves_the_watermark_to_the_newer_run(state: StateStore, clock: ManualClock) -> None:
    run = begin(state, lease_s=30)
    clock.advance(31)
    state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "newer-run", 30)
    run.finish(advance=True)
    after = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (after.lease_owner, after.run_seq) == ("newer-run", 0)


def test_finishing_records_counts_and_releases_the_lease(state: StateStore) -> None:
    run = begin(state)
    run.summary.seen, run.summary.written = 3, 2
    summary = run.finish(advance=True)
    mark = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert isinstance(summary, RunSummary)
    assert (mark.run_seq, mark.lease_owner, mark.last_status) == (1, "", "completed")
    assert '"written": 2' in mark.last_counts


def test_a_failed_run_records_its_reason_and_the_next_completed_run_clears_it(state: StateStore) -> None:
    run = begin(state)
    run.summary.detail = "ServerError: HTTP 500"
    run.finish(advance=False)
    failed = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (failed.last_status, failed.last_error) == ("failed", "ServerError: HTTP 500")
    begin(state).finish(advance=True)
    assert state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all").last_error == ""


def test_a_run_finishing_after_a_newer_run_moved_the_watermark_on_never_moves_it_back(state: StateStore,
                                                                                      clock: ManualClock) -> None:
    first = begin(state)
    first.finish(advance=False)  # it failed: its run stays open and a later run resumes it
    clock.advance(60)
    newer = begin(state)
    newer.finish(advance=True, delta_link="newer-link")
    resumed = Run.begin(state, "loyalty_cards", "fo_to_dataverse", "all", 60, resume=lambda _: first.summary.run_id)
    assert isinstance(resumed, Run)
    resumed.started_at = first.started_at  # a resumed run keeps its first start, as the scan planner does
    resumed.finish(advance=True, delta_link="older-link")
    mark = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (mark.last_run_id, mark.last_run_started, mark.delta_link) == (newer.summary.run_id, newer.started_at,
                                                                         "newer-link")
    assert mark.lease_owner == ""  # the lease is let go all the same
