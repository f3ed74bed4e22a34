"""Operator actions shared by the command line and the admin HTTP endpoints.

Replay parked records (one, a selection, or all), pause and resume a template, retry parked records
whose cause may have gone away (a missing currency that now exists, throttling, outages), approve the
deletes a full scan held back (mass-delete guard), and break the run lease a dead run left behind.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from shared.messages.events import WorkItem
from shared.observability import log
from shared.runtime import Runtime
from shared.state.store import ConcurrencyConflict, decode_key, split_parked_key
from shared.sync.runs import ALL, DIRECTION_IN, DIRECTION_OUT, MAX_CONFLICT_ROUNDS, scope_of

logger = logging.getLogger("loyaltysync.operations")

# Validation failures come back on every full scan anyway; these are worth a quicker retry.
RETRIABLE = frozenset({"lookup_missing", "throttled", "server", "transport", "conflict"})


@dataclass(frozen=True)
class ReplayResult:
    template: str
    key: str
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def parked_entry(entity: dict[str, Any]) -> dict[str, Any]:
    """A parked record as operators see it."""
    names = ("key", "direction", "error_class", "error", "attempts", "first_failed", "last_failed", "source",
             "correlation_id", "payload")
    return {"template": entity["PartitionKey"], "row_key": entity["RowKey"], **{n: entity.get(n) for n in names}}


def replay(runtime: Runtime, template: str | None = None, row_keys: list[str] | None = None,
           error_classes: frozenset[str] | None = None) -> list[ReplayResult]:
    """Re-sync parked records from Commerce's current state; each one leaves the table when it lands."""
    results: list[ReplayResult] = []
    for entity in list(runtime.state.parked.all(template)):
        name, row_key = entity["PartitionKey"], entity["RowKey"]
        if row_keys is not None and row_key not in row_keys:
            continue
        if error_classes is not None and entity.get("error_class") not in error_classes:
            continue
        if runtime.catalog.get(name) is None:
            results.append(ReplayResult(name, row_key, "skipped", "the template no longer exists"))
            continue
        if row_key.startswith("invalid-key:"):
            results.append(ReplayResult(name, row_key, "skipped", "the record had no usable key; fix it in Commerce"))
            continue
        direction, key = split_parked_key(row_key)
        if direction == "dataverse_to_fo":
            # The failed write was a Dataverse edit on its way to Commerce: replay it from Dataverse, never
            # by syncing Commerce over it.
            outcome = runtime.inbound(name).replay(key)
            if outcome == "not_found":
                runtime.state.parked.unpark(name, row_key)
        else:
            engine = runtime.outbound(name)
            outcome = engine.sync_key(engine.plan.key_as_dict(decode_key(key)), source="replay")
        results.append(ReplayResult(name, row_key, outcome, still_refused(runtime, entity) if outcome == "parked"
                                    else ""))
    if row_keys is not None:
        found = {r.key for r in results}
        results += [ReplayResult(template or "", k, "not_found", "no parked record with that key") for k in row_keys
                    if k not in found]
    log(logger, logging.INFO, "replay finished", template=template or "*", replayed=len(results),
        landed=sum(r.outcome in ("written", "unchanged", "deleted") for r in results))
    return results


def still_refused(runtime: Runtime, before: dict[str, Any]) -> str:
    """Why a replayed record was parked again: ``still refused: <reason>`` (the reason it is parked with now)."""
    again = runtime.state.parked.get(before["PartitionKey"], before["RowKey"])
    reason = (again or {}).get("error") or before.get("error") or "no reason recorded"
    return f"still refused: {' '.join(str(reason).split())}"


def retry_parked(runtime: Runtime) -> list[ReplayResult]:
    return replay(runtime, error_classes=RETRIABLE)


def pause(runtime: Runtime, template: str, *, by: str) -> None:
    runtime.state.callbacks.set_paused(template, True, by=by)
    log(logger, logging.WARNING, "template paused; callbacks are queued and held", template=template, by=by)


