"""Adaptive concurrency for one identity against Dataverse (docs/protocol-notes.md §2.12, §6.1).

Additive increase, multiplicative decrease: start low, add one slot after a run of successes, halve on
a 429, follow ``x-ms-dop-hint`` as the ceiling, and never exceed 52 (the per-user concurrency limit).

Pacing by the execution-time budget. Dataverse admits a request while the execution time of the user's
requests that finished in the last window (300 s) is under the budget (1,200 s), and refuses with a 429
after that (limits are enforced after the fact). The budget is read from the first responses
(``x-ms-ratelimit-time-remaining-xrm-requests``, the most ever reported); the limiter keeps its own
identity's history (finish time, duration) for one window (``SYNC_DATAVERSE_WINDOW_S``; the service does
not report it) and holds a new request while that history plus the requests in flight would reach the
budget, until enough of the history leaves the window. The durations are measured by the client, a
little longer than the server's own count, so it errs on the side of waiting.
The header's live format is ``1,200.00`` (seconds, a grouping separator, two decimals; §2.12): the
separator is removed before parsing. A value that still does not parse is counted
(``unparsed_time_headers``) and logged once at WARNING: without the budget the limiter does not pace.
Pacing by the request count, the same way: the budget is the most ``x-ms-ratelimit-burst-remaining-xrm-requests``
ever reported plus one (the requests left after the one answered), and the limiter keeps its requests' start
times for one window.

Several processes, one identity: with a ``SharedBudget`` (shared/http/budget.py) each process paces by its share
of the execution time, of the request count and of the concurrency ceiling, not by the whole budget.
Hand-written: it is 60 lines and must see the service's own headers, which no pool library does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque

import requests

from shared.http.budget import ALONE, SharedBudget
from shared.http.gate import BURST_REMAINING_HEADER

logger = logging.getLogger("loyaltysync.http")

SERVICE_MAX_CONCURRENCY = 52
TIME_REMAINING_HEADER = "x-ms-ratelimit-time-remaining-xrm-requests"


def parse_time_remaining(value: str) -> float | None:
    """Seconds from the header's live format (``1,200.00``, ``1,199.46``) or a plain number; None if neither."""
    try:
        seconds = float(value.strip().replace(",", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class AdaptiveLimiter:
    def __init__(self, start: int = 2, ceiling: int = SERVICE_MAX_CONCURRENCY, successes_per_step: int = 4,
                 window_s: float = 300.0, budget: SharedBudget | None = None) -> None:
        self.ceiling = max(1, min(ceiling, SERVICE_MAX_CONCURRENCY))
        self.limit = max(1, min(start, self.ceiling))
        self.successes_per_step = successes_per_step
        self.in_flight = 0
        self.throttled = 0
        self.peak = 0
        self.measured_s = 0.0  # the durations of every successful request, as the client measured them
        self._successes = 0
        self._cond = threading.Condition()
        self.budget_s = 0.0  # the most execution time ever reported left: the window's whole budget
        self.window_s = window_s  # the service-protection window (300 s in Dataverse; not reported by it)
        self.cost_s = 0.0  # average duration of a recent successful request
        self._spent: deque[tuple[float, float]] = deque()  # (finished at, seconds) of this window's requests
        self.unparsed_time_headers = 0  # time-remaining headers that could not be read (logged once)
        self.max_requests = 0  # the request budget of a window, as reported (0: not known)
        self._sent: deque[float] = deque()  # when this window's requests started (in flight included)
        self.budget = budget  # shared with the other processes of this identity (None: this process alone)
        self.waiting = 0  # requests waiting in acquire
        self._answered = False  # a response was observed (with or without the budget headers)
        self._cold_until = 0.0  # shared: until when a member that is not first waits for the budget to be known
        if budget is not None:
            budget.attach(self._report, busy=lambda: self.in_flight > 0 or self.waiting > 0)

    def _report(self) -> tuple[float, int, float, int]:
        """What this process spends of the identity's budget, for the other members."""
        with self._cond:
            self._prune(time.monotonic())
            # A request in flight before this process measured one costs the others' average, as in ``_wait_s``:
            # counted at 0 s, a newcomer's first request was invisible to the others, and a second newcomer spent
            # the same room (measured: a 429 with an 8-s Retry-After that held all four workers at the start).
            cost = self.cost_s or (self.budget.share.others_cost_s if self.budget is not None else 0.0)
            spent = sum(seconds for _, seconds in self._spent) + cost * self.in_flight
            return spent, len(self._sent), self.budget_s, self.max_requests

    def _prune(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._spent.popleft()
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()

    @property
    def allowed(self) -> int:
        """Requests this process may have in flight: its adaptive limit, within its share of the ceiling."""
        share = self.budget.share if self.budget is not None else ALONE
        if self.budget is not None and not self._answered and max(self.budget_s, share.budget_s) <= 0:
            # Shared, and no member knows the budget yet: the first member by id probes with one request, the
            # others wait until its answer (published at its next beat) tells them, or 2 s at most.
            return 1 if share.rank == 0 or time.monotonic() >= self._cold_until else 0
        return min(self.limit, share.concurrency(self.ceiling))

    def _wait_s(self) -> float | None:
        """0: go; > 0: wait about that long (then look again); None: wait for a response or a release."""
        now = time.monotonic()
        self._prune(now)
        share = self.budget.share if self.budget is not None else ALONE
        # What a request costs: this process's measure; before its first answer, the other members' average (a
        # newcomer that joins a window the others have filled must wait too, not send because it measured nothing:
        # measured, 4 workers starting one after another drew a 429 with an 8-s Retry-After that way).
        cost = self.cost_s or share.others_cost_s
        by_time = (self._time_wait_s(now, share.time_allowance(self.budget_s, self._unit_cost_s() or cost), cost)
                   if max(self.budget_s, share.budget_s) > 0 and cost > 0 else 0.0)  # else: nothing known yet
        by_count = (self._count_wait_s(now, share.request_allowance(self.max_requests))
                    if max(self.max_requests, share.max_requests) > 0 else 0.0)
        if by_time is None or by_count is None:
            # Only the requests in flight hold the budget (wait for them), or, shared, the others' spend does:
            # look again at the next heartbeat (nothing of this process would wake it).
            return self.budget.heartbeat_s if self.budget is not None and self.in_flight == 0 else None
        wait = max(by_time, by_count)
        if self.budget is not None and wait > 0:
            # Shared: the share may grow before this process's own spend leaves the window (a member went idle,
            # the last key range is left to this one): look again at every heartbeat, not only then (measured:
            # the last worker of a fanned-out run waited 10 s with the whole budget its own).
            return min(wait, self.budget.heartbeat_s)
        return wait

    def _unit_cost_s(self) -> float:
        """What one request costs in the service's count, for splitting a shared budget into whole requests: the
        shortest this window measured (the client's time holds the server's, plus the wait for the answer, which
        grows when the machine is busy), else the running average."""
        return min((seconds for _, seconds in self._spent), default=self.cost_s) or self.cost_s

    def _time_wait_s(self, now: float, allowance: float, cost_s: float) -> float | None:
        excess = sum(seconds for _, seconds in self._spent) + cost_s * self.in_flight - allowance
        if excess < 0:
            return 0.0
        for finished, seconds in self._spent:  # oldest first: when will enough of it have left the window?
            excess -= seconds
            if excess < 0:
                return max(0.001, finished + self.window_s - now)
        return None

    def _count_wait_s(self, now: float, allowance: int) -> float | None:
        excess = len(self._sent) + 1 - allowance  # this request included
        if excess <= 0:
            return 0.0
        if excess > len(self._sent):
            return None
        return max(0.001, self._sent[excess - 1] + self.window_s - now)

    def acquire(self) -> None:
        if self.budget is not None:
            self.budget.active()  # joins the identity's members first (storage), outside the lock
        with self._cond:
            if self._cold_until == 0.0 and self.budget is not None:
                # At most 2 s: the first member may be a crashed process whose row has not expired yet.
                self._cold_until = time.monotonic() + min(3 * self.budget.heartbeat_s, 2.0)
            self.waiting += 1
            began = time.monotonic()
            first: str | None = None
            while True:
                if self.in_flight >= self.allowed:  # a response or a release wakes it; shared, so may a beat
                    wait = self.budget.heartbeat_s if self.budget is not None and self.in_flight == 0 else None
                else:
                    wait = self._wait_s()
                if wait == 0.0:
                    break
                if first is None and logger.isEnabledFor(logging.DEBUG):
                    first = self._describe()
                self._cond.wait(timeout=wait)  # None: until a response or a release
            self.waiting -= 1
            self.in_flight += 1
            self._sent.append(time.monotonic())
            if self.budget is not None:
                self.budget.sent()
            self.peak = max(self.peak, self.in_flight)
            if first is not None and time.monotonic() - began > 1.0:
                logger.debug("limiter: a request waited %.1f s for the budget; when it began to wait: %s",
                             time.monotonic() - began, first)

    def _describe(self) -> str:
        """The figures a wait is decided by (for the DEBUG log)."""
        share = self.budget.share if self.budget is not None else ALONE
        cost = self.cost_s or share.others_cost_s
        return (f"in flight {self.in_flight} of {self.allowed} allowed, spent {sum(s for _, s in self._spent):.2f} s "
                f"and {len(self._sent)} requests in the window, cost {cost:.3f} s (unit {self._unit_cost_s():.3f}), "
                f"time allowance {share.time_allowance(self.budget_s, self._unit_cost_s() or cost):.2f} s of "
                f"{max(self.budget_s, share.budget_s):.2f}, request allowance "
                f"{share.request_allowance(self.max_requests)} of {max(self.max_requests, share.max_requests)}; "
                f"share: {share.members} member(s), rank {share.rank}, others spent {share.others_spent_s:.2f} s "
                f"and {share.others_requests} requests")

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def observe(self, response: requests.Response) -> None:
        """Called with every response of the identity (retried ones included)."""
        with self._cond:
            self._answered = True
            remaining = response.headers.get(TIME_REMAINING_HEADER)
            if remaining:
                seconds = parse_time_remaining(remaining)
                if seconds is not None:
                    self.budget_s = max(self.budget_s, seconds)
                else:
                    self.unparsed_time_headers += 1
                    if self.unparsed_time_headers == 1:
                        logger.warning("Unreadable %s header %r (further ones are only counted): the execution-time "
                                       "budget is read from readable ones only", TIME_REMAINING_HEADER, remaining)
            if response.status_code < 400:
                elapsed = response.elapsed.total_seconds()
                self._spent.append((time.monotonic(), elapsed))
                self.measured_s += elapsed
                self.cost_s = elapsed if self.cost_s == 0 else 0.7 * self.cost_s + 0.3 * elapsed
            burst = response.headers.get(BURST_REMAINING_HEADER)
            if burst and burst.strip().isdigit():
                self.max_requests = max(self.max_requests, int(burst) + 1)
            hint = response.headers.get("x-ms-dop-hint")
            if hint and hint.isdigit():
                self.ceiling = max(1, min(int(hint), SERVICE_MAX_CONCURRENCY))
                self.limit = min(self.limit, self.ceiling)
            if response.status_code == 429:
                self.throttled += 1
                self._successes = 0
                self.limit = max(1, self.limit // 2)
            elif response.status_code < 400:
                self._successes += 1
                if self._successes >= self.successes_per_step and self.limit < self.ceiling:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()
