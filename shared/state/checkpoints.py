"""Page checkpoints of a full outbound scan or an inbound baseline, in Table Storage (``<prefix>pages``).

One partition per run (``<template>.<scope>.<run id>``):

* a ``plan`` row: how many key ranges were planned, whether planning finished, the total from ``$count``,
  who finalises, how many delete checks the finaliser split the delete search into, who closes the run;
* one row per key range (``000000``, ``000001``, ...): its bounds, its status (``planned`` or ``done``), its
  counts and, once done, the 8-byte digests of the keys it saw, which the delete search needs;
* one row per delete check (``x0000``, ...): the state buckets it searches, its status and counts (the
  delete candidates it found and the states it read among them);
* once the delete search is decided (the plan row's ``decision``), one row per delete pass (``y0000``, ...):
  the buckets of a check that found candidates, where the deletes are made.

An inbound baseline (``shared.sync.baseline``) keeps its plan row (with the change-tracking token it took first)
and one row per key range the same way; it has no delete search.

A crashed run resumes from these rows: ranges and checks marked done are not done again. The rows of a run
are removed once it is closed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.state.transactions import MAX_OPERATIONS, Operation, create_or_replace, submit

DIGEST_BYTES = 8
_DIGESTS_PER_PROPERTY = 8000  # a binary property holds 64 KiB
PLAN_ROW = "plan"
_PAGE_ROWS = "RowKey lt 'a'"  # key ranges' row keys are digits: below "plan" and the delete checks' "x..."
_CHECK_ROWS = "RowKey ge 'x' and RowKey lt 'y'"
_PASS_ROWS = "RowKey ge 'y' and RowKey lt 'z'"


class CheckpointConflict(Exception):
    """Another worker changed the plan row since it was read."""


def all_done(parts: Sequence[PageCheckpoint] | Sequence[DeleteCheck], expected: int) -> bool:
    """Every one of the ``expected`` ranges (or delete checks) is recorded and done."""
    return len(parts) >= expected and all(p.status == PageStatus.DONE for p in parts)


class PageStatus(StrEnum):
    """A key range's or a delete check's state."""

    PLANNED = "planned"
    DONE = "done"


@dataclass
class RunCheckpoint:
    """The plan row of one run of a full scan (not the template's compiled ``Plan``)."""

    template: str
    scope: str
    run_id: str
    planned: int = 0
    planning_done: bool = False
    total: int = -1  # from $count; -1: unknown
    finalizing: bool = False  # claimed (by an ETag-guarded write) by the party that searches for deletes
    last_through: tuple[Any, ...] | None = None  # the last planned range's upper bound (None before the first)
    started_at: str = ""
    mode: str = "incremental"
    delete_checks: int = 0  # > 0: the delete search was split into this many checks, run as tasks
    closing: bool = False  # claimed by the party that closes the run once every delete check is done
    decision: str = ""  # what the delete search decided (JSON, written once by an ETag claim); empty: undecided
    delete_passes: int = 0  # > 0: the decision queued this many delete passes
    # The scope held no synced state when the run was planned (a first load): every state at its end was made
    # during it, by its ranges or by callbacks, so no state is a delete candidate and the search is skipped.
    no_prior_states: bool = False
    # An inbound baseline (Dataverse -> Commerce, ``shared.sync.baseline``): the change-tracking token taken before
    # any range is compared (the deltaLink, the run's watermark once it closes); while the token is being taken,
    # the nextLink of the tracked initial read to resume from (empty: start it again); whether it was taken.
    delta_link: str = ""
    token_next: str = ""
    token_done: bool = False
    etag: str | None = None


@dataclass
class PageCheckpoint:
    index: int
    after: tuple[Any, ...] | None
    through: tuple[Any, ...] | None
    status: PageStatus = PageStatus.PLANNED
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class DeleteCheck:
    """One part of a fanned-out run's delete search: the synced states in buckets ``[first, stop)``."""

    index: int
    first: int
    stop: int
    status: PageStatus = PageStatus.PLANNED
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def buckets(self) -> range:
        return range(self.first, self.stop)


def _key_json(key: tuple[Any, ...] | None) -> str:
    return "" if key is None else json.dumps(list(key))


def key_from_json(text: str) -> tuple[Any, ...] | None:
    return tuple(json.loads(text)) if text else None


class PageCheckpoints:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    @staticmethod
    def partition(template: str, scope: str, run_id: str) -> str:
        return f"{template}.{scope}.{run_id}"

    # -- the plan row ------------------------------------------------------------------------------------

    def get_plan(self, template: str, scope: str, run_id: str) -> RunCheckpoint | None:
        try:
            e = self.table.get_entity(self.partition(template, scope, run_id), PLAN_ROW)
        except ResourceNotFoundError:
            return None
        return RunCheckpoint(template, scope, run_id, planned=int(e.get("planned", 0)),
                       planning_done=bool(e.get("planning_done", False)), total=int(e.get("total", -1)),
                       finalizing=bool(e.get("finalizing")), last_through=key_from_json(e.get("last_through", "")),
                       started_at=e.get("started_at", ""), mode=e.get("mode", "incremental"),
                       delete_checks=int(e.get("delete_checks", 0)), closing=bool(e.get("closing")),
                       decision=e.get("decision", ""), delete_passes=int(e.get("delete_passes", 0)),
                       no_prior_states=bool(e.get("no_prior_states", False)),
                       delta_link=e.get("delta_link", ""), token_next=e.get("token_next", ""),
                       token_done=bool(e.get("token_done", False)), etag=e.metadata.get("etag"))

    def save_plan(self, plan: RunCheckpoint) -> RunCheckpoint:
        entity = {"PartitionKey": self.partition(plan.template, plan.scope, plan.run_id), "RowKey": PLAN_ROW,
                  "planned": plan.planned, "planning_done": plan.planning_done, "total": plan.total,
                  "finalizing": plan.finalizing, "last_through": _key_json(plan.last_through),
                  "started_at": plan.started_at,
                  "mode": plan.mode, "delete_checks": plan.delete_checks, "closing": plan.closing,
                  "decision": plan.decision, "delete_passes": plan.delete_passes,
                  "no_prior_states": plan.no_prior_states}
        if plan.delta_link or plan.token_next or plan.token_done:  # an inbound baseline's token
            entity.update(delta_link=plan.delta_link, token_next=plan.token_next, token_done=plan.token_done)
        try:
            plan.etag = create_or_replace(self.table, entity, plan.etag)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise CheckpointConflict(f"plan of run {plan.run_id} changed meanwhile") from exc
        return plan

    def claim_closing(self, plan: RunCheckpoint) -> RunCheckpoint | None:
        """Claim the closing of a run: ``closing`` set with the plan row's ETag, so exactly one worker wins and
        gets the saved plan; the others get None."""
        plan.closing = True
        try:
            return self.save_plan(plan)
        except CheckpointConflict:
            return None  # another worker closes it

    # -- key ranges --------------------------------------------------------------------------------------

    def add_page(self, plan: RunCheckpoint, page: PageCheckpoint) -> RunCheckpoint:
        """Record a planned range and move the plan on (both ETag-guarded: one planner at a time)."""
        entity = {"PartitionKey": self.partition(plan.template, plan.scope, plan.run_id), "RowKey": f"{page.index:06d}",
                  "status": PageStatus.PLANNED.value, "after": _key_json(page.after), "through": _key_json(page.through)}
        with contextlib.suppress(ResourceExistsError):  # a resumed planner re-adding its last range
            self.table.create_entity(entity)
        plan.planned = max(plan.planned, page.index + 1)
        plan.last_through = page.through
        return self.save_plan(plan)

    def complete_page(self, plan: RunCheckpoint, page: PageCheckpoint, digests: bytes) -> None:
        entity: dict[str, Any] = {
            "PartitionKey": self.partition(plan.template, plan.scope, plan.run_id), "RowKey": f"{page.index:06d}",
            "status": PageStatus.DONE.value, "after": _key_json(page.after), "through": _key_json(page.through),
            "counts": json.dumps(page.counts), "digest_parts": 0}
        step = _DIGESTS_PER_PROPERTY * DIGEST_BYTES
        parts = [digests[i:i + step] for i in range(0, len(digests), step)]
        for n, part in enumerate(parts):
            entity[f"d{n}"] = part
        entity["digest_parts"] = len(parts)
        self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def pages(self, plan: RunCheckpoint) -> list[PageCheckpoint]:
        query = self.table.query_entities(
            f"PartitionKey eq @pk and {_PAGE_ROWS}",
            parameters={"pk": self.partition(plan.template, plan.scope, plan.run_id)},
            select=["RowKey", "status", "after", "through", "counts"])
        return [PageCheckpoint(int(e["RowKey"]), key_from_json(e.get("after", "")), key_from_json(e.get("through", "")),
                               PageStatus(e.get("status", "planned")), json.loads(e.get("counts") or "{}")) for e in query]

    def page(self, plan: RunCheckpoint, index: int) -> PageCheckpoint | None:
        try:
            e = self.table.get_entity(self.partition(plan.template, plan.scope, plan.run_id), f"{index:06d}",
                                      select=["RowKey", "status", "after", "through", "counts"])
        except ResourceNotFoundError:
            return None
        return PageCheckpoint(index, key_from_json(e.get("after", "")), key_from_json(e.get("through", "")),
                              PageStatus(e.get("status", "planned")), json.loads(e.get("counts") or "{}"))

    def iter_digests(self, plan: RunCheckpoint) -> Iterator[bytes]:
        """The key digests of every done range, a range at a time."""
        query = self.table.query_entities(
            f"PartitionKey eq @pk and {_PAGE_ROWS} and status eq 'done'",
            parameters={"pk": self.partition(plan.template, plan.scope, plan.run_id)})
        for e in query:
            for n in range(int(e.get("digest_parts", 0))):
                yield bytes(e[f"d{n}"])

    # -- delete checks -----------------------------------------------------------------------------------

    def _add_checks(self, plan: RunCheckpoint, checks: list[DeleteCheck], prefix: str) -> None:
        pk = self.partition(plan.template, plan.scope, plan.run_id)
        rows = [Operation("upsert", {"PartitionKey": pk, "RowKey": f"{prefix}{c.index:04d}",
                                     "status": PageStatus.PLANNED.value, "first": c.first, "stop": c.stop,
                                     "counts": "{}"}) for c in checks]
        for start in range(0, len(rows), MAX_OPERATIONS):
            submit(self.table, rows[start:start + MAX_OPERATIONS])

    def add_delete_checks(self, plan: RunCheckpoint, checks: list[DeleteCheck]) -> RunCheckpoint:
        """Record the delete checks (idempotent: a retried split writes the same rows) and move the plan on."""
        self._add_checks(plan, checks, "x")
        plan.delete_checks = len(checks)
        return self.save_plan(plan)

    @staticmethod
    def _check(e: Any) -> DeleteCheck:
        return DeleteCheck(int(e["RowKey"][1:]), int(e["first"]), int(e["stop"]), PageStatus(e.get("status", "planned")),
                           json.loads(e.get("counts") or "{}"))

    def _checks(self, plan: RunCheckpoint, rows: str) -> list[DeleteCheck]:
        query = self.table.query_entities(f"PartitionKey eq @pk and {rows}",
                                          parameters={"pk": self.partition(plan.template, plan.scope, plan.run_id)})
        return [self._check(e) for e in query]

    def _get_check(self, plan: RunCheckpoint, row_key: str) -> DeleteCheck | None:
        try:
            return self._check(self.table.get_entity(self.partition(plan.template, plan.scope, plan.run_id), row_key))
        except ResourceNotFoundError:
            return None

    def _complete_check(self, plan: RunCheckpoint, check: DeleteCheck, prefix: str) -> None:
        self.table.upsert_entity({"PartitionKey": self.partition(plan.template, plan.scope, plan.run_id),
                                  "RowKey": f"{prefix}{check.index:04d}", "status": PageStatus.DONE.value,
                                  "first": check.first, "stop": check.stop, "counts": json.dumps(check.counts)},
                                 mode=UpdateMode.REPLACE)

    def delete_checks(self, plan: RunCheckpoint) -> list[DeleteCheck]:
        return self._checks(plan, _CHECK_ROWS)

    def delete_check(self, plan: RunCheckpoint, index: int) -> DeleteCheck | None:
        return self._get_check(plan, f"x{index:04d}")

    def complete_delete_check(self, plan: RunCheckpoint, check: DeleteCheck) -> None:
        self._complete_check(plan, check, "x")

    # -- delete passes (the deletes themselves, once the delete search decided to make them) -------------

    def add_delete_passes(self, plan: RunCheckpoint, passes: list[DeleteCheck]) -> None:
        """Record delete passes (idempotent); the plan row is not written: the decision's claim does that."""
        self._add_checks(plan, passes, "y")

    def delete_passes(self, plan: RunCheckpoint) -> list[DeleteCheck]:
        return self._checks(plan, _PASS_ROWS)

    def delete_pass(self, plan: RunCheckpoint, index: int) -> DeleteCheck | None:
        return self._get_check(plan, f"y{index:04d}")

    def complete_delete_pass(self, plan: RunCheckpoint, done: DeleteCheck) -> None:
        self._complete_check(plan, done, "y")

    def drop(self, plan: RunCheckpoint) -> None:
        """Remove a finalised run's rows (entity-group deletes, 100 at a time)."""
        pk = self.partition(plan.template, plan.scope, plan.run_id)
        keys = [e["RowKey"] for e in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                               select=["RowKey"])]
        for start in range(0, len(keys), MAX_OPERATIONS):
            submit(self.table, [Operation("delete", {"PartitionKey": pk, "RowKey": k})
                                for k in keys[start:start + MAX_OPERATIONS]])
