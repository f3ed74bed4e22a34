"""Auto-pause: a burst of failures pauses the template, as dual-write's alerts can pause a map.

More than ``SYNC_AUTO_PAUSE_FAILURES`` application failures (records parked, in either direction or by the
callback worker) of one template within ``SYNC_AUTO_PAUSE_MINUTES`` set the template's pause
flag (the one ``pause``/``resume`` use), with ``changed_by = auto-pause`` and the reason: the count, the
window and the last error. From then on timers skip the template and its callbacks are held, nothing lost;
a run already going finishes (its failures stay parked). ``resume`` is the one action that undoes it, and
failures from before the resume no longer count. dual-write's example is 10 application errors in 15
minutes (docs/domain-notes.md); our default, 100 in 15 minutes, is our choice for a sync whose failures are
kept and replayed rather than lost. As dual-write's alerts distinguish application errors from connectivity
ones, only application failures count (validation, lookup_missing, not_found, conflict, unaddressable_key,
unexpected): a record parked as ``throttled``, ``server`` or ``transport`` waits out an outage and is retried
by the timer on its own, and pausing on it would make every outage need a person to end it.

Several instances fail at once, so the count lives in Table Storage (``<prefix>control``, partition
``burst|<template>``): each process writes its own row per 10-second bucket (no two writers share a row, so
no ETag race), and sums the template's rows of the window at most every few seconds, or at once when its
own count alone is over the limit. Hand-written: it is a counter in two tables, no library does it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from azure.data.tables import TableClient, UpdateMode

from shared.clock import Clock
from shared.http.errors import SERVER, THROTTLED, TRANSPORT
from shared.state.callbacks import CallbackState

logger = logging.getLogger("loyaltysync.sync")

BUCKET_S = 10  # the count's resolution: failures in the bucket of a resume are not counted against it
AUTO_PAUSE_BY = "auto-pause"
TRANSIENT = frozenset({THROTTLED, SERVER, TRANSPORT})  # outages: retried on their own, not counted
# One id per process (Functions instances have WEBSITE_INSTANCE_ID; several workers on one host do not share it).
INSTANCE_ID = f"{os.environ.get('WEBSITE_INSTANCE_ID', '')[:12]}{uuid.uuid4().hex[:12]}"


def _bucket(moment: datetime) -> int:
    return math.floor(moment.timestamp()) // BUCKET_S


class AutoPause:
    """Counts one process's failures per template and pauses a template whose burst crosses the limit."""

    def __init__(self, control: TableClient, callbacks: CallbackState, clock: Clock, *, failures: int = 0,
                 minutes: float = 15.0, check_every_s: float = 5.0, instance: str = INSTANCE_ID) -> None:
        self.control = control
        self.callbacks = callbacks
        self.clock = clock
        self.failures = failures  # the limit; 0: off
        self.minutes = minutes
        self.check_every_s = check_every_s
        self.instance = instance
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = defaultdict(int)  # (template, bucket) -> this process's failures
        self._checked: dict[str, datetime] = {}

    def configure(self, failures: int, minutes: float) -> None:
        self.failures, self.minutes = failures, minutes

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.minutes)

    def failed(self, template: str, error_class: str, reason: str) -> bool:
        """Count one failure; True when it paused the template. Never raises: a counter must not turn a
        parked record into a lost one (a storage fault here is logged and the count goes on next time)."""
        if self.failures <= 0 or error_class in TRANSIENT:
            return False
        try:
            return self._failed(template, error_class, reason)
        except Exception as exc:
            logger.warning("auto-pause: failure not counted for %s: %s", template, exc)
            return False

    def _failed(self, template: str, error_class: str, reason: str) -> bool:
        now = self.clock.now()
        bucket = _bucket(now)
        oldest = _bucket(now - self.window)
        with self._lock:
            self._counts[(template, bucket)] += 1
            for stale in [k for k in self._counts if k[1] < oldest]:
                del self._counts[stale]
            self.control.upsert_entity({"PartitionKey": self._partition(template),
                                        "RowKey": f"{bucket:012d}|{self.instance}",
                                        "count": self._counts[(template, bucket)], "error_class": error_class,
                                        "reason": reason[:1024]}, mode=UpdateMode.REPLACE)
            mine = sum(n for (name, _), n in self._counts.items() if name == template)
            last = self._checked.get(template)
            if mine <= self.failures and last is not None and (now - last).total_seconds() < self.check_every_s:
                return False
            self._checked[template] = now
        return self._check(template, now, error_class, reason)

    def _check(self, template: str, now: datetime, error_class: str, reason: str) -> bool:
        record = self.callbacks.pause_record(template)
        if record is not None and record["paused"]:
            return False  # paused already (by an operator, or by another instance)
        first = _bucket(now - self.window)
        if record is not None and record["changed_at"]:
            first = max(first, _bucket(datetime.fromisoformat(record["changed_at"])) + 1)  # only since the resume
        total = 0
        partition = self._partition(template)
        for row in self.control.query_entities("PartitionKey eq @pk", parameters={"pk": partition}):
            row_bucket = int(str(row["RowKey"]).split("|", 1)[0])
            if row_bucket >= first:
                total += int(row.get("count", 0))
            elif row_bucket < _bucket(now - self.window):
                self.control.delete_entity(partition, row["RowKey"])  # out of every window: keep the partition small
        if total <= self.failures:
            return False
        why = (f"auto-paused: {total} failures in {self.minutes:g} minutes (more than SYNC_AUTO_PAUSE_FAILURES="
               f"{self.failures}); last: {error_class}: {reason}")
        self.callbacks.set_paused(template, True, by=AUTO_PAUSE_BY, reason=why[:1024])
        logger.error("template auto-paused: %s (resume it when the cause is fixed)", why,
                     extra={"template": template, "failures": total, "error_class": error_class})
        return True

    @staticmethod
    def _partition(template: str) -> str:
        return f"burst|{template}"
