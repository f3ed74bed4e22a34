"""Adaptive concurrency for one identity against Dataverse (protocols.md §2.12, §6.1).

Additive increase, multiplicative decrease: start low, add one slot after a run of successes, halve on
a 429, follow ``x-ms-dop-hint`` as the ceiling, and never exceed 52 (the per-user concurrency limit).
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

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= self.limit:
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
