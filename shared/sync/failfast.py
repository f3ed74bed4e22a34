"""Fail fast: a full scan whose first records all fail the same way stops instead of parking every record.

When the first ``SYNC_FAIL_FAST_RECORDS`` records (20 by default) of a run all fail with the same error class
(validation, lookup_missing, throttled, ...), the cause is almost certainly one for all of them: a template
that does not fit the table, a missing reference row, an outage. Parking the whole entity set would bury the
one reason under a million parked records. So the run stops as ``failed`` with that reason; the records already
parked stay parked (the next run retries them anyway). One success, or a second error class, disarms the guard
for the rest of the run. In place the guard spans the run; fanned out, each key range has its own.

Records parked for a reason in their data wait for a change in Commerce before a scan sends them again
(``shared.sync.parking``); those parked by a run this guard stopped do not: their cause is one for all, and fixing it
changes nothing in Commerce.

An unchanged record counts as a success: it landed before with this template against these services, so when an
ordinary re-run's changed records then fail one way, the cause is in their data, not the configuration; they are
parked, each with its reason, and the run completes (a setup that broke since is what the preflight catches).
"""

from __future__ import annotations

import threading

from shared.sync.parking import error_class_of, reason_of


class RunAborted(RuntimeError):
    """The first records of a run all failed the same way: the run stops as failed, with the reason. ``keys``: the
    records parked for it (their cause is one for all, so they do not wait for a change in Commerce)."""

    def __init__(self, message: str, keys: list[str] | None = None) -> None:
        super().__init__(message)
        self.keys = keys if keys is not None else []


class FailFast:
    """Watches the outcomes of a run's records (thread-safe: chunks are written concurrently)."""

    def __init__(self, limit: int, *, setting: str = "SYNC_FAIL_FAST_RECORDS") -> None:
        self.limit = limit
        self.setting = setting
        self._lock = threading.Lock()
        self._armed = limit > 0
        self._failures = 0
        self._error_class: str | None = None
        self._tripped: RunAborted | None = None
        self._keys: list[str] = []  # the records that failed while armed

    def succeeded(self) -> None:
        """A record landed (written, unchanged, deleted, a conflict resolved): the cause is not one for all."""
        with self._lock:
            self._armed = False

    def failed(self, exc: BaseException, key: str | None = None) -> None:
        """A record (``key``) was parked with ``exc``. Raises ``RunAborted`` on the ``limit``-th failure of one error
        class before any success, and for every failure after that (chunks in flight stop parking)."""
        with self._lock:
            if self._tripped is not None:
                self._failures += 1
                if key is not None:
                    self._tripped.keys.append(key)
                raise self._tripped
            if not self._armed:
                return
            if key is not None:
                self._keys.append(key)
            error_class = error_class_of(exc)
            if self._error_class not in (None, error_class):
                self._armed = False
                return
            self._error_class = error_class
            self._failures += 1
            if self._failures < self.limit:
                return
            self._armed = False
            self._tripped = RunAborted(
                f"the first {self._failures} records all failed with error class {error_class} (the last: "
                f"{reason_of(exc)}); stopped instead of parking every record, the {self._failures} stay parked. Fix "
                f"the cause and run again ({self.setting}=0 parks every record instead)", self._keys)
            raise self._tripped

    @property
    def tripped(self) -> bool:
        return self._tripped is not None

    @property
    def failures(self) -> int:
        """Records parked before the guard was disarmed or tripped (after a trip: every record parked so far, since
        none landed)."""
        return self._failures
