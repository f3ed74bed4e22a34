"""The end of a full outbound scan: once planning is done and every key range is, exactly one party (an
ETag claim on the plan row) searches for deletes: states whose key no range saw. In place it searches
every state bucket itself; fanned out it splits the search into delete checks of whole state buckets
(about ``DELETE_CHECK_STATES`` states each) queued as tasks, and the worker that finishes the last check
closes the run (another ETag claim). Closing sums the counts, advances the watermark and drops the
checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.messages import PageTask
from shared.observability import log
from shared.state.checkpoints import CheckpointConflict, DeleteCheck, PageCheckpoint, PageStatus, RunCheckpoint
from shared.sync.digests import KeyDigests
from shared.sync.engine import OutboundSync
from shared.sync.runs import DIRECTION_OUT, LeaseKeeper, LeaseLost, Run, RunSummary, scope_company

logger = logging.getLogger("loyaltysync.sync")
# States one delete check reads: tens of seconds against Table Storage, well inside a function's timeout.
DELETE_CHECK_STATES = 100_000
Queue = Callable[[RunCheckpoint, int, str], None]


class Finaliser:
    """Finds a finished scan's deletes and closes the run, here or through queued delete checks."""

    def __init__(self, engine: OutboundSync, *, queue: Queue | None = None,
                 delete_check_states: int = DELETE_CHECK_STATES) -> None:
        self.engine = engine
        self.queue = queue
        self.delete_check_states = delete_check_states
        self.checkpoints = engine.state.checkpoints

    def maybe_finalize(self, scope: str, run_id: str | None = None, *,
                       pages: list[PageCheckpoint] | None = None) -> RunSummary | None:
        """Finalise the run if planning is done and every range is; ``pages``: the ranges, if just read.
        Fanned out, finalising splits the delete search into checks queued as tasks; without a queue it runs here."""
        engine = self.engine
        if run_id is None:
            run_id = engine.state.watermarks.get(engine.name, DIRECTION_OUT, scope).open_run
        plan = self.checkpoints.get_plan(engine.name, scope, run_id) if run_id else None
        if plan is None or plan.finalizing or not plan.planning_done:
            return None
        pages = pages if pages is not None else self.checkpoints.pages(plan)
        if any(p.status != PageStatus.DONE for p in pages):
            return None
        plan.finalizing = True
        try:
            plan = self.checkpoints.save_plan(plan)  # the ETag makes this claim exactly once
        except CheckpointConflict:
            return None  # another worker claimed it
        if self.queue is not None:
            self._queue_delete_checks(plan, states=sum(p.counts.get("seen", 0) for p in pages))
            return None
        return self.finalize(self.run_of(plan), plan, scope_company(scope), claimed=True)

    def finalize(self, run: Run, plan: RunCheckpoint, company: str | None, *, claimed: bool = False) -> RunSummary:
        """Finalise here: search every state bucket for deletes, then close the run."""
        engine = self.engine
        if not claimed:
            plan.finalizing = True
            plan = self.checkpoints.save_plan(plan)
        summary = run.summary
        found = RunSummary(template=summary.template, scope=summary.scope, run_id=summary.run_id)
        try:
            engine.find_deletes(engine.partition(company), self.seen(plan), found, run.heartbeat)
        except BaseException as exc:
            plan.finalizing = False
            self.checkpoints.save_plan(plan)  # let the next run finalise again
            run.fail(exc)
            raise
        return self.close(run, plan, found=found.counts())

    def seen(self, plan: RunCheckpoint) -> KeyDigests:
        """The digests of every key the run's ranges saw (8 bytes a key: 8 MB for a million)."""
        seen = KeyDigests()
        for digests in self.checkpoints.iter_digests(plan):
            seen.add_bytes(digests)
        return seen

    def close(self, run: Run, plan: RunCheckpoint, checks: list[DeleteCheck] | None = None, *,
              found: dict[str, int] | None = None) -> RunSummary:
        """Add up the counts of every range and delete check (and of deletes ``found`` here), advance the
        watermark, drop the checkpoints."""
        summary = run.summary
        totals = RunSummary(template=summary.template, scope=summary.scope, run_id=summary.run_id)
        for page in self.checkpoints.pages(plan):
            totals.add(page.counts)
        for check in checks if checks is not None else self.checkpoints.delete_checks(plan):
            totals.add(check.counts)
        totals.add(found or {})
        summary.set_counts(totals.counts())
        result = run.finish(advance=True, open_run="")
        self.checkpoints.drop(plan)
        return result

    # -- the delete search, fanned out ------------------------------------------------------------------

    def _queue_delete_checks(self, plan: RunCheckpoint, states: int) -> None:
        """Split the delete search into checks of about ``delete_check_states`` states each (whole state
        buckets), record them and queue one task each, so no single invocation reads every state of a scope
        (a million states take minutes to read; Consumption stops a function after five by default)."""
        assert self.queue is not None
        buckets = self.engine.state.buckets
        count = min(buckets, max(1, -(-states // self.delete_check_states)))
        bounds = [buckets * n // count for n in range(count + 1)]
        checks = [DeleteCheck(n, bounds[n], bounds[n + 1]) for n in range(count)]
        try:
            plan = self.checkpoints.add_delete_checks(plan, checks)
        except BaseException:
            plan.finalizing = False
            self.checkpoints.save_plan(plan)  # let the next worker or run finalise again
            raise
        for check in checks:
            self.queue(plan, check.index, "deletes")
        log(logger, logging.INFO, "delete search fanned out", template=plan.template, scope=plan.scope,
            run_id=plan.run_id, checks=count, states=states, buckets=buckets)

    def run_delete_check(self, task: PageTask) -> str:
        """Search one delete check's state buckets for deletes; the last check done closes the run."""
        engine = self.engine
        plan = self.checkpoints.get_plan(task.template, task.scope, task.run_id)
        if plan is None or plan.closing:
            return "stale"
        check = self.checkpoints.delete_check(plan, task.index)
        if check is None:
            return "stale"
        if check.status == PageStatus.DONE:
            self.maybe_close(plan)
            return "duplicate"
        lease = LeaseKeeper(engine.state, task.template, DIRECTION_OUT, task.scope, task.run_id, engine.lease_s)
        try:
            lease.renew()
        except LeaseLost:
            log(logger, logging.WARNING, "delete check of a run that lost its lease; left to the run that holds it",
                template=task.template, scope=task.scope, run_id=task.run_id, index=task.index)
            return "stale"
        summary = RunSummary(template=task.template, scope=task.scope, run_id=task.run_id)
        engine.find_deletes(engine.partition(scope_company(task.scope)), self.seen(plan), summary, lease.heartbeat,
                            buckets=check.buckets)
        check.counts = summary.counts()
        check.status = PageStatus.DONE
        self.checkpoints.complete_delete_check(plan, check)
        log(logger, logging.INFO, "delete check done", template=task.template, scope=task.scope, run_id=task.run_id,
            index=task.index, checks=plan.delete_checks, buckets=f"{check.first}-{check.stop - 1}", **summary.counts())
        self.maybe_close(plan)
        return "done"

    def maybe_close(self, plan: RunCheckpoint) -> RunSummary | None:
        """Close the run if every delete check is done; an ETag claim on the plan row makes it exactly once."""
        checks = self.checkpoints.delete_checks(plan)
        if len(checks) < plan.delete_checks or any(c.status != PageStatus.DONE for c in checks):
            return None
        plan = self.checkpoints.get_plan(plan.template, plan.scope, plan.run_id) or plan
        if plan.closing:
            return None
        plan.closing = True
        try:
            plan = self.checkpoints.save_plan(plan)
        except CheckpointConflict:
            return None  # another worker closes it
        return self.close(self.run_of(plan), plan, checks)

    def run_of(self, plan: RunCheckpoint) -> Run:
        """The run a worker finalises or closes: the lease as the watermark has it now (workers renew it)."""
        engine = self.engine
        mark = engine.state.watermarks.get(engine.name, DIRECTION_OUT, plan.scope)
        summary = RunSummary(template=engine.name, scope=plan.scope, run_id=plan.run_id, mode=plan.mode)
        return Run(engine.state, mark, summary, lease_s=engine.lease_s, started_at=plan.started_at or mark.last_run_started)
