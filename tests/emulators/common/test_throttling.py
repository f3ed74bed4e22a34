"""The service-protection engine (emulators.common.throttling, docs/protocol-notes.md §2.12/§3.5)
with a fake clock: sliding window, after-the-fact limits, concurrency, Retry-After growth."""

from __future__ import annotations

import argparse

import pytest

from emulators.common.throttling import (
    Admission,
    Reason,
    ServiceProtection,
    ServiceProtectionTracker,
    Throttle,
    add_cli_arguments,
    from_cli_arguments,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(**config: object) -> tuple[ServiceProtectionTracker, Clock]:
    clock = Clock()
    return ServiceProtectionTracker(ServiceProtection(**config), clock=clock), clock  # type: ignore[arg-type]


def admit_ok(t: ServiceProtectionTracker, user: str = "u") -> Admission:
    verdict = t.admit(user)
    assert isinstance(verdict, Admission), verdict
    return verdict


def test_request_limit_is_enforced_after_the_window_holds_the_limit() -> None:
    t, _ = tracker(window_s=10, max_requests=2)
    for _ in range(2):
        t.finish(admit_ok(t))
    verdict = t.admit("u")
    assert verdict == Throttle(Reason.REQUESTS, 10)


def test_requests_leave_the_sliding_window() -> None:
    t, clock = tracker(window_s=10, max_requests=1)
    t.finish(admit_ok(t))
    clock.now += 10.5
    admit_ok(t)


def test_users_are_limited_separately() -> None:
    t, _ = tracker(max_requests=1)
    t.finish(admit_ok(t, "alice"))
    assert isinstance(t.admit("alice"), Throttle)
    admit_ok(t, "bob")


def test_execution_time_limit_counts_finished_work() -> None:
    t, clock = tracker(window_s=10, max_execution_s=1.0)
    admission = admit_ok(t)
    clock.now += 1.5  # one long request overshoots the budget: allowed, enforced afterwards
    t.finish(admission)
    verdict = t.admit("u")
    assert isinstance(verdict, Throttle) and verdict.reason is Reason.EXECUTION_TIME
    assert verdict.retry_after == 10


def test_concurrency_limit_is_immediate_and_released_on_finish() -> None:
    t, _ = tracker(max_concurrent=1)
    first = admit_ok(t)
    assert t.admit("u") == Throttle(Reason.CONCURRENCY, 1)
    t.finish(first)
    admit_ok(t)


def test_retry_after_grows_while_the_client_keeps_sending() -> None:
    t, clock = tracker(window_s=5, max_requests=1)
    t.finish(admit_ok(t))
    first = t.admit("u")
    assert first == Throttle(Reason.REQUESTS, 5)
    clock.now += 1
    second = t.admit("u")
    assert second == Throttle(Reason.REQUESTS, 5)  # 4 s left + 1 s growth
    clock.now += 1
    third = t.admit("u")
    assert third == Throttle(Reason.REQUESTS, 6)  # 4 s left + 2 s growth: the end keeps moving


def test_waiting_for_retry_after_is_enough_to_be_admitted() -> None:
    t, clock = tracker(window_s=3, max_requests=1)
    t.finish(admit_ok(t))
    verdict = t.admit("u")
    assert isinstance(verdict, Throttle)
    clock.now += verdict.retry_after
    admit_ok(t)


def test_admission_reports_remaining_burst_and_time() -> None:
    t, _ = tracker(max_requests=10, max_execution_s=20.0)
    admission = admit_ok(t)
    assert (admission.burst_remaining, admission.time_remaining_s) == (9, 20.0)


def test_snapshot_counts_requests_records_and_429s() -> None:
    t, _ = tracker(max_requests=1)
    t.finish(admit_ok(t), records=3)
    t.admit("u")
    snap = t.snapshot()
    assert (snap["requests"], snap["records_written"], snap["throttled_by_reason"]) == (1, 3, {"requests": 1})


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        ServiceProtection.from_json({"window_s": 0})
    with pytest.raises(ValueError):
        ServiceProtection.from_json({"max_request": 5})


def test_cli_flags_turn_service_protection_on() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert from_cli_arguments(parser.parse_args([])) is None
    config = from_cli_arguments(parser.parse_args(["--sp-max-requests", "5", "--sp-window-s", "2"]))
    assert config == ServiceProtection(max_requests=5, window_s=2.0)
