"""The process-wide settings and runtime are built once, even when the first callers arrive together."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.once import build_once
from shared.runtime import Runtime, get_runtime


def test_callers_that_arrive_during_the_build_wait_for_it_and_share_its_result() -> None:
    builds: list[object] = []

    @build_once
    def slow() -> object:
        time.sleep(0.2)
        builds.append(object())
        return builds[-1]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: slow(), range(8)))
    assert len(builds) == 1
    assert all(result is builds[0] for result in results)


def test_a_build_that_raises_keeps_nothing_and_the_next_caller_builds_again() -> None:
    attempts = []

    @build_once
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("storage down")
        return len(attempts)

    with pytest.raises(OSError):
        flaky()
    assert flaky() == 2
    assert flaky() == 2


def test_cache_clear_makes_the_next_call_build_again() -> None:
    counter = iter(range(10))
    numbered = build_once(lambda: next(counter))
    assert (numbered(), numbered()) == (0, 0)
    numbered.cache_clear()
    assert numbered() == 1


def test_a_burst_of_callers_on_a_cold_process_gets_one_runtime(runtime: Runtime) -> None:
    get_runtime.cache_clear()
    start = threading.Barrier(8)

    def first_call(_: int) -> Runtime:
        start.wait()
        return get_runtime()

    with ThreadPoolExecutor(8) as pool:
        runtimes = list(pool.map(first_call, range(8)))
    assert len({id(r) for r in runtimes}) == 1
