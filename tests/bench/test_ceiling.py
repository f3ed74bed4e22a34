"""bench/ceiling.py: the yardstick is the least time a client that keeps within the budget needs for the same work,
checked against the emulator's own admission rules (a simulated client on the tracker's clock), so a perfect client
scores 1.0 for every amount of work and every run length."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bench.ceiling import (
    ceiling_fraction,
    clock_bound_fraction,
    perfect_records_per_s,
    perfect_seconds,
    period_s,
    request_split,
    steady_records_per_s,
    window_budget_records,
    windows_in,
)
from emulators.common.throttling import Admission, ServiceProtection, ServiceProtectionTracker

# bench/__main__.py's budget: 60 requests and 3.0 s of server time per 10 s window, 8 at once.
PROTECTION = {"window_s": 10, "max_requests": 60, "max_execution_s": 3.0, "max_concurrent": 8}
BULK = 1000
PER_RECORD_S = 0.0005  # 0.5 s per 1,000-record request: the execution time binds (6,000 records a window)


def counted(records: int, per_record_s: float = PER_RECORD_S) -> tuple[float, int]:
    """What the emulator reports for ``records`` written: (execution_s, records_written)."""
    return records * per_record_s, records


@dataclass
class SimulatedClient:
    """A client that keeps within the budget, sending as early as the emulator's tracker lets it, on the tracker's
    own clock: every request it sends would finish inside the budget (no after-the-fact slack), none is refused."""

    protection: dict[str, float]
    bulk: int
    per_record_s: float
    now: float = 0.0
    in_flight: list[tuple[float, Admission, int]] = field(default_factory=list)
    ended: list[tuple[float, float]] = field(default_factory=list)  # (ended at, seconds) still in the window
    sent_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = ServiceProtection(window_s=self.protection["window_s"], max_requests=int(self.protection["max_requests"]),
                                   max_execution_s=self.protection["max_execution_s"],
                                   max_concurrent=int(self.protection["max_concurrent"]))
        self.tracker = ServiceProtectionTracker(config, clock=lambda: self.now)
        self.window = float(self.protection["window_s"])

    def _fits(self, seconds: float) -> bool:
        """Sent now and ending ``seconds`` later, does the request keep every window within the budget?"""
        end = self.now + seconds
        in_window = [s for e, s in self.ended if e > end - self.window]
        time_ok = sum(in_window) + sum(a for _, _, a in self._flight_s()) + seconds <= (
            self.protection["max_execution_s"] + 1e-9)
        requests_ok = sum(1 for t in self.sent_at if t > self.now - self.window) < self.protection["max_requests"]
        admitted = sum(s for e, s in self.ended if e > self.now - self.window) < self.protection["max_execution_s"]
        return time_ok and requests_ok and admitted and len(self.in_flight) < self.protection["max_concurrent"]

    def _flight_s(self) -> list[tuple[float, Admission, float]]:
        return [(end, adm, n * self.per_record_s) for end, adm, n in self.in_flight]

    def write(self, records: int) -> float:
        """Seconds until ``records`` are written; a refused request fails the test."""
        left = records
        while left > 0 or self.in_flight:
            while left > 0 and self._fits(min(left, self.bulk) * self.per_record_s):
                n = min(left, self.bulk)
                admitted = self.tracker.admit("user")
                assert isinstance(admitted, Admission), f"refused at {self.now:.3f} s: {admitted}"
                self.in_flight.append((self.now + n * self.per_record_s, admitted, n))
                self.sent_at.append(self.now)
                left -= n
            events = [end for end, _, _ in self.in_flight] + [e + self.window for e, _ in self.ended
                                                               if e + self.window > self.now]
            events += [t + self.window for t in self.sent_at if t + self.window > self.now]
            self.now = min(events)
            for item in [f for f in self.in_flight if f[0] <= self.now + 1e-12]:
                self.in_flight.remove(item)
                self.tracker.finish(item[1], records=item[2])
                self.ended.append((self.now, item[2] * self.per_record_s))
        return self.now


@pytest.mark.parametrize("records", [1, 999, 6000, 6001, 12_000, 30_500, 100_000])
def test_the_perfect_time_is_what_a_client_keeping_the_emulators_budget_takes(records: int) -> None:
    took = SimulatedClient(PROTECTION, BULK, PER_RECORD_S).write(records)
    assert perfect_seconds(records, PROTECTION, BULK, *counted(records)) == pytest.approx(took)


def test_where_the_request_count_binds_the_perfect_time_is_the_emulators_too() -> None:
    """Chunks of 10: 60 requests a window bind (600 records), counted at arrival, so the room is free after 10 s."""
    took = SimulatedClient(PROTECTION, 10, PER_RECORD_S).write(1_900)
    assert period_s(PROTECTION, 10, *counted(1_900)) == 10
    assert perfect_seconds(1_900, PROTECTION, 10, *counted(1_900)) == pytest.approx(took)


def test_a_request_holds_its_room_for_the_window_and_its_own_duration() -> None:
    """Counted when it ends: a budget sent at once ends at 0.5 s and leaves the window at 10.5 s, not at 10 s."""
    assert period_s(PROTECTION, BULK, *counted(1000)) == pytest.approx(10.5)
    assert steady_records_per_s(PROTECTION, BULK, *counted(1000)) == pytest.approx(6000 / 10.5)


def test_sending_the_next_budget_a_request_duration_earlier_is_refused() -> None:
    client = SimulatedClient(PROTECTION, BULK, PER_RECORD_S)
    client.write(6000)
    client.now = 10.0  # a window after the budget was sent, but its requests ended at 0.5 s
    assert not isinstance(client.tracker.admit("user"), Admission)


def test_one_window_admits_the_tighter_of_the_request_and_the_execution_time_limit() -> None:
    assert window_budget_records(PROTECTION, BULK, *counted(1000)) == pytest.approx(6000)  # 3.0 s / 0.5 ms
    assert window_budget_records(PROTECTION, 10, *counted(1000)) == pytest.approx(600)  # 60 requests of 10


@pytest.mark.parametrize("records", [1, 6000, 6001, 18_000, 100_000, 1_000_000])
def test_a_perfect_client_scores_1_whatever_the_amount_of_work(records: int) -> None:
    seconds = SimulatedClient(PROTECTION, BULK, PER_RECORD_S).write(records)
    assert ceiling_fraction(records, PROTECTION, BULK, *counted(records), seconds) == pytest.approx(1.0)


def test_a_client_taking_twice_the_perfect_time_scores_one_half() -> None:
    seconds = perfect_seconds(100_000, PROTECTION, BULK, *counted(100_000))
    assert ceiling_fraction(100_000, PROTECTION, BULK, *counted(100_000), 2 * seconds) == pytest.approx(0.5)


def test_the_records_of_a_last_partial_window_are_not_charged_a_whole_window() -> None:
    """Counting a budget for every window begun charged 6,001 records two windows: a perfect client read 0.5."""
    seconds = perfect_seconds(6001, PROTECTION, BULK, *counted(6001))
    assert seconds == pytest.approx(10.5005)  # the next budget at 10.5 s, its one record's request 0.5 ms
    assert perfect_records_per_s(6001, PROTECTION, BULK, *counted(6001)) == pytest.approx(6001 / 10.5005)


def test_a_run_that_took_longer_than_the_perfect_time_scores_below_1() -> None:
    """18,000 records in 28 s: the first figure (rate over one budget per 10 s) read 1.07 for it; the perfect time
    of 18,000 records is 21.5 s (budgets at 0, 10.5 and 21 s), so it reads 0.77."""
    assert ceiling_fraction(18_000, PROTECTION, BULK, *counted(18_000), 28.0) == pytest.approx(21.5 / 28.0)


@pytest.mark.parametrize(("seconds", "windows"), [(0.5, 1), (10.0, 1), (10.01, 2), (28.0, 3), (95.0, 10)])
def test_a_run_bounded_by_the_clock_has_one_budget_for_every_window_it_begins(seconds: float, windows: int) -> None:
    assert windows_in(seconds, 10) == windows


def test_the_fixed_requests_of_a_run_are_apart_from_the_write_path() -> None:
    split = request_split({"GET": 12, "POST": 100, "PATCH": 0}, written=100_000)
    assert split == {"fixed_requests": 12, "requests_per_1000": 1.0, "all_requests_per_1000": 1.12}


def test_nothing_written_takes_no_time() -> None:
    assert perfect_seconds(0, PROTECTION, BULK, *counted(1000)) == 0.0
    assert window_budget_records(PROTECTION, BULK, 0.0, 0) == 60_000  # no time counted yet: the request limit


@pytest.mark.parametrize("seconds", [5.0, 12.0, 25.0, 28.0, 30.0])
def test_a_perfect_client_of_a_run_bounded_by_the_clock_scores_1(seconds: float) -> None:
    """100 requests a 10-s window, counted at arrival: a client sending for ``seconds`` gets one window's requests
    admitted at the start of each window begun meanwhile."""
    written = 100 * windows_in(seconds, 10)
    assert clock_bound_fraction(written, 100, 10, seconds) == pytest.approx(1.0)


def test_writes_finishing_after_the_sending_time_are_not_charged_another_window() -> None:
    """204 writes sent for 25 s whose last retries ended at 32 s: three windows were begun while sending."""
    assert clock_bound_fraction(204, 100, 10, 25.0) == pytest.approx(0.68)
