"""A clock tests move by hand (leases expire, windows pass) instead of editing stored times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.clock import Clock


class ManualClock(Clock):
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._monotonic = 1_000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
