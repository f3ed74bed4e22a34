"""The fail-fast guard's rule (the end-to-end runs are in tests/shared/test_guard_rails.py): only the first records,
only one error class, and a success or a second class disarms it for the rest of the run."""

from __future__ import annotations

import pytest

from shared.http.errors import BadRequestError, ThrottledError
from shared.sync.failfast import FailFast, RunAborted

VALIDATION = BadRequestError("A validation error occurred.", status=400)
THROTTLED = ThrottledError("Too many requests.", status=429)


def test_the_limit_th_failure_of_one_class_trips_it_and_every_later_failure_too() -> None:
    guard = FailFast(3)
    guard.failed(VALIDATION)
    guard.failed(VALIDATION)
    with pytest.raises(RunAborted, match=r"the first 3 records all failed with error class validation"):
        guard.failed(VALIDATION)
    with pytest.raises(RunAborted):
        guard.failed(THROTTLED)  # a chunk still in flight stops parking as well
    assert guard.tripped and guard.failures == 4


def test_a_success_among_the_first_records_disarms_it() -> None:
    guard = FailFast(3)
    guard.failed(VALIDATION)
    guard.succeeded()
    for _ in range(10):
        guard.failed(VALIDATION)
    assert not guard.tripped


def test_a_second_error_class_disarms_it() -> None:
    guard = FailFast(3)
    guard.failed(VALIDATION)
    guard.failed(THROTTLED)
    for _ in range(10):
        guard.failed(VALIDATION)
    assert not guard.tripped


def test_a_limit_of_0_never_trips() -> None:
    guard = FailFast(0)
    for _ in range(100):
        guard.failed(VALIDATION)
    assert not guard.tripped
