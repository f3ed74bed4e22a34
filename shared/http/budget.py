"""One Dataverse identity's service-protection budget, shared by the processes that spend it at the same time.

Dataverse counts requests, execution time and concurrency per user (per web server, docs/protocol-notes.md §2.12), but
Flex Consumption runs the page workers on many instances, each with its own limiter. Each limiter would
believe it owns the whole budget: four of them spend four budgets and draw 429s. So each live process is a
**member** of its identity's budget, with one row in Table Storage (``shared/state/budget.py``) that it
rewrites every ``heartbeat_s`` while it sends requests, and deletes when it has been idle for ``idle_s`` and
its requests have left the window (until then Dataverse counts them, so the others must too):

* with N live members that have requests to send, each takes **1/N** of the execution time, of the request
  count and of the concurrency ceiling (``Share``), counted in whole requests (the remainder goes to the first
  members by id); an idle member's spend still in the window counts among the others' but claims no share;
* and never more than what the others leave: a row carries its process's spend in the current window, so a
  process that joins while the others' window is full waits until it drains instead of spending its share on
  top (``min(budget / N, budget - others' spend)``);
* the budget itself is the most any member learned (from ``x-ms-ratelimit-time-remaining-xrm-requests``);
* a 429 is the identity's, not the process's: a member blocked by a ``Retry-After`` beats at once with the end
  of its block, and the others hold until then too (and resume with a probe). Otherwise they keep sending,
  and Dataverse lengthens the delay for each of those requests (measured: the identity blocked for 84 s).

Why membership rather than a shared spend ledger per request: the limiter stays local and exact for its own
requests (no storage call on the hot path: two per heartbeat, a write and a partition query), a storage outage
degrades to the last known share instead of stopping writes, and a crashed process's share returns after
``ttl_s``. The cost: a member's unused share is not lent to the others until it leaves (idle processes leave
after ``idle_s``). Hand-written: no library shares a sliding-window budget across processes through Table
Storage.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("loyaltysync.http")


@dataclass(frozen=True)
class MemberReport:
    """What one process publishes about its use of an identity's budget."""

    member: str
    heartbeat: float  # wall-clock seconds (time.time) of the report
    spent_s: float  # its execution time in the current window, in flight included (estimated)
    requests: int  # its requests in the current window, in flight included
    budget_s: float  # the execution-time budget it learned (0: not known)
    max_requests: int  # the request budget it learned (0: not known)
    blocked_until: float = 0.0  # wall-clock end of its current Retry-After (0: none)
    wanting: bool = True  # it has requests to send (False: idle, its spend still in the window)


class Gate(Protocol):
    """The part of the HTTP core's Retry-After gate the budget uses (shared/http/gate.py)."""

    on_block: list[Callable[[float], None]]

    def blocked_for(self) -> float: ...

    def hold(self, seconds: float) -> None: ...


class BudgetLedger(Protocol):
    """Where the members of an identity's budget meet (Table Storage: ``shared.state.budget.BudgetMembers``)."""

    def publish(self, identity: str, report: MemberReport) -> None: ...

    def members(self, identity: str) -> list[MemberReport]: ...

    def leave(self, identity: str, member: str) -> None: ...


