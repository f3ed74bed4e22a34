"""The adaptive concurrency limiter: starts low, grows on success, halves on 429, follows x-ms-dop-hint."""

from __future__ import annotations

import logging
import threading

import pytest
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


def test_the_live_time_header_format_with_a_grouping_separator_sets_the_budget() -> None:
    limiter = AdaptiveLimiter(start=4)
    limiter.observe(spent(0.1, remaining="1,200.00"))  # as live Dataverse sends it (docs/protocol-notes.md §2.12)
    assert (limiter.budget_s, limiter.unparsed_time_headers) == (1200.0, 0)


def test_a_budget_read_from_the_live_format_paces_requests() -> None:
    import time

    limiter = AdaptiveLimiter(start=4, window_s=0.5)
    limiter.observe(spent(1200.5, remaining="1,200.00"))  # more than the budget spent in this window
    started = time.monotonic()

    limiter.acquire()

    assert 0.3 <= time.monotonic() - started < 2.0


def test_an_unreadable_time_header_is_counted_and_logged_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    limiter = AdaptiveLimiter(start=4)
    with caplog.at_level(logging.WARNING, logger="loyaltysync.http"):
        for _ in range(3):
            limiter.observe(spent(0.1, remaining="twenty minutes"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "twenty minutes" in r.getMessage()]
    assert (limiter.unparsed_time_headers, len(warnings), limiter.budget_s) == (3, 1, 0.0)


def test_the_budget_is_read_from_the_dataverse_emulators_headers() -> None:
    from emulators.common.throttling import ServiceProtection
    from emulators.dataverse.server import start_dataverse

    emulator = start_dataverse(port=0, service_protection=ServiceProtection())
    try:
        limiter = AdaptiveLimiter(start=4)
        limiter.observe(requests.get(f"{emulator.api_url}WhoAmI", headers={"Authorization": "Bearer t"}, timeout=10))
        assert (limiter.budget_s, limiter.unparsed_time_headers) == (1200.0, 0)
    finally:
        emulator.stop()
