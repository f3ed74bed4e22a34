"""Several processes, one Dataverse identity: each live member takes its share of the budget (Table Storage)."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
import requests
from azure.data.tables import TableServiceClient

from devtools.azurite import Azurite
from shared.http.budget import MemberReport, Share, SharedBudget
from shared.http.limiter import AdaptiveLimiter
from shared.state.budget import BudgetMembers, identity_key

IDENTITY = identity_key("https://org.crm.dynamics.com", None)


@pytest.fixture()
def ledger(azurite: Azurite, table_prefix: str) -> BudgetMembers:
    return BudgetMembers.for_service(TableServiceClient.from_connection_string(azurite.connection_string), table_prefix)


def member(ledger: BudgetMembers, spent_s: float = 0.0, budget_s: float = 3.0, *, busy: bool = True,
           **kw: float) -> SharedBudget:
    """A member whose limiter reports ``spent_s`` in the window and has requests to send (``busy``)."""
    budget = SharedBudget(ledger, IDENTITY, heartbeat_s=kw.get("heartbeat_s", 0.2), idle_s=kw.get("idle_s"))
    budget.attach(lambda: (spent_s, 0, budget_s, 0), busy=lambda: busy)
    return budget


def test_a_member_publishes_and_reads_back_every_member_of_its_identity(ledger: BudgetMembers) -> None:
    ledger.publish(IDENTITY, MemberReport("a", time.time(), 1.5, 3, 3.0, 60))
    ledger.publish(identity_key("https://other.crm.dynamics.com", None), MemberReport("b", time.time(), 1, 1, 3, 60))
    assert [(m.member, m.spent_s, m.requests) for m in ledger.members(IDENTITY)] == [("a", 1.5, 3)]


def test_two_live_members_each_take_half_of_the_budget(ledger: BudgetMembers) -> None:
    first, second = member(ledger), member(ledger)
    first.beat()
    share = second.beat()
    assert share.members == 2
    assert share.time_allowance(3.0, 0.5) == pytest.approx(1.25)  # three requests of 0.5 s: go while under 1.25 s


def test_a_member_that_joins_a_full_window_waits_for_it_to_drain(ledger: BudgetMembers) -> None:
    busy = member(ledger, spent_s=2.8)  # the others' spend in this window: 2.8 s of 3 s
    busy.beat()
    share = member(ledger).beat()
    assert share.time_allowance(3.0, 0.5) == pytest.approx(0.2)  # not 1.25: only what the others left


def test_the_budget_is_the_largest_any_member_learned(ledger: BudgetMembers) -> None:
    member(ledger, budget_s=3.0).beat()
    share = member(ledger, budget_s=0.0).beat()  # a newcomer that has seen no header yet
    assert share.time_allowance(0.0, 0.5) == pytest.approx(1.25)


def test_an_idle_member_leaves_and_its_share_returns(ledger: BudgetMembers) -> None:
    idle = member(ledger, busy=False, heartbeat_s=0.1, idle_s=0.3)
    idle.active()  # joins, then nothing more
    busy = member(ledger)
    assert busy.beat().members == 2
    time.sleep(0.8)
    assert busy.beat().members == 1


def test_a_crashed_members_row_stops_counting_after_its_ttl(ledger: BudgetMembers) -> None:
    ledger.publish(IDENTITY, MemberReport("crashed", time.time() - 5, 2.0, 4, 3.0, 0))
    assert member(ledger, heartbeat_s=0.5).beat().members == 1  # TTL: three heartbeats, 1.5 s


def test_whole_requests_are_split_evenly_and_the_remainder_goes_to_the_first_members() -> None:
    # 3 s a window at 0.5 s a request: six requests among four members.
    assert [Share(members=4, rank=rank).time_allowance(3.0, 0.5) for rank in range(4)] == [0.75, 0.75, 0.25, 0.25]


def test_alone_a_member_may_spend_up_to_the_whole_budget() -> None:
    assert Share().time_allowance(3.0, 0.5) == 3.0  # Dataverse admits while the window is under it


def test_an_idle_members_spend_counts_but_it_claims_no_share(ledger: BudgetMembers) -> None:
    member(ledger, spent_s=1.0, busy=False).beat()  # idle, its last requests still in the window
    share = member(ledger).beat()
    assert (share.members, share.others_spent_s) == (1, 1.0)
    assert share.time_allowance(3.0, 0.5) == pytest.approx(2.0)  # the whole budget, less what the idle one spent


def test_the_concurrency_ceiling_is_shared_too() -> None:
    assert [Share(members=n).concurrency(8) for n in (1, 2, 4, 16)] == [8, 4, 2, 1]


def spent(seconds: float, remaining: str | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = 204
    if remaining:
        r.headers["x-ms-ratelimit-time-remaining-xrm-requests"] = remaining
    r.elapsed = datetime.timedelta(seconds=seconds)
    return r


class FixedShare(SharedBudget):
    """A member whose view of the others is given (no storage)."""

    def __init__(self, share: Share) -> None:
        self._fixed = share
        self.heartbeat_s = 0.05

    @property
    def share(self) -> Share:
        return self._fixed

    def attach(self, reporter: object, busy: object = None) -> None:
        pass

    def active(self, *, wait_s: float = 5.0) -> None:
        pass

    def sent(self) -> None:
        self.sends = getattr(self, "sends", 0) + 1


def test_a_limiter_with_one_other_member_holds_at_half_the_budget() -> None:
    limiter = AdaptiveLimiter(start=4, window_s=0.5, budget=FixedShare(Share(members=2)))
    limiter.observe(spent(0.6, remaining="1.00"))  # 0.6 s spent of a 1 s budget: over its half
    got = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), got.set()), daemon=True).start()
    assert not got.wait(0.3)
    assert got.wait(2)  # once the 0.6 s has left the window


def test_the_same_limiter_alone_would_have_gone_at_once() -> None:
    limiter = AdaptiveLimiter(start=4, window_s=0.5)
    limiter.observe(spent(0.6, remaining="1.00"))
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started < 0.25  # the other one waits 0.3 s or more


def test_a_limiter_paces_by_the_reported_request_count() -> None:
    limiter = AdaptiveLimiter(start=4, window_s=0.5)
    r = spent(0.001)
    r.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] = "2"  # three requests a window
    limiter.observe(r)
    for _ in range(3):
        limiter.acquire()
        limiter.release()
    started = time.monotonic()
    limiter.acquire()  # the fourth waits for the first to leave the window
    assert 0.3 <= time.monotonic() - started < 2


def test_a_members_retry_after_holds_the_other_members_too(ledger: BudgetMembers) -> None:
    from shared.http.gate import ResumeGate

    throttled, other = member(ledger), member(ledger)
    throttled.attach_gate(ResumeGate())
    other_gate = ResumeGate()
    other.attach_gate(other_gate)
    throttled._gate.block(2.0)  # type: ignore[union-attr]  # a 429 with Retry-After: 2 in that process
    throttled.beat()
    other.beat()
    assert 1.5 < other_gate.blocked_for() <= 2.0
    assert other_gate.resuming  # and it comes back with a probe


def test_a_member_that_has_measured_no_request_yet_waits_while_the_others_fill_the_window() -> None:
    # The others: 3.1 s of a 3 s budget in 6 requests. This member has seen no answer of its own.
    limiter = AdaptiveLimiter(start=4, window_s=10, budget=FixedShare(
        Share(members=3, others_spent_s=3.1, others_requests=6, budget_s=3.0)))
    got = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), got.set()), daemon=True).start()
    assert not got.wait(0.5)


def test_a_member_that_has_measured_no_request_yet_goes_when_the_others_leave_room() -> None:
    limiter = AdaptiveLimiter(start=4, window_s=10, budget=FixedShare(
        Share(members=3, others_spent_s=1.0, others_requests=2, budget_s=3.0)))
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started < 0.25


def test_a_request_sent_before_any_answer_is_reported_at_the_others_average_cost() -> None:
    """Reported at 0 s it was invisible to the others, and a second newcomer spent the same room (a 429)."""
    limiter = AdaptiveLimiter(start=4, window_s=10, budget=FixedShare(
        Share(members=3, others_spent_s=1.0, others_requests=2, budget_s=3.0)))
    limiter.acquire()
    spent_s, requests_in_window, _, _ = limiter._report()
    assert (spent_s, requests_in_window) == (pytest.approx(0.5), 1)


def test_a_waiting_request_goes_within_a_heartbeat_once_the_share_grows() -> None:
    """The last worker of a fanned-out run: the others went idle, the whole budget is its own, and its own spend
    leaves the window only 10 s later; it must not wait for that."""
    budget = FixedShare(Share(members=2, budget_s=1.0))
    limiter = AdaptiveLimiter(start=4, window_s=10, budget=budget)
    limiter.observe(spent(0.6, remaining="1.00"))  # over its half of 1 s, under the whole
    got = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), got.set()), daemon=True).start()
    assert not got.wait(0.3)
    budget._fixed = Share(members=1, budget_s=1.0)  # the other member left
    assert got.wait(1.0)  # a heartbeat is 0.05 s; without looking again it waited for the 10 s window


def test_a_sent_request_is_published_at_once(ledger: BudgetMembers) -> None:
    """The others see it at their next view, not one heartbeat later."""
    reported = [0.0]
    budget = SharedBudget(ledger, IDENTITY, heartbeat_s=30)
    budget.attach(lambda: (reported[0], 1, 3.0, 0), busy=lambda: True)
    budget.active()  # joins (two beats), then the next beat is 30 s away
    reported[0] = 0.5
    budget.sent()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [m.spent_s for m in ledger.members(IDENTITY)] != [0.5]:
        time.sleep(0.02)
    assert [m.spent_s for m in ledger.members(IDENTITY)] == [0.5]
