"""The end of a full outbound scan: the delete search, guarded against mass deletes, then closing the run.

Once planning is done and every key range is, exactly one party (an ETag claim on the plan row,
``finalizing``) starts the delete search for synced states whose key no range saw. It has three steps, so
that nothing is deleted before the run knows how much it would delete:

1. **Count** (delete checks). Each unseen state is read by key in Commerce. A key Commerce has after all is
   synced, as before; one it does not have is a *candidate*: counted, not deleted. The scope's synced states
   are counted too.
2. **Decide**, once per run, with the scope's totals: the mass-delete guard (``shared.sync.guard``:
   ``SYNC_DELETE_THRESHOLD``, ``SYNC_DELETE_THRESHOLD_SHARE``, an operator's approval on the watermark)
   either lets the deletes go ahead or holds them. Held, the run closes as ``deletes_held`` having deleted
   nothing, and its watermark keeps the hold (counts, run, time) until a later run closes without one:
   either the records came back (that run counts fewer candidates) or an operator approved.
3. **Delete** (delete passes), only over the state buckets that held candidates: each candidate is read by
   key once more (one back in Commerce since is left alone) and deleted as before (tombstone, row, state).
   With no candidates the run closes after step 2.

In place, one process does the three steps. Fanned out, step 1 is split into delete checks of whole state
buckets (about ``DELETE_CHECK_STATES`` states each), queued as ``deletes`` tasks; each records its counts on
its own row. The worker that completes the last check decides, and the decision is one ETag-guarded write
of the plan row (``decision``, empty until then): however many checks finish together, and however often a
message is delivered, exactly one party decides; the others lose the write and do nothing. A decision to
delete first records one delete pass per check that found candidates (rows ``y0000``...; the same rows
whoever writes them), then claims, then queues them as ``delete_pass`` tasks, and the worker that completes
the last pass closes the run (another ETag claim, ``closing``). A hold, or nothing to delete, claims
``closing`` in the same write as the decision and closes at once. A task whose check or pass is done does
nothing (a duplicate); one whose run is closed is stale. A run stopped anywhere resumes from these rows:
checks not done are queued again, an undecided run is decided, passes not done are queued again.

Closing sums the counts of ranges, checks and passes, advances the watermark (with the hold, or without
one), spends the approval the decision used, and drops the checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.messages import PageTask
from shared.observability import log
from shared.state.checkpoints import CheckpointConflict, DeleteCheck, PageCheckpoint, PageStatus, RunCheckpoint, all_done
from shared.state.store import Watermark
from shared.sync.digests import KeyDigests
from shared.sync.engine import OutboundSync
from shared.sync.guard import DeleteDecision
from shared.sync.runs import DIRECTION_OUT, LeaseKeeper, LeaseLost, Run, RunStatus, RunSummary, scope_company

logger = logging.getLogger("loyaltysync.sync")
# States one delete check reads: tens of seconds against Table Storage, well inside a function's timeout.
DELETE_CHECK_STATES = 100_000
Queue = Callable[[RunCheckpoint, int, str], None]


class Finaliser:
    """Finds a finished scan's deletes, holds them when there are too many, and closes the run, here or
    through queued delete checks and passes."""

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
        if self.queue is not None and not plan.no_prior_states:
            self._queue_delete_checks(plan, states=sum(p.counts.get("seen", 0) for p in pages))
            return None
        return self.finalize(self.run_of(plan), plan, scope_company(scope), claimed=True)

    def finalize(self, run: Run, plan: RunCheckpoint, company: str | None, *, claimed: bool = False) -> RunSummary:
        """Finalise here: count the delete candidates in every state bucket, decide, delete (only in the
        buckets that hold candidates) or hold, then close the run."""
        engine = self.engine
        if not claimed:
            plan.finalizing = True
            plan = self.checkpoints.save_plan(plan)
        summary = run.summary
        found = RunSummary(template=summary.template, scope=summary.scope, run_id=summary.run_id)
        partition = engine.partition(company)
        try:
            if plan.no_prior_states:  # a first load: every state was made by this run or during it
                log(logger, logging.INFO, "delete search skipped: the scope had no synced state when the run began",
                    template=plan.template, scope=plan.scope, run_id=plan.run_id)
                return self.close(run, plan, found={}, decision=self.decide(plan, 0, 0))
            seen = self.seen(plan)
            tally = engine.find_deletes(partition, seen, found, run.heartbeat, delete=False)
            decision = self.decide(plan, tally.candidates, tally.states)
            if not decision.hold and tally.candidates:
                engine.find_deletes(partition, seen, found, run.heartbeat, sorted(tally.buckets), delete=True)
        except BaseException as exc:
            plan.finalizing = False
            self.checkpoints.save_plan(plan)  # let the next run finalise again
            run.fail(exc)
            raise
        return self.close(run, plan, found=found.counts(), decision=decision)

    def decide(self, plan: RunCheckpoint, candidates: int, states: int) -> DeleteDecision:
        """The guard's verdict on the whole scope's candidates, with the approval on the watermark now."""
        mark = self.engine.state.watermarks.get(plan.template, DIRECTION_OUT, plan.scope)
        decision = self.engine.delete_guard.decide(candidates, states, mark)
        if decision.hold or decision.approved:
            log(logger, logging.WARNING if decision.hold else logging.INFO,
                "deletes held" if decision.hold else "deletes approved", template=plan.template, scope=plan.scope,
                run_id=plan.run_id, candidates=candidates, states=states, allowed=decision.allowed,
                approved=decision.approved, approved_by=decision.approved_by or "-")
        return decision

    def seen(self, plan: RunCheckpoint) -> KeyDigests:
        """The digests of every key the run's ranges saw (8 bytes a key: 8 MB for a million)."""
        seen = KeyDigests()
        for digests in self.checkpoints.iter_digests(plan):
            seen.add_bytes(digests)
        return seen

    def close(self, run: Run, plan: RunCheckpoint, checks: list[DeleteCheck] | None = None, *,
              found: dict[str, int] | None = None, decision: DeleteDecision) -> RunSummary:
        """Add up the counts of every range, delete check and pass (and of what was ``found`` here), advance the
        watermark with the ``decision`` (deletes held, or none), drop the checkpoints."""
        summary = run.summary
        totals = RunSummary(template=summary.template, scope=summary.scope, run_id=summary.run_id)
        for page in self.checkpoints.pages(plan):
            totals.add(page.counts)
        for check in checks if checks is not None else self.checkpoints.delete_checks(plan):
            totals.add(check.counts)
        for done in self.checkpoints.delete_passes(plan):
            totals.add(done.counts)
        totals.add(found or {})
        summary.set_counts(totals.counts())
        if decision.hold:
            summary.status = RunStatus.DELETES_HELD
        summary.detail = decision.reason or summary.detail
        now = self.engine.state.clock.now().isoformat()

        def record(mark: Watermark) -> None:
            decision.apply(mark, summary.run_id, now)

        result = run.finish(advance=True, open_run="", status=RunStatus.DELETES_HELD if decision.hold else None,
                            update=record)
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

    def _lease(self, task: PageTask, what: str) -> LeaseKeeper | None:
        """The run's lease, renewed for one task; None (logged) when another run holds it now."""
        engine = self.engine
        lease = LeaseKeeper(engine.state, task.template, DIRECTION_OUT, task.scope, task.run_id, engine.lease_s)
        try:
            lease.renew()
        except LeaseLost:
            log(logger, logging.WARNING, f"{what} of a run that lost its lease; left to the run that holds it",
                template=task.template, scope=task.scope, run_id=task.run_id, index=task.index)
            return None
        return lease

    def run_delete_check(self, task: PageTask) -> str:
        """Count the delete candidates of one check's state buckets (syncing keys Commerce has after all); the
        last check done decides. Returns what happened."""
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
        lease = self._lease(task, "delete check")
        if lease is None:
            return "stale"
        summary = RunSummary(template=task.template, scope=task.scope, run_id=task.run_id)
        tally = engine.find_deletes(engine.partition(scope_company(task.scope)), self.seen(plan), summary,
                                    lease.heartbeat, check.buckets, delete=False)
        check.counts = {**summary.counts(), "candidates": tally.candidates, "states": tally.states}
        check.status = PageStatus.DONE
        self.checkpoints.complete_delete_check(plan, check)
        log(logger, logging.INFO, "delete check done", template=task.template, scope=task.scope, run_id=task.run_id,
            index=task.index, checks=plan.delete_checks, buckets=f"{check.first}-{check.stop - 1}",
            candidates=tally.candidates, states=tally.states, **summary.counts())
        self.maybe_close(plan)
        return "done"

    def run_delete_pass(self, task: PageTask) -> str:
        """Delete the candidates of one pass's state buckets (each confirmed missing once more); the last pass
        done closes the run. Returns what happened."""
        engine = self.engine
        plan = self.checkpoints.get_plan(task.template, task.scope, task.run_id)
        if plan is None or plan.closing or not plan.decision:
            return "stale"
        item = self.checkpoints.delete_pass(plan, task.index)
        if item is None:
            return "stale"
        if item.status == PageStatus.DONE:
            self.maybe_close(plan)
            return "duplicate"
        lease = self._lease(task, "delete pass")
        if lease is None:
            return "stale"
        summary = RunSummary(template=task.template, scope=task.scope, run_id=task.run_id)
        engine.find_deletes(engine.partition(scope_company(task.scope)), self.seen(plan), summary, lease.heartbeat,
                            item.buckets, delete=True)
        item.counts = summary.counts()
        item.status = PageStatus.DONE
        self.checkpoints.complete_delete_pass(plan, item)
        log(logger, logging.INFO, "delete pass done", template=task.template, scope=task.scope, run_id=task.run_id,
            index=task.index, passes=plan.delete_passes, buckets=f"{item.first}-{item.stop - 1}", **summary.counts())
        self.maybe_close(plan)
        return "done"

    def maybe_close(self, plan: RunCheckpoint) -> RunSummary | None:
        """Once every delete check is done: decide (exactly once: an ETag claim on the plan row), and close the
        run when the decision leaves nothing to do or every delete pass is done (another claim)."""
        checks = self.checkpoints.delete_checks(plan)
        if not all_done(checks, plan.delete_checks):
            return None
        plan = self.checkpoints.get_plan(plan.template, plan.scope, plan.run_id) or plan
        if plan.closing:
            return None
        if not plan.decision:
            return self._decide_fanned_out(plan, checks)
        if plan.delete_passes and not all_done(self.checkpoints.delete_passes(plan), plan.delete_passes):
            return None
        claimed = self.checkpoints.claim_closing(plan)
        if claimed is None:
            return None  # another worker closes it
        return self.close(self.run_of(claimed), claimed, checks, decision=DeleteDecision.from_json(claimed.decision))

    def _decide_fanned_out(self, plan: RunCheckpoint, checks: list[DeleteCheck]) -> RunSummary | None:
        decision = self.decide(plan, sum(c.counts.get("candidates", 0) for c in checks),
                               sum(c.counts.get("states", 0) for c in checks))
        passes = [] if decision.hold else [DeleteCheck(c.index, c.first, c.stop) for c in checks
                                           if c.counts.get("candidates", 0)]
        if passes:
            self.checkpoints.add_delete_passes(plan, passes)  # before the claim, so a claimed pass always has its row
            plan.delete_passes = len(passes)
        else:
            plan.closing = True  # nothing to delete, or held: close in the same write
        plan.decision = decision.to_json()
        try:
            plan = self.checkpoints.save_plan(plan)
        except CheckpointConflict:
            return None  # another worker decided
        if passes:
            for item in passes:
                if self.queue is None:  # a worker built without a queue makes the passes itself
                    self.run_delete_pass(PageTask(kind="delete_pass", template=plan.template, scope=plan.scope,
                                                  run_id=plan.run_id, index=item.index))
                else:
                    self.queue(plan, item.index, "delete_pass")
            log(logger, logging.INFO, "delete passes queued", template=plan.template, scope=plan.scope,
                run_id=plan.run_id, passes=len(passes), candidates=decision.candidates)
            return None
        return self.close(self.run_of(plan), plan, checks, decision=decision)

    def run_of(self, plan: RunCheckpoint) -> Run:
        """The run a worker finalises or closes: the lease as the watermark has it now (workers renew it)."""
        engine = self.engine
        mark = engine.state.watermarks.get(engine.name, DIRECTION_OUT, plan.scope)
        summary = RunSummary(template=engine.name, scope=plan.scope, run_id=plan.run_id, mode=plan.mode)
        return Run(engine.state, mark, summary, lease_s=engine.lease_s, started_at=plan.started_at or mark.last_run_started)
