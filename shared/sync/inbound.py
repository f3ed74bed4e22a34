"""Dataverse -> Commerce: edits made in Dataverse flow back to Commerce, without echoes or lost updates.

The change feed is Dataverse change tracking (docs/protocol-notes.md §2.11): the first run reads every row with
``Prefer: odata.track-changes`` (the baseline), later runs follow the stored delta link, which is this
direction's watermark (ETag-guarded, advanced only after every change below it was handled). An
expired or rejected link is not a crash: the run warns and re-baselines, comparing both sides in full.

For each changed row (``twoway.py`` explains the shared image):

- image hash equal to the last synced one: an echo of this app's own write, or a change to fields that
  do not flow back (``>``/``>>`` rows such as ``msdyn_replacementcardnumber``): nothing to do;
- otherwise Commerce is read by the full key (``dataAreaId`` for levels). If Commerce also changed since
  the last sync (or there is no last sync and the two differ), that is a conflict, recorded and
  resolved by ``SYNC_CONFLICT_POLICY`` (default: Commerce wins, it is the system of record); if not,
  only the changed fields that the map lets flow back are PATCHed, with ``If-Match`` on the row's ETag.
  F&O has no upsert: a row Commerce does not have is POSTed.
- after a write, Commerce is read again and both hashes are recorded, so the change does not come back
  as a Commerce change either. Should F&O have normalised a value, the outbound side writes it to
  Dataverse so both sides end equal.

The baseline (the first run, and the re-baseline after a rejected token) does not read the change feed row by
row: it takes the delta token first, then compares both sides key range by key range, checkpointed, in place or
fanned out over the pages queue (``shared.sync.baseline``), deciding each row with the same ``decide``.

Deleted rows follow ``SYNC_REVERSE_DELETE_POLICY``: ``ignore`` (default; a loyalty card deleted in
Dataverse stays in Commerce, and comes back to Dataverse on the next Commerce change) or ``delete``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.commerce.client import CommerceClient
from shared.dataverse.client import DataverseClient
from shared.http.errors import ApiError, BadRequestError, NotFoundError, PreconditionFailedError
from shared.mapping.model import Direction
from shared.mapping.plan import MappingError, Plan
from shared.messages import PageTask
from shared.observability import log
from shared.preflight import Preflight, PreflightError
from shared.state.checkpoints import RunCheckpoint
from shared.state.store import ConcurrencyConflict, StateStore, SyncedState, decode_key, encode_key, parked_key
from shared.sync.baseline import Baseline
from shared.sync.conflicts import Verdict
from shared.sync.engine import OutboundSync
from shared.sync.parking import Parking
from shared.sync.runs import (
    MAX_CONFLICT_ROUNDS,
    Outcome,
    Progress,
    Run,
    RunStatus,
    RunSummary,
    record_unscoped_failure,
)
from shared.sync.twoway import SharedImage

logger = logging.getLogger("loyaltysync.inbound")

DIRECTION = Direction.TO_COMMERCE.value
SCOPE = "all"  # change tracking is per table, not per company
Enqueue = Callable[[PageTask], None]


@dataclass(frozen=True)
class Decision:
    """What one Dataverse row needs, given Commerce's row (``InboundSync.decide``): ``unchanged`` (Commerce deleted
    it after the last sync: that delete wins), ``create`` (POST), ``equal`` (both hold the same image: record
    both hashes), ``commerce_wins`` (a conflict, recorded: Commerce's content goes to Dataverse) or ``patch``
    (``changes`` to Commerce; ``verdict`` says whether that resolves a conflict Dataverse won)."""

    kind: str
    verdict: Verdict = Verdict.NO_CONFLICT
    changes: dict[str, Any] = field(default_factory=dict)


class InboundSync:
    """Moves one template's Dataverse edits to Commerce."""

    def __init__(self, plan: Plan, commerce: CommerceClient, dataverse: DataverseClient, state: StateStore,
                 outbound: OutboundSync, *, delete_policy: str = "ignore", lease_s: int = 900,
                 preflight: Preflight | None = None, page_size: int | None = None) -> None:
        self.plan = plan
        self.preflight = preflight  # checked before each run (None: not checked)
        self.name = plan.name
        self.entity_set = plan.template.commerce.entity_set
        self.dv_entity_set = plan.template.dataverse.entity_set
        self.commerce = commerce
        self.dataverse = dataverse
        self.state = state
        self.outbound = outbound
        self.images = SharedImage(plan, dataverse)
        self.resolver = outbound.resolver  # one resolver per template, shared by both directions
        self.resolver.register_commerce_side(lambda dv_row: self.apply(dv_row, source="conflict", decided=True))
        self.parking = Parking(state, plan.name, Direction.TO_COMMERCE)
        self.delete_policy = delete_policy
        self.lease_s = lease_s
        self.writable = [row.fo_property for row in plan.template.rows_for(Direction.TO_COMMERCE)
                         if row.fo_property not in plan.key_properties]
        # F&O has no null strings (docs/protocol-notes.md §3.3): an emptied string column is written as "".
        self.strings = frozenset(row.fo_property for row in plan.template.rows_for(Direction.TO_COMMERCE)
                                 if row.fo_type == "string")
        # The first run (and a re-baseline): key ranges of both sides, checkpointed (``shared.sync.baseline``).
        self.baseline = Baseline(self, page_size or outbound.page_size)

    def run(self, *, progress: Progress | None = None) -> RunSummary:
        """One run, here: the change feed since the stored delta link, or the baseline (in key ranges, with
        ``progress`` told the rows compared out of the rows the token pass counted)."""
        begun = self._begin(progress)
        if not isinstance(begun, tuple):
            return begun
        run, plan = begun
        return self.baseline.run(run, plan, progress=progress)

    def start(self, enqueue: Enqueue) -> RunSummary:
        """The timer's run with ``SYNC_FAN_OUT``: the change feed as ``run`` reads it, but a baseline takes its token
        and plans its key ranges here and puts one ``PageTask`` per range on the pages queue (``enqueue``); the page
        workers compare them (``run_task``) and the last one closes the run."""
        begun = self._begin(None)
        if not isinstance(begun, tuple):
            return begun
        run, plan = begun
        return self.baseline.start(run, plan, enqueue)

    def run_task(self, task: PageTask, enqueue: Enqueue | None = None) -> str:
        """One queued task of a fanned-out baseline: a key range, or the rest of its planning (which queues more
        tasks through ``enqueue``); returns what happened (done, planned, duplicate, stale)."""
        return self.baseline.run_task(task, enqueue)

    def _begin(self, progress: Progress | None) -> tuple[Run, RunCheckpoint] | RunSummary:
        """Preflight, lease, then either the change feed (done here: its summary) or the baseline to run: a new one
        (no delta link, or the stored one rejected) or the open one a failed or crashed run left (its checkpoints).
        A one-way template (no field flows to F&O) has nothing to read: a skipped summary, no request, no lease."""
        if self.plan.template.one_way:
            return RunSummary(template=self.name, scope=SCOPE, run_id="", direction=DIRECTION, status=RunStatus.SKIPPED,
                              detail="one-way template: no field flows Dataverse -> F&O")
        if self.preflight is not None:  # a failure is recorded as this direction's failed run, then raised
            try:
                self.preflight.require(self.name)
            except PreflightError as exc:
                record_unscoped_failure(self.state, self.name, DIRECTION, SCOPE, str(exc))
                raise
        run = Run.begin(self.state, self.name, DIRECTION, SCOPE, self.lease_s, resume=self.baseline.open_run_of)
        if isinstance(run, RunSummary):
            return run
        plan = self.baseline.resume(run)
        if plan is not None:
            return run, plan
        delta_link = run.lease.delta_link or None
        mode = "baseline"
        if delta_link is not None:
            try:
                new_link = self._consume(delta_link, run, progress)
            except (BadRequestError, NotFoundError) as exc:
                # An expired or rejected token (0x80044352, or any 400/404 on a delta link): start over.
                log(logger, logging.WARNING, "change-tracking token rejected; re-baselining with a full compare",
                    template=self.name, status=exc.status, code=exc.code, error=exc.reason)
                mode = "rebaseline"
            except Exception as exc:
                run.fail(exc)
                raise
            else:
                return run.finish(advance=True, delta_link=new_link)
        try:
            return run, self.baseline.open(run, mode)
        except Exception as exc:
            run.fail(exc)
            raise

    def _consume(self, delta_link: str | None, run: Run, progress: Progress | None = None) -> str:
        summary = run.summary
        feed = self.dataverse.changes(self.dv_entity_set, select=self.images.select, delta_link=delta_link)
        for entry in feed:
            summary.read()
            if entry.get("@removed"):
                summary.count(self._removed(str(entry.get("id"))))
            else:
                summary.count(self.apply(entry, source="change_feed"))
            run.heartbeat()
            if progress is not None:
                progress(summary, None)
        assert feed.delta_link is not None
        return feed.delta_link

    # -- one Dataverse row -------------------------------------------------------------------------

    def apply(self, dv_row: Mapping[str, Any], *, source: str, decided: bool = False) -> str:
        """Bring Commerce in line with one Dataverse row; returns the outcome.

        ``decided``: a conflict was already recorded and resolved for Dataverse (by the other direction).
        """
        key = self.images.fo_key(dv_row)
        if key is None:
            return self.park(f"dataverse-id:{dv_row.get(self.plan.template.dataverse.primary_id)}",
                              MappingError("key", "the Dataverse row has no complete key (key columns or company)"),
                              source, dv_row)
        fo_key = self.plan.key_of(key)
        row_key = encode_key(fo_key)
        partition = self.outbound.partition(self.plan.company_of(fo_key))
        dataverse_id = dv_row.get(self.plan.template.dataverse.primary_id)
        if self.delete_policy == "delete" and dataverse_id:
            self.state.dataverse_ids.remember(self.name, str(dataverse_id), row_key)
        try:
            image, dv_hash = self.images.from_dataverse(dv_row)
        except MappingError as exc:
            return self.park(row_key, exc, source, dv_row)
        previous = self.state.synced.get(partition, row_key)
        if previous is not None and previous.shared == dv_hash:
            return "unchanged"  # our own write coming back, or nothing that flows to Commerce changed
        try:
            outcome = self._write(key, image, dv_hash, previous, source, decided)
        except (ApiError, MappingError) as exc:
            return self.park(row_key, exc, source, dv_row)
        self.state.parked.unpark(self.name, parked_key(row_key, DIRECTION))  # an earlier failure of this key has landed
        return outcome

    def _write(self, key: dict[str, str], image: dict[str, Any], dv_hash: str, previous: SyncedState | None,
               source: str, decided: bool) -> str:
        row_key = encode_key(self.plan.key_of(key))
        for _ in range(MAX_CONFLICT_ROUNDS):
            current = self.commerce.get(self.entity_set, self.plan.key_as_dict(self.plan.key_of(key)))
            decision = self.decide(row_key, image, dv_hash, previous, current, source, decided)
            if decision.kind == "unchanged":
                return "unchanged"  # deleted in Commerce after the last sync: that delete wins
            if decision.kind == "create":
                return self.create(key, image, previous)
            assert current is not None
            if decision.kind == "equal":
                self.outbound.record_synced(current, previous=previous)  # already equal: just remember it
                return "unchanged"
            if decision.kind == "commerce_wins":
                self.outbound.sync_key(key, source="conflict", decided=True)  # Commerce's content to Dataverse
                return Outcome.CONFLICT
            try:
                self.patch(key, current, decision.changes)
            except PreconditionFailedError:
                log(logger, logging.INFO, "Commerce row changed while writing; re-reading", template=self.name,
                    key=row_key)
                previous = self.state.synced.get(self.outbound.partition(self.plan.company_of(self.plan.key_of(key))),
                                                 row_key)
                continue
            written = self.commerce.get(self.entity_set, self.plan.key_as_dict(self.plan.key_of(key)))
            self.after_write(written or {**current, **decision.changes}, previous)
            log(logger, logging.INFO, "Dataverse edit written to Commerce", template=self.name, key=row_key,
                fields=",".join(sorted(decision.changes)))
            return Outcome.CONFLICT if decision.verdict is not Verdict.NO_CONFLICT else Outcome.WRITTEN
        raise PreconditionFailedError(f"{row_key}: Commerce kept changing; gave up after {MAX_CONFLICT_ROUNDS} tries")

    def decide(self, row_key: str, image: dict[str, Any], dv_hash: str, previous: SyncedState | None,
               current: Mapping[str, Any] | None, source: str, decided: bool) -> Decision:
        """What a Dataverse row whose image differs from the last synced one needs, given Commerce's row now
        (``current``, None: Commerce does not have it). A conflict is recorded here. Both the change feed (after a
        read by key) and the baseline (with the row from its range read) decide here."""
        if current is None:
            return Decision("unchanged" if previous is not None else "create")
        commerce_image, commerce_hash = self.images.from_commerce(current)
        if commerce_hash == dv_hash:
            return Decision("equal")
        verdict = Verdict.NO_CONFLICT if decided else self.resolver.inbound(
            commerce_hash, dv_hash, previous.shared if previous is not None else None)
        if verdict is not Verdict.NO_CONFLICT:
            self.resolver.record(row_key, verdict, commerce=commerce_image, dataverse=image,
                                 detected_by=f"{DIRECTION}/{source}")
            if verdict is Verdict.COMMERCE_WINS:
                return Decision("commerce_wins", verdict)
        return Decision("patch", verdict, {p: self.fo_value(p, image[p]) for p in self.writable
                                           if image.get(p) != commerce_image.get(p)})

    def fo_value(self, prop: str, value: Any) -> Any:
        """What F&O stores for ``value``: ``""`` for an empty string property (F&O has no null strings)."""
        return "" if value is None and prop in self.strings else value

    def create(self, key: dict[str, str], image: dict[str, Any], previous: SyncedState | None) -> str:
        """POST a row Commerce does not have (F&O has no upsert); F&O answers with the row it created."""
        body = {prop: image[prop] for prop in self.writable if image.get(prop) is not None}
        created = self.commerce.create(self.entity_set, {**key, **body})
        self.after_write(created or key, previous)
        log(logger, logging.INFO, "record created in Commerce from Dataverse", template=self.name,
            key=encode_key(self.plan.key_of(key)))
        return "created"

    def patch(self, key: dict[str, str], current: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """PATCH only ``changes``, with ``If-Match`` on the ETag of ``current`` (412: it changed since)."""
        self.commerce.update(self.entity_set, self.plan.key_as_dict(self.plan.key_of(key)), changes,
                             etag=current.get("@odata.etag"))

    def after_write(self, fo_row: Mapping[str, Any], previous: SyncedState | None) -> None:
        """Both sides now hold this; let the outbound side write any value F&O normalised, then record."""
        record = self.plan.to_dataverse(fo_row)
        partition = self.outbound.partition(record.company)
        row_key = encode_key(record.key)
        state = self.state.synced.get(partition, row_key) or previous
        if state is not None and state.content_hash == record.content_hash:
            self.outbound.record_synced(fo_row, previous=state)
            return
        # Write what Commerce now holds to Dataverse too (also records the hashes), so both sides are equal.
        self.outbound.write_row(fo_row, state, source="inbound")

    def replay(self, row_key: str) -> str:
        """Apply a parked Dataverse edit again, from the row as Dataverse holds it now."""
        dv = self.plan.template.dataverse
        if row_key.startswith("dataverse-id:"):
            guid = row_key.removeprefix("dataverse-id:")
            dv_row = self.dataverse.get(self.dv_entity_set, {dv.primary_id: guid}, select=self.images.select,
                                        guid_columns=frozenset({dv.primary_id}))
        else:
            writer = self.outbound.writer
            dv_row = writer.read(writer.key_for(decode_key(row_key)), self.images.select)
        if dv_row is None:
            return "not_found"  # deleted in Dataverse since: nothing left to bring to Commerce
        return self.apply(dv_row, source="replay")

    def _removed(self, dataverse_id: str) -> str:
        if self.delete_policy == "ignore":
            log(logger, logging.INFO, "row deleted in Dataverse; Commerce keeps it (SYNC_REVERSE_DELETE_POLICY=ignore)",
                template=self.name, dataverse_id=dataverse_id)
            return "ignored"
        row_key = self.state.dataverse_ids.key_of(self.name, dataverse_id)
        if row_key is None:
            # Never seen by this direction (deleted before its first change-feed read): nothing to map it to.
            log(logger, logging.WARNING, "row deleted in Dataverse with no known key; nothing deleted in Commerce",
                template=self.name, dataverse_id=dataverse_id)
            return "ignored"
        key = decode_key(row_key)
        partition = self.outbound.partition(self.plan.company_of(key))
        previous = self.state.synced.get(partition, row_key)
        if previous is None or previous.deleting:
            # No synced state (or a tombstone): the outbound side deleted this row itself (it drops the state
            # when it deletes, SYNC_DELETE_POLICY=delete), or the key was never synced. Not an agent's delete.
            self.state.dataverse_ids.forget(self.name, dataverse_id)
            log(logger, logging.INFO, "row deleted in Dataverse by this app (or never synced); Commerce untouched",
                template=self.name, key=row_key, dataverse_id=dataverse_id)
            return "unchanged"
        try:
            outcome = self._delete_in_commerce(key, row_key, previous, dataverse_id)
        except ApiError as exc:
            return self.park(row_key, exc, "change_feed", {"id": dataverse_id, "reason": "deleted"})
        self.state.dataverse_ids.forget(self.name, dataverse_id)
        return outcome

    def _delete_in_commerce(self, key: tuple[str, ...], row_key: str, previous: SyncedState, dataverse_id: str) -> str:
        """An agent deleted a synced row in Dataverse: delete the Commerce row, but only while it is still the
        one last synced (its content unchanged, and the DELETE conditional on the ETag just read), and only
        while Dataverse has no other row for the key (the removed id can be an older row of a key re-created
        and synced since). Otherwise Commerce keeps it and its content goes back to Dataverse."""
        partition = self.outbound.partition(self.plan.company_of(key))
        writer = self.outbound.writer
        if writer.read(writer.key_for(key), [self.plan.template.dataverse.primary_id]) is not None:
            log(logger, logging.INFO, "an older Dataverse row of this key was deleted; the key has a row again",
                template=self.name, key=row_key, dataverse_id=dataverse_id)
            return "unchanged"
        fo_key = self.plan.key_as_dict(key)
        current = self.commerce.get(self.entity_set, fo_key, select=list(self.plan.select_properties))
        if current is not None and self.plan.to_dataverse(current).content_hash != previous.content_hash:
            log(logger, logging.WARNING, "row deleted in Dataverse but changed in Commerce since the last sync; "
                "Commerce keeps it and it is written to Dataverse again", template=self.name, key=row_key)
            self.outbound.sync_key(fo_key, source="conflict", decided=True)
            return "conflict"
        if current is not None:
            try:
                self.commerce.delete(self.entity_set, fo_key, etag=current.get("@odata.etag"))
            except PreconditionFailedError:
                log(logger, logging.INFO, "Commerce row changed while deleting; kept", template=self.name, key=row_key)
                self.outbound.sync_key(fo_key, source="conflict", decided=True)
                return "conflict"
        with contextlib.suppress(ConcurrencyConflict):  # re-synced meanwhile: that state is newer than ours
            self.state.synced.delete(partition, previous)
        log(logger, logging.INFO, "row deleted in Dataverse; deleted in Commerce", template=self.name, key=row_key)
        return "deleted"

    def park(self, row_key: str, exc: Exception, source: str, dv_row: Mapping[str, Any]) -> str:
        return self.parking.park(row_key, exc, source, dv_row)
