"""The mass-delete guard as a pure decision: the allowance, approvals, and what a closing run records."""

from __future__ import annotations

from shared.state.store import Watermark
from shared.sync.guard import MASS_DELETE_FLOOR, DeleteGuard

GUARD = DeleteGuard(threshold=500, share=0.2)


def mark(**fields: object) -> Watermark:
    return Watermark(template="loyalty_cards", direction="fo_to_dataverse", scope="all", **fields)  # type: ignore[arg-type]


def test_the_allowance_is_the_smaller_of_the_threshold_and_the_share() -> None:
    assert GUARD.allowed(100_000) == (500, "SYNC_DELETE_THRESHOLD=500")
    assert GUARD.allowed(1_000) == (200, "SYNC_DELETE_THRESHOLD_SHARE=0.2 of 1000 synced records")
    assert DeleteGuard(share=0.29).allowed(100)[0] == 29  # not 28: 0.29 * 100 is 28.999… in floating point


def test_the_share_is_judged_from_the_floor_on() -> None:
    assert GUARD.allowed(3)[0] == MASS_DELETE_FLOOR
    assert not GUARD.decide(3, 3, mark()).hold  # every level of a small company may go
    assert DeleteGuard(threshold=0).decide(1, 3, mark()).hold  # unless the threshold says no delete without consent


def test_more_than_the_allowance_is_held_and_the_allowance_itself_is_not() -> None:
    assert not GUARD.decide(200, 1_000, mark()).hold
    held = GUARD.decide(201, 1_000, mark())
    assert held.hold and "201 deletes held" in held.reason and "SYNC_DELETE_THRESHOLD_SHARE=0.2" in held.reason
    assert GUARD.decide(501, 100_000, mark()).hold


def test_nothing_is_held_when_deletes_leave_dataverse_rows_alone() -> None:
    assert not DeleteGuard(enabled=False).decide(1_000, 1_000, mark()).hold  # SYNC_DELETE_POLICY=ignore


def test_a_pending_approval_raises_the_allowance_by_the_approved_deletes() -> None:
    approved = mark(approved_deletes=800, approved_by="ops", approved_at="2024-05-01T10:00:00+00:00")
    decision = GUARD.decide(1_000, 1_000, approved)
    assert not decision.hold and decision.approval == "2024-05-01T10:00:00+00:00"
    assert "approved by ops" in decision.reason
    assert GUARD.decide(1_001, 1_000, approved).hold  # more than approved + allowed: held again
    spent = mark(approved_deletes=800, approved_by="ops", approved_at="2024-05-01T10:00:00+00:00",
                 approval_spent_by="run-1")
    assert GUARD.decide(1_000, 1_000, spent).hold  # a spent approval counts for nothing


def test_a_closing_run_records_its_hold_or_clears_it_and_spends_the_approval_it_used() -> None:
    target = mark(approved_deletes=800, approved_by="ops", approved_at="t1")
    GUARD.decide(900, 1_000, target).apply(target, "run-2", "t2")
    assert (target.held_deletes, target.held_states, target.held_run, target.held_at) == (0, 0, "", "")
    assert target.approval_spent_by == "run-2"

    held = mark(approved_deletes=10, approved_by="ops", approved_at="t1")
    GUARD.decide(900, 1_000, held).apply(held, "run-3", "t3")
    assert (held.held_deletes, held.held_states, held.held_run) == (900, 1_000, "run-3")
    assert held.approval_spent_by == "run-3"  # outgrown: the operator approves the new count, or not


def test_an_approval_given_after_the_decision_stays_pending_for_the_next_run() -> None:
    target = mark()
    decision = GUARD.decide(900, 1_000, target)
    target.approved_deletes, target.approved_by, target.approved_at = 900, "ops", "t1"  # meanwhile
    decision.apply(target, "run-2", "t2")
    assert target.held_deletes == 900 and target.approval_pending
