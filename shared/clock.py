"""Time, injectable: leases, run durations and the limiter's window read it here, so tests can move it."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock time (UTC, for what is stored) and a monotonic clock (for durations)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = Clock()
