"""The adaptive concurrency limiter: starts low, grows on success, halves on 429, follows x-ms-dop-hint."""

from __future__ import annotations

import threading

import requests

from shared.http.limiter import AdaptiveLimiter


def response(status: int = 204, **headers: str) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.headers.update(headers)
    return r


def test_it_starts_low() -> None:
    assert AdaptiveLimiter(start=2).limit == 2


def test_successes_add_one_slot_at_a_time() -> None:
    limiter = AdaptiveLimiter(start=2, successes_per_step=3)
    for _ in range(6):
        limiter.observe(response())
    assert limiter.limit == 4


def test_a_429_halves_the_limit() -> None:
    limiter = AdaptiveLimiter(start=8)
    limiter.observe(response(429, **{"Retry-After": "2"}))
    assert (limiter.limit, limiter.throttled) == (4, 1)


def test_the_limit_never_drops_below_one() -> None:
    limiter = AdaptiveLimiter(start=1)
    limiter.observe(response(429))
    assert limiter.limit == 1


def test_the_dop_hint_caps_the_limit() -> None:
    limiter = AdaptiveLimiter(start=10)
    limiter.observe(response(**{"x-ms-dop-hint": "4"}))
    assert (limiter.ceiling, limiter.limit) == (4, 4)


def test_it_never_exceeds_52_in_flight() -> None:
    limiter = AdaptiveLimiter(start=100, ceiling=500)
    assert limiter.limit == 52


def test_acquire_blocks_at_the_limit_until_a_release() -> None:
    limiter = AdaptiveLimiter(start=1)
    limiter.acquire()
    got = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), got.set()), daemon=True).start()
    assert not got.wait(0.2)
    limiter.release()
    assert got.wait(2)


def test_a_request_waits_while_the_reported_budget_cannot_pay_for_it_and_the_ones_in_flight() -> None:
    import datetime

    limiter = AdaptiveLimiter(start=4)
    slow = response(**{"x-ms-ratelimit-time-remaining-xrm-requests": "1.00"})
    slow.elapsed = datetime.timedelta(seconds=0.6)
    limiter.observe(slow)  # 1.0 s left; a request costs about 0.6 s
    limiter.acquire()  # nothing in flight: goes
    second = threading.Thread(target=limiter.acquire)
    second.start()
    second.join(timeout=0.3)
    assert second.is_alive()  # 1.0 - 0.6 in flight leaves 0.4 s: not enough for another

    limiter.observe(response(**{"x-ms-ratelimit-time-remaining-xrm-requests": "3.00"}))
    second.join(timeout=2)
    assert not second.is_alive() and limiter.in_flight == 2


def test_with_nothing_in_flight_and_the_budget_spent_it_waits_for_the_window_to_free_enough() -> None:
    import datetime
    import time

    limiter = AdaptiveLimiter(start=4, window_s=0.9)
    limiter.observe(response(**{"x-ms-ratelimit-time-remaining-xrm-requests": "3.00"}))  # the whole budget
    spent = response(**{"x-ms-ratelimit-time-remaining-xrm-requests": "0.00"})
    spent.elapsed = datetime.timedelta(seconds=1.0)
    limiter.observe(spent)  # a request costs ~1 s; the window frees 3 s per 0.9 s, so ~0.3 s to wait

    started = time.monotonic()
    limiter.acquire()

    assert 0.2 <= time.monotonic() - started < 2.0
