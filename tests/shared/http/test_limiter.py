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


def spent(seconds: float, remaining: str | None = None) -> requests.Response:
    import datetime

    r = response(**({"x-ms-ratelimit-time-remaining-xrm-requests": remaining} if remaining else {}))
    r.elapsed = datetime.timedelta(seconds=seconds)
    return r


def test_a_request_waits_while_the_window_and_the_requests_in_flight_would_spend_the_budget() -> None:
    limiter = AdaptiveLimiter(start=4, window_s=0.6)
    limiter.observe(spent(0.6, remaining="1.00"))  # a budget of 1 s; 0.6 s of it spent; a request costs ~0.6 s
    limiter.acquire()  # 0.6 spent + nothing in flight: under the budget, goes
    second = threading.Thread(target=limiter.acquire)
    second.start()
    second.join(timeout=0.3)
    assert second.is_alive()  # 0.6 spent + 0.6 in flight would reach it

    second.join(timeout=2)  # the spent 0.6 s leaves the window after 0.6 s
    assert not second.is_alive() and limiter.in_flight == 2


def test_with_nothing_in_flight_it_waits_until_enough_has_left_the_window() -> None:
    import time

    limiter = AdaptiveLimiter(start=4, window_s=0.5)
    limiter.observe(spent(0.4, remaining="1.00"))
    limiter.observe(spent(0.7))  # 1.1 s spent of 1.0: the next request would be refused
    started = time.monotonic()

    limiter.acquire()

    assert 0.3 <= time.monotonic() - started < 2.0


def test_without_a_reported_budget_nothing_is_held() -> None:
    limiter = AdaptiveLimiter(start=4, window_s=300)
    limiter.observe(spent(5.0))
    limiter.acquire()
    limiter.acquire()
    assert limiter.in_flight == 2
