"""Full outbound scans split into key ranges, checkpointed in Table Storage, run here or fanned out.

A scan of a scope (a template, or one legal entity of a company-specific one) is a sequence of key
ranges ``(after, through]`` in Commerce's own key order, each about ``SYNC_PAGE_SIZE`` keys; the last
range is open-ended, so the ranges cover the whole key space whatever is created or deleted meanwhile.
Three parts, one module each:

* ``planner``: takes the scope's lease, starts or resumes the run, plans the next range;
* ``ranges``: reads and processes one range (map, compare, write in chunks) and checkpoints it with its
  counts and the digests of the keys it saw;
* ``finaliser``: once planning is done and every range is, counts the delete candidates, decides (the
  mass-delete guard may hold them), deletes, and closes the run.

``Scan`` composes them. **In place** (``run``: the CLI, or the timer with ``SYNC_FAN_OUT=false``): one
process plans a range from the rows it reads, processes it, checkpoints it, then finalises. **Fanned out**
(``start``: the timer by default): the planner reads keys only, plans every range and queues one
``PageTask`` per range; the queue-triggered workers (``run_task``) each process one range, renewing the
run's lease, and the last one done finalises (delete checks, then delete passes, also queued as tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from shared.commerce.client import LegalEntitiesError
from shared.messages import PageTask
from shared.observability import log
from shared.preflight import Preflight, PreflightError
from shared.state.checkpoints import PageStatus, RunCheckpoint
from shared.sync.engine import OutboundSync
from shared.sync.failfast import RunAborted
from shared.sync.runs import (
    ALL,
    DIRECTION_OUT,
    LeaseKeeper,
    LeaseLost,
    Progress,
    Run,
    RunStatus,
    RunSummary,
    abort_run,
    clear_unscoped_failure,
    record_unscoped_failure,
    scope_of,
)
from shared.sync.scan.finaliser import DELETE_CHECK_STATES, Finaliser
from shared.sync.scan.planner import Planner
from shared.sync.scan.ranges import MAX_PAGE_SIZE, RangeReader, RangeWorker, Tick, log_range_done, range_filter

__all__ = ["DELETE_CHECK_STATES", "MAX_PAGE_SIZE", "Progress", "Scan", "range_filter"]

logger = logging.getLogger("loyaltysync.sync")
Enqueue = Callable[[PageTask], None]


def _ticker(summary: RunSummary, total: list[int], progress: Progress | None) -> Tick | None:
    """Progress per record of an in-place scan: the run's counts so far plus those of the range in progress."""
    if progress is None:
        return None
    live = RunSummary(template=summary.template, scope=summary.scope, run_id=summary.run_id, mode=summary.mode)

    def tick(page: RunSummary, seen: int) -> None:
        live.set_counts(summary.counts())
        live.add({**page.counts(), "seen": seen})
        progress(live, total[0] if total else None)

    return tick