@dataclass(frozen=True)
class Share:
    """This process's part of the identity's budget."""

    members: int = 1
    others_spent_s: float = 0.0
    others_requests: int = 0
    budget_s: float = 0.0  # the largest budget any member learned
    max_requests: int = 0
    rank: int = 0  # this member's place among the live members (sorted by id)

    @property
    def others_cost_s(self) -> float:
        """The others' average request in the window (execution seconds; 0: none): what a request costs for a
        member that has not measured one yet."""
        return self.others_spent_s / self.others_requests if self.others_requests else 0.0

    def _units(self, units: int) -> int:
        """This member's part of ``units`` whole requests: an even split, the remainder to the first ranks (a
        request is indivisible: shares of 1.5 requests each would make one too many in all)."""
        return units // self.members + (1 if self.rank < units % self.members else 0)

    def time_allowance(self, budget_s: float, cost_s: float) -> float:
        """Execution seconds this member may have spent in the window, its requests in flight included, and still
        send one more. Alone: the whole budget (Dataverse admits a request while the window is under it, after
        the fact). Shared: its whole requests' worth (budget / cost, split by ``_units``), less the one it sends,
        with half a request's slack for durations that vary; never more than the others leave."""
        budget = max(budget_s, self.budget_s)
        if self.members == 1:
            return budget - self.others_spent_s  # the others' spend: idle members' requests still in the window
        mine = self._units(math.ceil(budget / cost_s)) if cost_s > 0 else 0
        return min((mine - 0.5) * cost_s, budget - self.others_spent_s)

    def request_allowance(self, max_requests: int) -> int:
        budget = max(max_requests, self.max_requests)
        if self.members == 1:
            return budget - self.others_requests
        return min(self._units(budget), budget - self.others_requests)

    def concurrency(self, ceiling: int) -> int:
        return max(1, ceiling // self.members)


ALONE = Share()
Reporter = Callable[[], tuple[float, int, float, int]]  # (spent_s, requests, budget_s, max_requests)


class SharedBudget:
    """Membership of one process in one identity's budget, kept by a daemon thread while the process is active."""

    def __init__(self, ledger: BudgetLedger, identity: str, *, heartbeat_s: float, ttl_s: float | None = None,
                 idle_s: float | None = None, wall: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.identity = identity
        self.member = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s if ttl_s is not None else 3 * heartbeat_s
        self.idle_s = idle_s if idle_s is not None else 3 * heartbeat_s
        self._wall = wall
        self._share = ALONE
        self._reporter: Reporter = lambda: (0.0, 0, 0.0, 0)
        self._busy: Callable[[], bool] = lambda: False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._joined = threading.Event()
        self._last_active = 0.0
        self._member_now = False
        self._thread: threading.Thread | None = None
        self.storage_failures = 0
        self.join_settle_s = 0.25
        self._gate: Gate | None = None

    def attach(self, reporter: Reporter, busy: Callable[[], bool] = lambda: False) -> None:
        """``reporter``: the limiter's own figures, read at each heartbeat; ``busy``: it has requests in flight or
        waiting (a process waiting for its share is not idle)."""
        self._reporter = reporter
        self._busy = busy

    def attach_gate(self, gate: Gate) -> None:
        """The identity's Retry-After gate in this process: its blocks are published, the others' are held."""
        self._gate = gate
        gate.on_block.append(lambda seconds: self._wake.set())  # tell the others now, not at the next beat

    @property
    def share(self) -> Share:
        return self._share

    def active(self, *, wait_s: float = 5.0) -> None:
        """The process is about to spend the budget. The first time (or after an idle spell) it joins, and waits
        up to ``wait_s`` for the first view of the other members, so that it does not spend as if alone."""
        with self._lock:
            self._last_active = time.monotonic()
            joined = self._member_now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shared-budget", daemon=True)
                self._thread.start()
        if not joined:
            self._wake.set()
            self._joined.wait(wait_s)

    def sent(self) -> None:
        """A request was just sent: publish at once rather than at the next beat, so that the others see it in
        their next view (a member deciding on a view without it may spend the same room: a 429 for the identity)."""
        if self._member_now:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.heartbeat_s)
            self._wake.clear()
            with self._lock:
                idle = time.monotonic() - self._last_active > self.idle_s and not self._busy()
            if idle:
                # Leave only once its spend has left the window: Dataverse still counts it, so must the others.
                spent_s, requests, _, _ = self._reporter()
                idle = spent_s <= 0 and requests == 0
            try:
                if idle:
                    if self._member_now:
                        self.ledger.leave(self.identity, self.member)
                        self._member_now = False
                        self._joined.clear()
                        self._share = ALONE
                    continue
                if self._member_now:
                    self.beat()
                else:
                    self._join()
            except Exception as exc:  # storage trouble: keep the last share, try again at the next beat
                self.storage_failures += 1
                if self.storage_failures == 1:
                    logger.warning("shared budget: storage failed (%s); keeping the last share", exc)
                self._joined.set()

    def _join(self) -> None:
        """The first beat, and one more a moment later: members that joined in between (several instances start
        together) are seen before this one spends more than its first request."""
        self.beat()
        time.sleep(min(self.heartbeat_s, self.join_settle_s))
        self.beat()

    def beat(self) -> Share:
        """Publish this process's figures and read every live member's (one write and one query)."""
        spent_s, requests, budget_s, max_requests = self._reporter()
        now = self._wall()
        blocked = self._gate.blocked_for() if self._gate is not None else 0.0
        with self._lock:
            wanting = self._busy() or time.monotonic() - self._last_active <= self.idle_s
        self.ledger.publish(self.identity, MemberReport(self.member, now, spent_s, requests, budget_s, max_requests,
                                                        now + blocked if blocked > 0 else 0.0, wanting))
        others = [m for m in self.ledger.members(self.identity)
                  if m.member != self.member and now - m.heartbeat <= self.ttl_s]
        wanting_ids = sorted([self.member, *(m.member for m in others if m.wanting)])
        others_block = max([0.0, *(m.blocked_until - now for m in others)])
        if others_block > 0 and self._gate is not None:
            self._gate.hold(others_block)
        # The whole requests are split among the members that want to send; an idle one's spend, still in the
        # window, counts among the others' (Dataverse counts it) but claims no share.
        previous = self._share
        self._share = Share(members=len(wanting_ids), rank=wanting_ids.index(self.member),
                            others_spent_s=sum(m.spent_s for m in others),
                            others_requests=sum(m.requests for m in others),
                            budget_s=max([budget_s, *(m.budget_s for m in others)]),
                            max_requests=max([max_requests, *(m.max_requests for m in others)]))
        if (self._share.members, self._share.rank) != (previous.members, previous.rank):
            logger.debug("shared budget: %d member(s) want to send, this one is rank %d (others spent %.2f s, "
                         "%d requests in the window)", self._share.members, self._share.rank,
                         self._share.others_spent_s, self._share.others_requests)
        if self._member_now:
            self._joined.set()
        self._member_now = True
        return self._share
