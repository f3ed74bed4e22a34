"""Adaptive concurrency for one identity against Dataverse (protocols.md §2.12, §6.1).

Additive increase, multiplicative decrease: start low, add one slot after a run of successes, halve on
a 429, follow ``x-ms-dop-hint`` as the ceiling, and never exceed 52 (the per-user concurrency limit).

Pacing by the budget Dataverse reports: every response carries the execution time left in the window
(``x-ms-ratelimit-time-remaining-xrm-requests``). While requests are in flight, a new one waits unless
what is left, less what the requests in flight are expected to use (the average duration of recent
responses), still pays for it; the service only refuses once the budget is spent (limits are enforced
after the fact), so this keeps the last requests of a window from running into a 429. With nothing in
flight and the budget spent, it waits about as long as the window takes to free what one request
needs (``SYNC_DATAVERSE_WINDOW_S``, 300 s in Dataverse, which the service does not report).
Hand-written: it is 40 lines and must see the service's own headers, which no pool library does.
"""

from __future__ import annotations

import threading
import time

import requests

SERVICE_MAX_CONCURRENCY = 52


class AdaptiveLimiter:
    def __init__(self, start: int = 2, ceiling: int = SERVICE_MAX_CONCURRENCY, successes_per_step: int = 4,
                 window_s: float = 300.0) -> None:
        self.ceiling = max(1, min(ceiling, SERVICE_MAX_CONCURRENCY))
        self.limit = max(1, min(start, self.ceiling))
        self.successes_per_step = successes_per_step
        self.in_flight = 0
        self.throttled = 0
        self.peak = 0
        self._successes = 0
        self._cond = threading.Condition()
        self.time_remaining_s: float | None = None  # execution time left in the window, as last reported
        self.reported_at = 0.0  # when (monotonic)
        self.budget_s = 0.0  # the most execution time ever reported left: the window's whole budget
        self.window_s = window_s  # the service-protection window (300 s in Dataverse; not reported by it)
        self.cost_s = 0.0  # average duration of a recent successful request

    def _wait_s(self) -> float | None:
        """0: go; None: wait for a response; > 0: wait that long (nothing in flight, budget spent)."""
        if self.time_remaining_s is None or self.cost_s == 0:
            return 0.0
        short = self.cost_s * (self.in_flight + 1) - self.time_remaining_s
        if short <= 0:
            return 0.0
        if self.in_flight:
            return None
        # Nothing in flight, so no fresher figure is coming: wait until the window has freed about enough
        # (the budget frees at roughly budget/window per second), then go.
        ready = self.reported_at + short * self.window_s / max(self.budget_s, 1e-6)
        return max(0.0, ready - time.monotonic())

    def acquire(self) -> None:
        with self._cond:
            while True:
                wait = None if self.in_flight >= self.limit else self._wait_s()
                if wait == 0.0:
                    break
                self._cond.wait(timeout=wait)  # None: until a response or a release
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def observe(self, response: requests.Response) -> None:
        """Called with every response of the identity (retried ones included)."""
        with self._cond:
            remaining = response.headers.get("x-ms-ratelimit-time-remaining-xrm-requests")
            if remaining:
                try:
                    self.time_remaining_s = float(remaining)
                    self.reported_at = time.monotonic()
                    self.budget_s = max(self.budget_s, self.time_remaining_s)
                except ValueError:
                    self.time_remaining_s = None
            if response.status_code < 400:
                elapsed = response.elapsed.total_seconds()
                self.cost_s = elapsed if self.cost_s == 0 else 0.7 * self.cost_s + 0.3 * elapsed
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