class Scan:
    """One template's full outbound scans: in place, or fanned out through ``enqueue``."""

    def __init__(self, engine: OutboundSync, *, page_size: int | None = None, enqueue: Enqueue | None = None,
                 delete_check_states: int = DELETE_CHECK_STATES, preflight: Preflight | None = None) -> None:
        self.engine = engine
        self.enqueue = enqueue
        self.preflight = preflight  # checked before a run's scopes are listed (None: not checked)
        self.checkpoints = engine.state.checkpoints
        self.reader = (engine.reader_factory or RangeReader)(engine, page_size or engine.page_size)
        self.planner = Planner(engine, self.reader)
        self.ranges = RangeWorker(engine, self.reader)
        self.finaliser = Finaliser(engine, queue=self._queue if enqueue is not None else None,
                                   delete_check_states=delete_check_states)

    @property
    def page_size(self) -> int:
        return self.reader.page_size

    # -- scopes ------------------------------------------------------------------------------------------

    def scopes(self, legal_entities: Iterable[str] = ()) -> list[str | None]:
        """The companies to run (``legal_entities``, else F&O's ``LegalEntities``), or one scope-less run. When
        they cannot be listed the run is recorded as failed under scope ``all`` with the reason (``status``
        shows it) and ``LegalEntitiesError`` is raised; that record goes once they are known again.

        First the preflight (``shared.preflight``): when a service, the template or a named company does not fit,
        the run is recorded as failed under each company named (scope ``all`` when none is) the same way and
        ``PreflightError`` is raised, before anything is read or written."""
        engine = self.engine
        legal_entities = list(legal_entities)
        if self.preflight is not None:
            try:
                self.preflight.require(engine.name, legal_entities if engine.plan.company_specific else [])
            except PreflightError as exc:
                # Under the scopes the run was asked for (``--company usmf``: usmf), ``all`` when it was not told.
                named = [scope_of(c.lower()) for c in legal_entities] if engine.plan.company_specific else []
                for scope in named or [ALL]:
                    record_unscoped_failure(engine.state, engine.name, DIRECTION_OUT, scope, str(exc), exc)
                raise
        if not engine.plan.company_specific:
            return [None]
        try:
            companies = [c.lower() for c in legal_entities] or engine.commerce.legal_entities()
        except LegalEntitiesError as exc:
            record_unscoped_failure(engine.state, engine.name, DIRECTION_OUT, ALL, str(exc), exc)
            raise
        clear_unscoped_failure(engine.state, engine.name, DIRECTION_OUT, ALL)  # ``all`` is no scope of this template
        return list(companies)

    # -- in place ----------------------------------------------------------------------------------------

    def run(self, legal_entities: Iterable[str] = (), *, progress: Progress | None = None) -> list[RunSummary]:
        """A full scan of every scope, here."""
        return [self.run_scope(company, progress=progress) for company in self.scopes(legal_entities)]

    def run_scope(self, company: str | None, *, progress: Progress | None = None) -> RunSummary:
        begun = self.planner.begin(company)
        if isinstance(begun, RunSummary):
            return begun
        run, plan = begun
        engine = self.engine
        summary = run.summary
        partition = engine.partition(company)
        parked = engine.state.parked.keys(engine.name)
        total: list[int] = []
        pool = engine.chunk_pool(partition, parked)
        tick = _ticker(summary, total, progress)
        try:
            for page in self.checkpoints.pages(plan):  # a resumed run: what was done, and what was only planned
                if page.status == PageStatus.DONE:
                    summary.add(page.counts)
                    continue
                self.ranges.process(page, self.reader.rows(company, page), plan, partition, parked, pool, summary,
                                    tick=tick)
                self._report(run, company, total, progress)
            while not plan.planning_done:
                plan, page, rows = self.planner.plan_next(company, plan, keys_only=False, total=total)
                self.ranges.process(page, rows, plan, partition, parked, pool, summary, tick=tick)
                run.heartbeat()
                self._report(run, company, total, progress)
            pool.finish()
        except RunAborted as exc:  # the first records all failed the same way: failed, with that reason
            pool.abandon()
            engine.state.parked.stop_waiting(engine.name, exc.keys)  # the cause is one for all, not their data
            summary.failed = max(summary.failed, pool.guard.failures)  # none landed: each one seen was parked
            summary.seen = max(summary.seen, summary.failed)
            return run.fail(exc)
        except BaseException as exc:
            pool.abandon()
            run.fail(exc)  # the open run stays in the watermark: the next run resumes it
            raise
        return self.finaliser.finalize(run, plan, company)

    def _report(self, run: Run, company: str | None, total: list[int], progress: Progress | None) -> None:
        summary = run.summary
        rate = summary.seen / max(run.elapsed(), 1e-6)
        expected = total[0] if total else None
        eta_s = round(max(expected - summary.seen, 0) / rate) if expected is not None and rate else None
        log(logger, logging.INFO, "page done", template=self.engine.name, scope=scope_of(company), seen=summary.seen,
            total=expected if expected is not None else "?", written=summary.written, rate_per_s=round(rate),
            eta_s=eta_s if eta_s is not None else "?", run_id=summary.run_id)
        if progress is not None:
            progress(summary, expected)

    # -- fanned out --------------------------------------------------------------------------------------

    def start(self, company: str | None) -> RunSummary:
        """Plan every key range of a scope (reading keys only) and queue one task per range; the lease stays
        with the run until a worker finalises it. A resumed run re-queues the ranges not done."""
        assert self.enqueue is not None, "fan-out needs a pages queue"
        begun = self.planner.begin(company)
        if isinstance(begun, RunSummary):
            return begun
        run, plan = begun
        if plan.delete_checks:  # a resumed run in its delete search: queue the checks (or passes) not done
            if plan.decision and plan.delete_passes:
                kind, what, planned = "delete_pass", "delete passes", plan.delete_passes
                items = self.checkpoints.delete_passes(plan)
            else:
                kind, what, planned = "deletes", "delete checks", plan.delete_checks
                items = self.checkpoints.delete_checks(plan)
            undone = [c for c in items if c.status != PageStatus.DONE]
            for item in undone:
                self._queue(plan, item.index, kind)
            run.summary.status = RunStatus.FANNED_OUT
            run.summary.detail = f"{len(undone)} of {planned} {what} queued again"
            self.finaliser.maybe_close(plan)
            return run.summary
        total: list[int] = []
        queued = 0
        try:  # a failed read of the keys (or a full queue) fails the run with its reason; the next run resumes it
            for page in self.checkpoints.pages(plan):
                if page.status != PageStatus.DONE:
                    self._queue(plan, page.index, "page")
                    queued += 1
            while not plan.planning_done:
                plan, page, _ = self.planner.plan_next(company, plan, keys_only=True, total=total)
                self._queue(plan, page.index, "page")
                queued += 1
                run.heartbeat()
        except BaseException as exc:
            run.fail(exc)
            raise
        run.summary.status = RunStatus.FANNED_OUT
        run.summary.detail = f"{plan.planned} key ranges, {queued} queued"
        log(logger, logging.INFO, "run fanned out", template=plan.template, scope=plan.scope, run_id=plan.run_id,
            ranges=plan.planned, queued=queued, total=total[0] if total else "?")
        self.finaliser.maybe_finalize(plan.scope)  # every range may already be done (a resumed run)
        return run.summary

    def _queue(self, plan: RunCheckpoint, index: int, kind: str) -> None:
        assert self.enqueue is not None, "fan-out needs a pages queue"
        self.enqueue(PageTask(kind="deletes" if kind == "deletes" else "delete_pass" if kind == "delete_pass" else "page",
                              template=plan.template, scope=plan.scope, run_id=plan.run_id, index=index))

    def run_task(self, task: PageTask) -> str:
        """One queued task: a key range, a delete check or a delete pass. Returns what happened."""
        if task.kind in ("inbound", "inbound_plan"):
            raise ValueError("a task of an inbound baseline: InboundSync.run_task runs it")
        if task.kind == "deletes":
            return self.finaliser.run_delete_check(task)
        if task.kind == "delete_pass":
            return self.finaliser.run_delete_pass(task)
        return self.run_page(task)

    def run_page(self, task: PageTask) -> str:
        """Process one queued key range; the last one done finalises the run. Returns what happened."""
        engine = self.engine
        plan = self.checkpoints.get_plan(task.template, task.scope, task.run_id)
        if plan is None or plan.finalizing:
            return "stale"  # the run was finalised (or never planned): nothing to do
        page = self.checkpoints.page(plan, task.index)
        if page is None:
            return "stale"
        if page.status == PageStatus.DONE:
            self.finaliser.maybe_finalize(task.scope, task.run_id)
            return "duplicate"
        try:
            LeaseKeeper(engine.state, task.template, DIRECTION_OUT, task.scope, task.run_id, engine.lease_s).renew()
        except LeaseLost:
            log(logger, logging.WARNING, "key range of a run that lost its lease; left to the run that holds it",
                template=task.template, scope=task.scope, run_id=task.run_id, index=task.index)
            return "stale"
        try:
            summary = self.ranges.run_task(task, plan, page)
        except RunAborted as exc:
            # The range's first records all failed the same way: the run fails with the reason and lets its lease
            # go, so the other ranges stop (stale); the next timer run resumes it, after its preflight. Its parked
            # records go with the next run again (the cause is one for all, not their data).
            engine.state.parked.stop_waiting(engine.name, exc.keys)
            abort_run(engine.state, task.template, DIRECTION_OUT, task.scope, task.run_id, f"RunAborted: {exc}")
            return "failed"
        pages = self.checkpoints.pages(plan)
        log_range_done(task, plan, pages, summary)
        self.finaliser.maybe_finalize(task.scope, task.run_id, pages=pages)
        return "done"
