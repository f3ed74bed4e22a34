"""Starting (or resuming) a full outbound scan and planning its key ranges.

Each range ``(after, through]`` is planned (a row in ``<prefix>pages``) before it is read. A run that
crashed or failed leaves its id in the watermark (``open_run``); the next run takes that id over: ranges
already done are not read again, planned ones are redone, planning continues after the last planned range.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.state.checkpoints import PageCheckpoint, RunCheckpoint
from shared.state.store import Watermark
from shared.sync.engine import OutboundSync
from shared.sync.runs import DIRECTION_OUT, Run, RunSummary, scope_of
from shared.sync.scan.ranges import RangeReader


class Planner:
    def __init__(self, engine: OutboundSync, reader: RangeReader) -> None:
        self.engine = engine
        self.reader = reader
        self.checkpoints = engine.state.checkpoints

    def begin(self, company: str | None) -> tuple[Run, RunCheckpoint] | RunSummary:
        """Take the scope's lease and its run's checkpoint (a new one, or the unfinished run's); a skipped
        ``RunSummary`` when another run holds the lease."""
        engine = self.engine
        scope = scope_of(company)

        def resume(mark: Watermark) -> str | None:
            if not mark.open_run:
                return None
            plan = self.checkpoints.get_plan(engine.name, scope, mark.open_run)
            return mark.open_run if plan is not None else None

        run = Run.begin(engine.state, engine.name, DIRECTION_OUT, scope, engine.lease_s, resume=resume)
        if isinstance(run, RunSummary):
            return run
        plan = self.checkpoints.get_plan(engine.name, scope, run.summary.run_id)
        if plan is None:
            plan = self.checkpoints.save_plan(RunCheckpoint(
                engine.name, scope, run.summary.run_id, started_at=run.started_at, mode=run.summary.mode,
                no_prior_states=engine.state.synced.empty(engine.partition(company))))
            run.lease.open_run = run.summary.run_id
            run.lease = engine.state.watermarks.save(run.lease)
        else:
            run.started_at = plan.started_at or run.started_at
            run.summary.mode = plan.mode
            if plan.closing or (plan.finalizing and not plan.delete_checks):
                # Whoever claimed finalising (or closing) held the lease, which has expired since: it died
                # before it split the delete search, or before it closed the run. Do that again.
                plan.closing = False
                plan.finalizing = plan.finalizing and bool(plan.delete_checks)
                plan = self.checkpoints.save_plan(plan)
        return run, plan

    def plan_next(self, company: str | None, plan: RunCheckpoint, *, keys_only: bool,
                  total: list[int]) -> tuple[RunCheckpoint, PageCheckpoint, Iterable[dict[str, Any]]]:
        """Plan and record the next range (its rows read: keys only when it is for a queue); the last range,
        open-ended, ends planning. ``total`` receives ``$count`` on the first call."""
        page, rows = self.reader.next_range(company, plan, keys_only=keys_only,
                                            on_total=total.append if not total else None)
        if total and plan.total < 0:
            plan.total = total[0]
        plan = self.checkpoints.add_page(plan, page)
        if page.through is None:
            plan.planning_done = True
            plan = self.checkpoints.save_plan(plan)
        return plan, page, rows
