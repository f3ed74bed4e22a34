"""Page checkpoints of a full outbound scan, in Table Storage (``<prefix>pages``).

One partition per run (``<template>.<scope>.<run id>``): a ``plan`` row (how many key ranges were planned,
whether planning finished, the total from ``$count``, who finalises), and one row per key range with its
bounds, its status (``planned`` or ``done``), its counts and, once done, the 8-byte digests of the keys it
saw, which the finaliser needs to find deletes. A crashed run resumes from these rows: ranges marked done
are not read again. The rows of a run are removed once it is finalised.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.state.transactions import MAX_OPERATIONS, Operation, create_or_replace, submit

DIGEST_BYTES = 8
_DIGESTS_PER_PROPERTY = 8000  # a binary property holds 64 KiB
PLAN_ROW = "plan"


class CheckpointConflict(Exception):
    """Another worker changed the plan row since it was read."""


@dataclass
class RunPlan:
    template: str
    scope: str
    run_id: str
    planned: int = 0
    planning_done: bool = False
    total: int = -1  # from $count; -1: unknown
    finalizing: str = ""
    last_through: str = ""  # JSON key of the last planned range's upper bound ("" before the first)
    started_at: str = ""
    mode: str = "incremental"
    etag: str | None = None


@dataclass
class PageCheckpoint:
    index: int
    after: tuple[Any, ...] | None
    through: tuple[Any, ...] | None
    status: str = "planned"
    counts: dict[str, int] = field(default_factory=dict)


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

    def get_plan(self, template: str, scope: str, run_id: str) -> RunPlan | None:
        try:
            e = self.table.get_entity(self.partition(template, scope, run_id), PLAN_ROW)
        except ResourceNotFoundError:
            return None
        return RunPlan(template, scope, run_id, planned=int(e.get("planned", 0)),
                       planning_done=bool(e.get("planning_done", False)), total=int(e.get("total", -1)),
                       finalizing=e.get("finalizing", ""), last_through=e.get("last_through", ""),
                       started_at=e.get("started_at", ""), mode=e.get("mode", "incremental"), etag=e.metadata.get("etag"))

    def save_plan(self, plan: RunPlan) -> RunPlan:
        entity = {"PartitionKey": self.partition(plan.template, plan.scope, plan.run_id), "RowKey": PLAN_ROW,
                  "planned": plan.planned, "planning_done": plan.planning_done, "total": plan.total,
                  "finalizing": plan.finalizing, "last_through": plan.last_through, "started_at": plan.started_at,
                  "mode": plan.mode}
        try:
            plan.etag = create_or_replace(self.table, entity, plan.etag)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise CheckpointConflict(f"plan of run {plan.run_id} changed meanwhile") from exc
        return plan

    # -- key ranges --------------------------------------------------------------------------------------

    def add_page(self, plan: RunPlan, page: PageCheckpoint) -> RunPlan:
        """Record a planned range and move the plan on (both ETag-guarded: one planner at a time)."""
        entity = {"PartitionKey": self.partition(plan.template, plan.scope, plan.run_id), "RowKey": f"{page.index:06d}",
                  "status": "planned", "after": _key_json(page.after), "through": _key_json(page.through)}
        with contextlib.suppress(ResourceExistsError):  # a resumed planner re-adding its last range
            self.table.create_entity(entity)
        plan.planned = max(plan.planned, page.index + 1)
        plan.last_through = _key_json(page.through)
        return self.save_plan(plan)

    def complete_page(self, plan: RunPlan, page: PageCheckpoint, digests: bytes) -> None:
        entity: dict[str, Any] = {
            "PartitionKey": self.partition(plan.template, plan.scope, plan.run_id), "RowKey": f"{page.index:06d}",
            "status": "done", "after": _key_json(page.after), "through": _key_json(page.through),
            "counts": json.dumps(page.counts), "digest_parts": 0}
        step = _DIGESTS_PER_PROPERTY * DIGEST_BYTES
        parts = [digests[i:i + step] for i in range(0, len(digests), step)]
        for n, part in enumerate(parts):
            entity[f"d{n}"] = part
        entity["digest_parts"] = len(parts)
        self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def pages(self, plan: RunPlan) -> list[PageCheckpoint]:
        query = self.table.query_entities(
            "PartitionKey eq @pk and RowKey ne @plan",
            parameters={"pk": self.partition(plan.template, plan.scope, plan.run_id), "plan": PLAN_ROW},
            select=["RowKey", "status", "after", "through", "counts"])
        return [PageCheckpoint(int(e["RowKey"]), key_from_json(e.get("after", "")), key_from_json(e.get("through", "")),
                               e.get("status", "planned"), json.loads(e.get("counts") or "{}")) for e in query]

    def page(self, plan: RunPlan, index: int) -> PageCheckpoint | None:
        try:
            e = self.table.get_entity(self.partition(plan.template, plan.scope, plan.run_id), f"{index:06d}",
                                      select=["RowKey", "status", "after", "through", "counts"])
        except ResourceNotFoundError:
            return None
        return PageCheckpoint(index, key_from_json(e.get("after", "")), key_from_json(e.get("through", "")),
                              e.get("status", "planned"), json.loads(e.get("counts") or "{}"))

    def iter_digests(self, plan: RunPlan) -> Iterator[bytes]:
        """The key digests of every done range, a range at a time."""
        query = self.table.query_entities(
            "PartitionKey eq @pk and status eq 'done'",
            parameters={"pk": self.partition(plan.template, plan.scope, plan.run_id)})
        for e in query:
            for n in range(int(e.get("digest_parts", 0))):
                yield bytes(e[f"d{n}"])

    def drop(self, plan: RunPlan) -> None:
        """Remove a finalised run's rows (entity-group deletes, 100 at a time)."""
        pk = self.partition(plan.template, plan.scope, plan.run_id)
        keys = [e["RowKey"] for e in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                               select=["RowKey"])]
        for start in range(0, len(keys), MAX_OPERATIONS):
            submit(self.table, [Operation("delete", {"PartitionKey": pk, "RowKey": k})
                                for k in keys[start:start + MAX_OPERATIONS]])
