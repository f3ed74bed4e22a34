"""Auto-pause: more than N failures of a template within M minutes pause it, across instances, until resumed."""

from __future__ import annotations

import pytest

from shared.state.autopause import AUTO_PAUSE_BY, AutoPause
from shared.state.store import StateStore
from tests.clock import ManualClock

TEMPLATE = "loyalty_cards"
BUCKET = 10


@pytest.fixture()
def clock(state: StateStore) -> ManualClock:
    clock = ManualClock()
    state.clock = clock
    return clock


def instance(state: StateStore, name: str, *, failures: int = 5, minutes: float = 15) -> AutoPause:
    """Another process's counter over the same tables (each Function instance has its own)."""
    return AutoPause(state.auto_pause.control, state.callbacks, state.clock, failures=failures, minutes=minutes,
                     check_every_s=0, instance=name)


def fail(pause: AutoPause, times: int) -> list[bool]:
    return [pause.failed(TEMPLATE, "validation", "CardTenderType: no such value") for _ in range(times)]


def test_more_failures_than_the_limit_within_the_window_pause_the_template(state: StateStore, clock: ManualClock) -> None:
    paused = fail(instance(state, "a"), 6)
    assert paused == [False] * 5 + [True]
    assert state.callbacks.is_paused(TEMPLATE)


def test_the_pause_records_who_and_why(state: StateStore, clock: ManualClock) -> None:
    fail(instance(state, "a"), 6)
    record = state.callbacks.pause_record(TEMPLATE)
    assert record is not None and record["changed_by"] == AUTO_PAUSE_BY
    assert "6 failures in 15 minutes" in record["reason"] and "validation: CardTenderType" in record["reason"]


def test_failures_up_to_the_limit_do_not_pause(state: StateStore, clock: ManualClock) -> None:
    fail(instance(state, "a"), 5)
    assert not state.callbacks.is_paused(TEMPLATE)


def test_failures_further_apart_than_the_window_do_not_add_up(state: StateStore, clock: ManualClock) -> None:
    pause = instance(state, "a", minutes=1)
    fail(pause, 5)
    clock.advance(70)
    fail(pause, 5)
    assert not state.callbacks.is_paused(TEMPLATE)


def test_failures_of_several_instances_add_up(state: StateStore, clock: ManualClock) -> None:
    first, second = instance(state, "a"), instance(state, "b")
    assert fail(first, 3) == [False] * 3
    assert fail(second, 3) == [False, False, True]
    assert state.callbacks.is_paused(TEMPLATE)


def test_failures_from_before_a_resume_no_longer_count(state: StateStore, clock: ManualClock) -> None:
    pause = instance(state, "a")
    fail(pause, 6)
    clock.advance(BUCKET)
    state.callbacks.set_paused(TEMPLATE, False, by="operator")
    clock.advance(BUCKET)
    other = instance(state, "b")  # a process that saw none of the earlier failures
    assert fail(other, 1) == [False]
    assert not state.callbacks.is_paused(TEMPLATE)


def test_other_templates_are_not_paused(state: StateStore, clock: ManualClock) -> None:
    fail(instance(state, "a"), 6)
    assert not state.callbacks.is_paused("loyalty_levels")


def test_a_limit_of_zero_never_pauses(state: StateStore, clock: ManualClock) -> None:
    assert fail(instance(state, "a", failures=0), 50) == [False] * 50
    assert not state.callbacks.is_paused(TEMPLATE)


def test_an_unconfigured_store_never_pauses(state: StateStore, clock: ManualClock) -> None:
    assert fail(state.auto_pause, 50) == [False] * 50





@pytest.mark.parametrize("error_class", ["throttled", "server", "transport"])
def test_outage_failures_do_not_count(state: StateStore, clock: ManualClock, error_class: str) -> None:
    """A record parked by an outage is retried by the timer on its own: pausing would need a person to end it."""
    pause = instance(state, "a")
    assert [pause.failed(TEMPLATE, error_class, "503 Service Unavailable") for _ in range(10)] == [False] * 10
    assert not state.callbacks.is_paused(TEMPLATE)
