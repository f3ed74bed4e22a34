"""After a Retry-After the identity resumes gradually: a probe first, then wider, never a stampede."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from emulators.common.throttling import ServiceProtection
from emulators.dataverse.server import start_dataverse
from shared.http import HttpCore, RetryPolicy, ThrottledError
from shared.http.core import Timeouts
from shared.http.gate import ResumeGate, Ticket
from tests.scripted_server import Answer, ScriptedServer, StaticCredential

THROTTLED = {"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit"}}


def core(url: str, *, window_s: float | None = None, attempts: int = 6) -> HttpCore:
    return HttpCore(url, StaticCredential(), "https://org.crm.dynamics.com/.default", service="test",
                    retry=RetryPolicy(max_attempts=attempts, budget_s=60), timeouts=Timeouts(2, 5), window_s=window_s)


def arrivals_after(server: ScriptedServer, count: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_after_a_retry_after_one_probe_goes_alone_until_it_is_answered(server: ScriptedServer) -> None:
    client = core(server.url)
    server.script(Answer(429, THROTTLED, {"Retry-After": "1"}), Answer(204, delay_s=0.6), Answer(204), Answer(204))
    pool = ThreadPoolExecutor(3)
    first = pool.submit(client.request, "GET", "a")
    while client.gate.blocks == 0:
        time.sleep(0.01)
    held = [first, *(pool.submit(client.request, "GET", name) for name in ("b", "c"))]

    arrivals_after(server, 2)  # the probe, a second later; its answer takes 0.6 s
    time.sleep(0.3)
    while_the_probe_runs = len(server.requests)
    for future in held:
        future.result(timeout=5)

    assert while_the_probe_runs == 2
    assert len(server.requests) == 4


def test_the_probes_success_lets_two_go_then_the_gate_widens_by_one_per_success() -> None:
    gate = ResumeGate(sleep=lambda s: None)
    gate.block(0.0)
    probe = gate.enter()
    entered: list[int] = []

    def enter(n: int) -> None:
        gate.enter()
        entered.append(n)

    waiting = [threading.Thread(target=enter, args=(n,), daemon=True) for n in range(3)]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)
    assert entered == []  # behind the probe

    gate.done(probe, success=True)
    time.sleep(0.2)
    assert len(entered) == 2  # one success: two in flight


def test_a_probe_throttled_again_blocks_and_probes_again(server: ScriptedServer) -> None:
    client = core(server.url)
    server.script(Answer(429, THROTTLED, {"Retry-After": "1"}), Answer(429, THROTTLED, {"Retry-After": "1"}),
                  Answer(204))
    started = time.monotonic()
    client.request("GET", "x")
    assert 1.9 <= time.monotonic() - started < 4
    assert (len(server.requests), client.gate.blocks) == (3, 2)


def test_a_response_reporting_an_empty_window_holds_the_next_request(server: ScriptedServer) -> None:
    client = core(server.url)
    server.script(Answer(204, headers={"x-ms-ratelimit-burst-remaining-xrm-requests": "0"}), Answer(204))
    client.request("GET", "x")
    started = time.monotonic()
    client.request("GET", "y")
    assert 0.9 <= time.monotonic() - started < 3


def test_without_the_header_a_429_of_fo_waits_the_30_s_fallback(server: ScriptedServer) -> None:
    sleeps: list[float] = []
    client = HttpCore(server.url, StaticCredential(), "s", service="commerce", sleep=sleeps.append,
                      retry=RetryPolicy(max_attempts=3, budget_s=120, throttle_fallback_s=30.0))
    resource = ("This request could not be processed at this time due to system experiencing high resource "
                "utilization.")
    server.script(Answer(429, {"error": {"code": "", "message": resource}}), Answer(204))
    client.request("PATCH", "x")
    assert sleeps == [pytest.approx(30.0, abs=0.05)]


def test_a_fallback_beyond_the_budget_raises_throttled_with_the_fallback(server: ScriptedServer) -> None:
    client = HttpCore(server.url, StaticCredential(), "s", service="commerce", sleep=lambda s: None,
                      retry=RetryPolicy(max_attempts=3, budget_s=10, throttle_fallback_s=30.0))
    server.script(Answer(429, {"error": {"code": "", "message": "busy"}}))
    with pytest.raises(ThrottledError):
        client.request("PATCH", "x")
    assert len(server.requests) == 1


def test_a_429_that_is_not_retried_still_blocks_the_identity(server: ScriptedServer) -> None:
    client = core(server.url, attempts=1)
    server.script(Answer(429, THROTTLED, {"Retry-After": "3"}))
    with pytest.raises(ThrottledError):
        client.request("GET", "x")
    assert 2 < client.gate.blocked_for() <= 3  # the other threads of this identity wait too


@pytest.fixture()
def strict_dataverse() -> object:
    """The Dataverse emulator with a strict request window: 10 requests per 2 s, nothing else limited, and no
    longer Retry-After for requests sent early (the requests in flight when the first 429 comes are)."""
    emulator = start_dataverse(port=0, service_protection=ServiceProtection(
        window_s=2, max_requests=10, max_execution_s=None, max_concurrent=None, retry_after_growth_s=0))
    yield emulator
    emulator.stop()


@dataclass(frozen=True)
class Sent:
    """One request of the hammer: when it passed the gate, when it was answered, and the status."""

    entered: float
    answered: float
    status: int


def hammer(client: HttpCore, threads: int, seconds: float) -> list[Sent]:
    """``threads`` threads sending WhoAmI back to back: every request as it went (429s and retries included)."""
    sent: list[Sent] = []
    lock = threading.Lock()
    local = threading.local()
    enter = client.gate.enter

    def entered() -> Ticket:  # the request is sent right after, from this thread
        ticket = enter()
        local.entered = time.monotonic()
        return ticket

    def observe(response: requests.Response) -> None:
        with lock:
            sent.append(Sent(local.entered, time.monotonic(), response.status_code))

    client.gate.enter = entered  # type: ignore[method-assign]
    client.observers.append(observe)
    stop = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop:
            client.request("GET", "WhoAmI")

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(loop) for _ in range(threads)]:
            future.result()
    return sent


def test_requests_let_through_after_a_block_draw_no_429_from_a_strict_request_limit(
        strict_dataverse: object) -> None:
    # Another process of the same identity has filled the window: this one learns it from a 429.
    other = core(strict_dataverse.api_url, window_s=2, attempts=1)  # type: ignore[attr-defined]
    for _ in range(10):
        other.request("GET", "WhoAmI")
    client = core(strict_dataverse.api_url, window_s=2, attempts=20)  # type: ignore[attr-defined]
    blocked_at: list[float] = []
    client.gate.on_block.append(lambda seconds: blocked_at.append(time.monotonic()))
    sent = hammer(client, threads=6, seconds=6.5)
    assert blocked_at, "the window was not full"
    # Requests that passed the gate before the first block may still draw a 429 (they were on their way);
    # every request the gate let through after it must not, and the next window must still be used.
    after_the_block = [request for request in sent if request.entered > blocked_at[0]]
    assert [request.status for request in after_the_block if request.status == 429] == []
    assert sum(1 for request in after_the_block
               if request.status < 400 and request.answered < blocked_at[0] + 6) >= 10


def test_a_resource_based_429_of_the_commerce_emulator_waits_30_s_and_holds_the_identity() -> None:
    from emulators.commerce.server import start_commerce

    emulator = start_commerce(cards=3, reward_points=0, levels_per_company=0)
    try:
        requests.post(f"{emulator.url}/_emulator/faults", json={  # type: ignore[attr-defined]
            "kind": "status", "status": 429, "reason": "resource", "nth": 1}, timeout=10).raise_for_status()
        sleeps: list[float] = []
        client = HttpCore(emulator.url, StaticCredential(), "s", service="commerce",  # type: ignore[attr-defined]
                          sleep=sleeps.append, retry=RetryPolicy(max_attempts=3, budget_s=120, throttle_fallback_s=30.0))
        client.request("GET", "data/RetailLoyaltyCards", params={"cross-company": "true"})
        assert sleeps == [pytest.approx(30.0, abs=0.05)]  # no Retry-After: F&O's sample waits 30 s (§3.5)
        assert client.gate.blocks == 1  # every request of the identity waited, not only this one
    finally:
        emulator.stop()


class ArrivalAtHandBack(ResumeGate):
    """The real gate, with one more request of the identity arriving at the very moment a refused request's ticket
    is handed back (``arrivals``: whether it would have passed), the moment no scheduling can be trusted with."""

    def __init__(self) -> None:
        super().__init__(sleep=lambda s: None)
        self.arrivals: list[bool] = []

    def done(self, ticket: Ticket, *, success: bool, burst_remaining: int | None = None) -> None:
        if not success:
            self.arrivals.append(self.blocked_for() == 0 and not self.resuming)
        super().done(ticket, success=success, burst_remaining=burst_remaining)


def test_no_request_slips_into_a_throttled_identity_between_the_429_and_the_gate_closing(
        server: ScriptedServer) -> None:
    client = core(server.url, attempts=1)
    client.gate = gate = ArrivalAtHandBack()
    server.script(Answer(429, THROTTLED, {"Retry-After": "5"}))
    with pytest.raises(ThrottledError):
        client.request("GET", "x")
    assert gate.arrivals == [False]  # the gate was closed before the throttled ticket came back


class ManualTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_what_a_response_reports_left_is_also_taken_by_earlier_requests_not_answered_yet() -> None:
    gate = ResumeGate(sleep=lambda s: None, clock=ManualTime())
    first, second, third = gate.enter(), gate.enter(), gate.enter()
    gate.done(third, success=True, burst_remaining=2)  # answered first: the server may admit the other two after it
    assert gate.blocked_for() > 0 and gate.resuming  # 2 left, both taken by the earlier requests on their way
    for ticket in (first, second):
        gate.done(ticket, success=True)


def test_what_a_response_reports_left_with_room_for_the_earlier_requests_keeps_the_gate_open() -> None:
    gate = ResumeGate(sleep=lambda s: None, clock=ManualTime())
    first, second, third = gate.enter(), gate.enter(), gate.enter()
    gate.done(third, success=True, burst_remaining=3)
    assert gate.blocked_for() == 0 and not gate.resuming
    for ticket in (first, second):
        gate.done(ticket, success=True)
