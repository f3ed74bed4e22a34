"""bench/ceiling.py: a perfect client scores 1.0 whatever the run's length; the old steady-rate yardstick did not."""

from __future__ import annotations

import pytest

from bench.ceiling import (
    ceiling_fraction,
    ceiling_records,
    request_split,
    steady_records_per_s,
    window_budget_records,
    windows_in,
)

# bench/__main__.py's budget: 60 requests and 3.0 s of server time per 10 s window.
PROTECTION = {"window_s": 10, "max_requests": 60, "max_execution_s": 3.0}
BULK = 1000
PER_RECORD_S = 0.0005  # 0.5 s per 1,000-record request: the execution time binds (6,000 records a window)


def counted(records: int) -> tuple[float, int]:
    """What the emulator reports for ``records`` written at ``PER_RECORD_S``: (execution_s, records_written)."""
    return records * PER_RECORD_S, records


def perfect_client(seconds: float) -> int:
    """Records a client writes that spends each window's whole budget the moment the window begins."""
    budget = window_budget_records(PROTECTION, BULK, *counted(1000))
    return int(budget * windows_in(seconds, PROTECTION["window_s"]))


def test_one_window_admits_the_tighter_of_the_request_and_the_execution_time_limit() -> None:
    assert window_budget_records(PROTECTION, BULK, *counted(1000)) == pytest.approx(6000)  # 3.0 s / 0.5 ms
    assert window_budget_records(PROTECTION, 10, *counted(1000)) == pytest.approx(600)  # 60 requests of 10


@pytest.mark.parametrize(("seconds", "windows"), [(0.5, 1), (10.0, 1), (10.01, 2), (28.0, 3), (30.0, 3), (95.0, 10)])
def test_a_run_has_one_budget_for_every_window_it_begins(seconds: float, windows: int) -> None:
    assert windows_in(seconds, 10) == windows


@pytest.mark.parametrize("seconds", [3.0, 12.0, 28.0, 30.0, 61.0, 600.0])
def test_a_perfect_client_scores_1_whatever_the_run_length(seconds: float) -> None:
    execution_s, records = counted(perfect_client(seconds))
    assert ceiling_fraction(perfect_client(seconds), PROTECTION, BULK, execution_s, records, seconds) == pytest.approx(1.0)


def test_the_steady_rate_flatters_a_28_second_run_by_its_first_window() -> None:
    """The old figure: 18,000 records in 28 s against 600 records/s read 1.07, for a client that could do no more."""
    written = perfect_client(28.0)
    assert written == 18_000
    steady = steady_records_per_s(PROTECTION, BULK, *counted(written))
    assert written / 28.0 / steady == pytest.approx(1.071, abs=0.001)
    assert ceiling_records(PROTECTION, BULK, *counted(written), 28.0) == written


def test_half_the_budget_scores_one_half() -> None:
    written = perfect_client(28.0) // 2
    assert ceiling_fraction(written, PROTECTION, BULK, *counted(written), 28.0) == pytest.approx(0.5)


def test_the_fixed_requests_of_a_run_are_apart_from_the_write_path() -> None:
    split = request_split({"GET": 12, "POST": 100, "PATCH": 0}, written=100_000)
    assert split == {"fixed_requests": 12, "requests_per_1000": 1.0, "all_requests_per_1000": 1.12}
