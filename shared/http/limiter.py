"""Adaptive concurrency for one identity against Dataverse (protocols.md §2.12, §6.1).

Additive increase, multiplicative decrease: start low, add one slot after a run of successes, halve on
a 429, follow ``x-ms-dop-hint`` as the ceiling, and never exceed 52 (the per-user concurrency limit).

Pacing by the budget Dataverse reports: every response carries the execution time left in the window
(``x-ms-ratelimit-time-remaining-xrm-requests``). While requests are in flight, a new one waits unless
what is left, less what the requests in flight are expected to use (the average duration of recent
responses), still pays for it; the service only refuses once the budget is spent (limits are enforced
after the fact), so this keeps the last requests of a window from running into a 429.
Hand-written: it is 40 lines and must see the service's own headers, which no pool library does.
"""

from __future__ import annotations

import threading

import requests

SERVICE_MAX_CONCURRENCY = 52


class AdaptiveLimiter:
    def __init__(self, start: int = 2, ceiling: int = SERVICE_MAX_CONCURRENCY, successes_per_step: int = 4) -> None:
        self.ceiling = max(1, min(ceiling, SERVICE_MAX_CONCURRENCY))
        self.limit = max(1, min(start, self.ceiling))
        self.successes_per_step = successes_per_step
        self.in_flight = 0
        self.throttled = 0
        self.peak = 0
        self._successes = 0
        self._cond = threading.Condition()
        self.time_remaining_s: float | None = None  # execution time left in the window, as last reported
        self.cost_s = 0.0  # average duration of a recent successful request

    def _budget_short(self) -> bool:
        if self.time_remaining_s is None or self.in_flight == 0:
            return False  # nothing known, or nothing in flight to wait for
        return self.time_remaining_s - self.cost_s * self.in_flight < self.cost_s

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= self.limit or self._budget_short():
                self._cond.wait()
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
