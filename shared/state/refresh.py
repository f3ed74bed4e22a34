"""Pending template refreshes (``<prefix>control``, partition ``refresh``, one row per template).

A refresh is a scan of a whole template, asked for by a callback that names no record the app can find (a data
event Dataverse cut for size, a ``Target.Id`` nobody knows). Many such callbacks must not cost many scans: every
request joins the one pending refresh of its template (``request``), and only ``claim`` turns it into a scan,
at most once per minimum interval (``SYNC_REFRESH_MIN_INTERVAL_S``). The row is the only record of a pending
refresh, so none is lost with a queue message; every write carries the row's ETag, so two workers never both
create or both claim it.

Row: ``first_requested_at`` / ``last_requested_at`` (ISO 8601, "" when none is pending), ``requests`` (how many
joined the pending one), ``reason`` (the first request's), ``last_started_at`` (the last claimed refresh),
``last_outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.clock import Clock

PARTITION = "refresh"
_ATTEMPTS = 8  # ETag races are between workers of one template: a handful of rounds settles them


@dataclass(frozen=True)
class PendingRefresh:
    """What a template's refresh row says."""

    template: str
    first_requested_at: str
    last_requested_at: str
    requests: int
    reason: str
    last_started_at: str
    last_outcome: str

    @property
    def pending(self) -> bool:
        return bool(self.first_requested_at)

    def due_at(self, interval_s: float) -> datetime | None:
        """When the pending refresh may start: at once, or ``interval_s`` after the last one started."""
        if not self.pending:
            return None
        first = datetime.fromisoformat(self.first_requested_at)
        if not self.last_started_at:
            return first
        return max(first, datetime.fromisoformat(self.last_started_at) + timedelta(seconds=interval_s))

    def as_dict(self) -> dict[str, Any]:
        return {"template": self.template, "pending": self.pending, "first_requested_at": self.first_requested_at,
                "last_requested_at": self.last_requested_at, "requests": self.requests, "reason": self.reason,
                "last_started_at": self.last_started_at, "last_outcome": self.last_outcome}


class RefreshConflict(RuntimeError):
    """Other workers kept changing the row (an outage-like condition: the message is retried)."""


def _pending(template: str, entity: dict[str, Any] | None) -> PendingRefresh:
    e = entity or {}
    return PendingRefresh(template, str(e.get("first_requested_at", "")), str(e.get("last_requested_at", "")),
                          int(e.get("requests", 0) or 0), str(e.get("reason", "")), str(e.get("last_started_at", "")),
                          str(e.get("last_outcome", "")))


class RefreshRequests:
    def __init__(self, control: TableClient, clock: Clock) -> None:
        self.table = control
        self.clock = clock

    def _read(self, template: str) -> Any:
        """The row as the SDK returns it (with its ETag in ``metadata``), or None."""
        try:
            return self.table.get_entity(PARTITION, template)
        except ResourceNotFoundError:
            return None

    def get(self, template: str) -> PendingRefresh:
        return _pending(template, self._read(template))

    def _write(self, entity: Any, changes: dict[str, Any], template: str) -> bool:
        """Create the row (``entity`` None) or update it under its ETag; False when another worker was first."""
        try:
            if entity is None:
                self.table.create_entity({"PartitionKey": PARTITION, "RowKey": template, **changes})
            else:
                self.table.update_entity({**entity, **changes}, mode=UpdateMode.REPLACE,
                                         etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True

    def request(self, template: str, reason: str) -> bool:
        """Join the template's pending refresh, or make it pending. True when this request made it pending (it was
        none), False when it joined one."""
        for _ in range(_ATTEMPTS):
            entity = self._read(template)
            now = self.clock.now().isoformat()
            current = _pending(template, None if entity is None else dict(entity))
            if current.pending:
                changes: dict[str, Any] = {"last_requested_at": now, "requests": current.requests + 1}
            else:
                changes = {"first_requested_at": now, "last_requested_at": now, "requests": 1, "reason": reason[:200]}
            if self._write(entity, changes, template):
                return not current.pending
        raise RefreshConflict(f"the refresh row of {template} kept changing")

    def claim(self, template: str, interval_s: float) -> PendingRefresh | None:
        """Take the pending refresh when it is due (the interval since the last one started has passed): it is no
        longer pending and ``last_started_at`` is now. Returns what was pending (None: nothing pending, not due yet,
        or another worker claimed it)."""
        for _ in range(_ATTEMPTS):
            entity = self._read(template)
            if entity is None:
                return None
            current = _pending(template, dict(entity))
            due = current.due_at(interval_s)
            now = self.clock.now()
            if due is None or now < due:
                return None
            changes = {"first_requested_at": "", "last_requested_at": "", "requests": 0, "reason": "",
                       "last_started_at": now.isoformat()}
            if self._write(entity, changes, template):
                return current
            # a request joined meanwhile (claimed with it next round), or another worker claimed it
        raise RefreshConflict(f"the refresh row of {template} kept changing")

    def finished(self, template: str, outcome: str) -> None:
        """Note how the last claimed refresh went (bookkeeping: a lost write only loses this note)."""
        entity = self._read(template)
        if entity is not None:
            self._write(entity, {"last_outcome": outcome}, template)

    def all(self) -> list[PendingRefresh]:
        return [_pending(str(e["RowKey"]), dict(e))
                for e in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})]