def resume(runtime: Runtime, template: str, *, by: str) -> int:
    """Unpause, then put the held backlog back on the queue in arrival order; returns how many."""
    runtime.state.callbacks.set_paused(template, False, by=by)
    count = 0
    for order_key, message in list(runtime.state.callbacks.held_items(template)):
        runtime.queues.send(WorkItem.model_validate_json(message))
        runtime.state.callbacks.release_held(template, order_key)
        count += 1
    log(logger, logging.WARNING, "template resumed; backlog re-queued in order", template=template, by=by, items=count)
    return count


class OperatorError(ValueError):
    """An operator action named a scope that does not fit the template (the CLI's usage error, a 400)."""


class NothingToDo(RuntimeError):
    """An operator action found nothing to act on (no deletes held): the CLI exits 1, the endpoint answers 409."""


def scope_for(runtime: Runtime, template: str, company: str | None) -> str:
    """The outbound scope an operator names: the company of a company-specific template, else ``all``."""
    if runtime.catalog.plan(template).company_specific:
        if not company:
            raise OperatorError(f"{template} is synced per legal entity: name the company")
        return scope_of(company.lower())
    if company and company.lower() != ALL:
        raise OperatorError(f"{template} is not company-specific: name no company")
    return ALL


@dataclass(frozen=True)
class Approval:
    template: str
    scope: str
    deletes: int
    held_run: str
    approved_by: str
    approved_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def approve_deletes(runtime: Runtime, template: str, company: str | None, *, by: str) -> Approval:
    """Consent to the deletes the last run of a scope held back: the next run of the scope may delete that many
    more than the guard allows (it counts again first: records back in Commerce are not deleted). Recorded on
    the watermark with who and when; ``NothingToDo`` when no deletes are held."""
    scope = scope_for(runtime, template, company)
    watermarks = runtime.state.watermarks
    for _ in range(MAX_CONFLICT_ROUNDS):
        mark = watermarks.get(template, DIRECTION_OUT, scope)
        if not mark.held_deletes:
            raise NothingToDo(f"no deletes held for {template}/{scope}")
        mark.approved_deletes = mark.held_deletes
        mark.approved_by = by
        mark.approved_at = runtime.state.clock.now().isoformat()
        mark.approved_run = mark.held_run
        mark.approval_spent_by = ""
        try:
            watermarks.save(mark)
        except ConcurrencyConflict:
            continue  # a run renewed its lease or finished meanwhile: read again
        log(logger, logging.WARNING, "held deletes approved; the next run of the scope makes them", template=template,
            scope=scope, deletes=mark.held_deletes, held_run=mark.held_run, by=by)
        return Approval(template, scope, mark.held_deletes, mark.held_run, by, mark.approved_at)
    raise ConcurrencyConflict(f"watermark {template}/{scope} kept changing; try again")


@dataclass(frozen=True)
class BrokenLease:
    template: str
    direction: str
    scope: str
    broken: bool  # False: no run held a lease
    run: str = ""  # the run that held it
    until: str = ""
    expired: bool = False  # the lease had run out already (the next run would have taken it over anyway)
    open_run: str = ""  # the unfinished run the next run resumes from its checkpoints

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def break_lease(runtime: Runtime, template: str, company: str | None, directions: list[str], *,
                by: str) -> list[BrokenLease]:
    """Release the lease a dead run (a killed process) left on a scope, so the next run need not wait for it
    to expire. Nothing else changes: the open run and its checkpoints stay, and the next run resumes them.
    A run still alive loses the lease at its next renewal and stops."""
    results: list[BrokenLease] = []
    for direction in directions:
        scope = scope_for(runtime, template, company) if direction == DIRECTION_OUT else ALL
        before = runtime.state.watermarks.break_lease(template, direction, scope)
        if before is None:
            results.append(BrokenLease(template, direction, scope, broken=False))
            continue
        expired = not before.lease_live(runtime.state.clock.now())
        results.append(BrokenLease(template, direction, scope, broken=True, run=before.lease_owner,
                                   until=before.lease_until, expired=expired, open_run=before.open_run))
        log(logger, logging.WARNING, "run lease broken by an operator", template=template, direction=direction,
            scope=scope, run_id=before.lease_owner, lease_until=before.lease_until, expired=expired,
            open_run=before.open_run or "-", by=by)
    return results


DIRECTIONS = {"outbound": [DIRECTION_OUT], "inbound": [DIRECTION_IN], "both": [DIRECTION_OUT, DIRECTION_IN]}
