"""``<prefix>watermarks``: one entity per template, direction and scope: the run lease, the last run's
outcome, and where the next run resumes. Every write carries the entity's ETag, so overlapping runs never
move a watermark backwards. The one implementation of taking and renewing a run's lease lives here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient

from shared.clock import Clock
from shared.state.keys import ConcurrencyConflict
from shared.state.transactions import create_or_replace


@dataclass
class Watermark:
    """A template's progress in one direction and scope (a legal entity, or ``all``)."""

    template: str
    direction: str
    scope: str
    run_seq: int = 0
    initial_completed_at: str = ""
    last_run_id: str = ""
    last_run_started: str = ""
    last_run_finished: str = ""
    last_status: str = ""
    last_counts: str = "{}"  # stored as JSON text (Table Storage has no nested values); read with ``counts``
    last_error: str = ""  # why the last run failed (empty once one succeeds)
    lease_owner: str = ""
    lease_until: str = ""
    delta_link: str = ""  # Dataverse -> F&O: where the change feed resumes
    open_run: str = ""  # F&O -> Dataverse: a paged scan not yet finalised (its checkpoints let it resume)
    last_failed_at: str = ""  # when the run that left ``last_error`` failed
    # Deletes a full scan held back (more than the mass-delete guard allows): kept until a run closes without a hold.
    held_deletes: int = 0  # how many (0: nothing held)
    held_states: int = 0  # of how many synced records of the scope
    held_run: str = ""
    held_at: str = ""
    # An operator's consent to the held deletes: the next run may delete this many more than the guard allows.
    approved_deletes: int = 0
    approved_by: str = ""
    approved_at: str = ""
    approved_run: str = ""  # the held run it was given for
    approval_spent_by: str = ""  # the run that used it (or found more to delete); empty while it is pending
    etag: str | None = None

    @property
    def approval_pending(self) -> bool:
        """An approval no run has used yet."""
        return bool(self.approved_at) and not self.approval_spent_by

    def lease_live(self, now: datetime) -> bool:
        """A run holds this scope's lease now."""
        return bool(self.lease_owner and self.lease_until and datetime.fromisoformat(self.lease_until) > now)

    @property
    def row_key(self) -> str:
        return f"{self.direction}.{self.scope}"

    @property
    def counts(self) -> dict[str, int]:
        """The last completed run's counts."""
        return {k: int(v) for k, v in json.loads(self.last_counts or "{}").items()}

    def to_entity(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.__dict__.items() if k not in ("etag",)}
        return {"PartitionKey": self.template, "RowKey": self.row_key, **fields}

    @classmethod
    def from_entity(cls, entity: Any) -> Watermark:
        known = {k: entity[k] for k in cls.__dataclass_fields__ if k != "etag" and k in entity}
        return cls(**known, etag=entity.metadata.get("etag"))


class Watermarks:
    def __init__(self, table: TableClient, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def get(self, template: str, direction: str, scope: str) -> Watermark:
        try:
            entity = self.table.get_entity(template, f"{direction}.{scope}")
        except ResourceNotFoundError:
            return Watermark(template=template, direction=direction, scope=scope)
        return Watermark.from_entity(entity)

    def all(self) -> list[Watermark]:
        return [Watermark.from_entity(e) for e in self.table.list_entities()]

    def save(self, mark: Watermark) -> Watermark:
        """Write ``mark`` if nobody changed it since it was read; raise ``ConcurrencyConflict`` otherwise."""
        try:
            mark.etag = create_or_replace(self.table, mark.to_entity(), mark.etag)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ConcurrencyConflict(f"watermark {mark.template}/{mark.row_key} changed meanwhile") from exc
        return mark

    def delete(self, mark: Watermark) -> None:
        """Remove ``mark`` if nobody changed it since it was read; raise ``ConcurrencyConflict`` otherwise."""
        try:
            self.table.delete_entity(mark.template, mark.row_key, etag=mark.etag,
                                     match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise ConcurrencyConflict(f"watermark {mark.template}/{mark.row_key} changed meanwhile") from exc

    # -- the run lease ---------------------------------------------------------------------------------

    def acquire_lease(self, template: str, direction: str, scope: str, owner: str, lease_s: int,
                      *, mark: Watermark | None = None) -> Watermark | None:
        """Take the run lease for one scope; None while another run holds an unexpired lease."""
        mark = mark or self.get(template, direction, scope)
        if mark.lease_live(self.clock.now()):
            return None
        mark.lease_owner = owner
        mark.lease_until = (self.clock.now() + timedelta(seconds=lease_s)).isoformat()
        try:
            return self.save(mark)
        except ConcurrencyConflict:
            return None

    def renew_lease(self, template: str, direction: str, scope: str, owner: str, lease_s: int) -> bool:
        """Extend ``owner``'s lease when less than half of it is left (several workers of one fanned-out run
        may call this at once); False when another run holds the lease now."""
        for _ in range(3):
            mark = self.get(template, direction, scope)
            if mark.lease_owner != owner:
                return False
            if mark.lease_until and datetime.fromisoformat(mark.lease_until) > self.clock.now() + timedelta(seconds=lease_s / 2):
                return True
            mark.lease_until = (self.clock.now() + timedelta(seconds=lease_s)).isoformat()
            try:
                self.save(mark)
                return True
            except ConcurrencyConflict:
                continue  # another worker renewed it meanwhile: read again
        return True

    def break_lease(self, template: str, direction: str, scope: str) -> Watermark | None:
        """Release the scope's lease whoever holds it (an operator's action for a run that died): the watermark
        keeps everything else, so the open run and its checkpoints stay resumable. Returns the watermark as it
        was (its ``lease_owner`` and ``lease_until``), or None when no run held a lease."""
        for _ in range(3):
            mark = self.get(template, direction, scope)
            if not mark.lease_owner:
                return None
            before = Watermark(**{**mark.__dict__})
            mark.lease_owner = ""
            mark.lease_until = ""
            try:
                self.save(mark)
                return before
            except ConcurrencyConflict:
                continue  # the run renewed or finished meanwhile: read again
        raise ConcurrencyConflict(f"watermark {template}/{direction}.{scope} kept changing; try again")
