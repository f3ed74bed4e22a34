"""Full outbound scans split into key ranges, checkpointed in Table Storage, run here or fanned out.

A scan of a scope (a template, or one legal entity of a company-specific one) is a sequence of key
ranges ``(after, through]`` in Commerce's own key order, each about ``SYNC_PAGE_SIZE`` keys; the last
range is open-ended, so the ranges cover the whole key space whatever is created or deleted meanwhile.
Each range is planned (a row in ``<prefix>pages``) before it is read, and marked done with its counts
and the digests of the keys it saw after every changed record in it is written and its state recorded.

* **In place** (``run``: the CLI, or the timer with ``SYNC_FAN_OUT=false``): one process plans a range
  from the rows it reads (keyset paging: ``key gt <last>``, ``$top``), processes it, checkpoints it.
* **Fanned out** (``start``: the timer by default): the planner reads keys only, plans every range and
  puts one message per range on the template's pages queue; the queue-triggered workers, on as many
  instances as the host scales to, each read and process one range. Workers renew the run's lease.
* **Resume**: a run that crashed or failed leaves its id in the watermark (``open_run``). The next run
  takes that id over: ranges already done are not read again, planned ones are redone, planning
  continues after the last planned range.
* **Finalise**: when planning is done and every range is done, exactly one party (an ETag claim on the
  plan row) looks for deletes: states whose key no range saw. In place it searches every state bucket
  itself. Fanned out it splits the search into delete checks of whole state buckets (about
  ``DELETE_CHECK_STATES`` states each) queued as tasks on the same queue, so no invocation reads every
  state of a large scope; the worker that finishes the last check closes the run (another ETag claim).
* **Close**: sum the counts of the ranges and checks, advance the watermark, remove the checkpoints.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from shared.observability import log
from shared.state.checkpoints import CheckpointConflict, DeleteCheck, PageCheckpoint, RunPlan, key_from_json
from shared.state.store import Watermark
from shared.sync.runs import LeaseLost, Run, RunSummary

if TYPE_CHECKING:
    from shared.sync.engine import KeyDigests, OutboundSync, Progress

logger = logging.getLogger("loyaltysync.sync")
DEFAULT_PAGE_SIZE = 5000
MAX_PAGE_SIZE = 10_000  # F&O's server page (protocols.md §3.2), and what a checkpoint's digests hold
# States one delete check reads: tens of seconds against Table Storage, well inside a function's timeout.
DELETE_CHECK_STATES = 100_000


class PageTask(BaseModel):
    """A queue message: process one planned key range of a run."""

    kind: Literal["page", "deletes"] = "page"  # a key range, or a delete check (``index``: its number)
    template: str = Field(min_length=1, max_length=100)
    scope: str = Field(min_length=1, max_length=100)
    run_id: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=0)


Enqueue = Callable[[PageTask], None]


def range_filter(properties: list[str], after: tuple[Any, ...] | None, through: tuple[Any, ...] | None) -> str | None:
    """An OData ``$filter`` for the keys in ``(after, through]``, compared as tuples in ``properties`` order
    (``a gt x or (a eq x and b gt y)`` for composite keys). None: the whole key space."""
    from shared.http.urls import literal

    def beyond(key: tuple[Any, ...], strict: str, last: str) -> str:
        terms: list[str] = []
        for n in range(len(properties)):
            equal = [f"{properties[i]} eq {literal(key[i])}" for i in range(n)]
            equal.append(f"{properties[n]} {last if n == len(properties) - 1 else strict} {literal(key[n])}")
            terms.append(" and ".join(equal))
        return " or ".join(f"({t})" for t in terms) if len(terms) > 1 else terms[0]

    clauses = []
    if after is not None:
        clauses.append(beyond(after, "gt", "gt"))
    if through is not None:
        clauses.append(beyond(through, "lt", "le"))
    if not clauses:
        return None
    return " and ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]


class PagedScan:
    """One outbound engine's paged, checkpointed scans."""

    def __init__(self, engine: OutboundSync, *, page_size: int | None = None, enqueue: Enqueue | None = None,
                 delete_check_states: int = DELETE_CHECK_STATES) -> None:
        self.engine = engine
        self.delete_check_states = delete_check_states
        self.page_size = min(page_size or engine.page_size, MAX_PAGE_SIZE)
        self.enqueue = enqueue
        self.checkpoints = engine.state.checkpoints
        # The key order of a scope: the key properties, without dataAreaId (the scope fixes it).
        self.order = [p for p in engine.plan.key_properties if p != "dataAreaId"]

    # -- reading key ranges ------------------------------------------------------------------------------

    def _key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(p) for p in self.order)

    def _read(self, company: str | None, after: tuple[Any, ...] | None, through: tuple[Any, ...] | None, *,
              top: int | None = None, keys_only: bool = False,
              on_total: Callable[[int], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        select = self.order if keys_only else list(self.engine.plan.select_properties)
        return self.engine.commerce.iter_pages(self.engine.entity_set, select=select, company=company,
                                               order_by=self.order, where=range_filter(self.order, after, through),
                                               top=top, on_total=on_total)

    def _next_range(self, company: str | None, plan: RunPlan, *, keys_only: bool,
                    on_total: Callable[[int], None] | None = None) -> tuple[PageCheckpoint, list[dict[str, Any]]]:
        """Plan the range after the last one: up to a page of rows; fewer means it is the open-ended last."""
        after = key_from_json(plan.last_through)
        rows: list[dict[str, Any]] = []
        for page in self._read(company, after, None, top=self.page_size, keys_only=keys_only, on_total=on_total):
            rows.extend(page)
        through = self._key(rows[-1]) if len(rows) >= self.page_size else None
        return PageCheckpoint(plan.planned, after, through), rows

    # -- starting and resuming ---------------------------------------------------------------------------

    def _begin(self, company: str | None) -> tuple[Run, RunPlan] | RunSummary:
        engine = self.engine
        scope = company or "all"

        def resume(mark: Watermark) -> str | None:
            if not mark.open_run:
                return None
            plan = self.checkpoints.get_plan(engine.name, scope, mark.open_run)
            return mark.open_run if plan is not None else None

        run = Run.begin(engine.state, engine.name, "fo_to_dataverse", scope, engine.lease_s, resume=resume)
        if isinstance(run, RunSummary):
            return run
        plan = self.checkpoints.get_plan(engine.name, scope, run.summary.run_id)
        if plan is None:
            plan = self.checkpoints.save_plan(RunPlan(engine.name, scope, run.summary.run_id, started_at=run.started_at,
                                                      mode=run.summary.mode))
            run.lease.open_run = run.summary.run_id
            run.lease = engine.state.save_watermark(run.lease)
        else:
            run.started_at = plan.started_at or run.started_at
            run.summary.mode = plan.mode
            if plan.closing or (plan.finalizing and not plan.delete_checks):
                # Whoever claimed finalising (or closing) held the lease, which has expired since: it died
                # before it split the delete search, or before it closed the run. Do that again.
                plan.closing = ""
                plan.finalizing = plan.finalizing if plan.delete_checks else ""
                plan = self.checkpoints.save_plan(plan)
        return run, plan

    # -- in place ----------------------------------------------------------------------------------------

    def run(self, company: str | None, *, progress: Progress | None = None) -> RunSummary:
        begun = self._begin(company)
        if isinstance(begun, RunSummary):
            return begun
        run, plan = begun
        engine = self.engine
        summary = run.summary
        partition = engine.partition(company)
        parked = engine.state.parked_keys(engine.name)
        total: list[int] = []
        from shared.sync.engine import ChunkWriters

        writers = ChunkWriters(engine, partition, parked)
        try:
            for page in self.checkpoints.pages(plan):  # a resumed run: what was done, and what was only planned
                if page.status == "done":
                    summary.add(page.counts)
                    continue
                rows = [row for chunk in self._read(company, page.after, page.through) for row in chunk]
                self._process(page, rows, plan, partition, parked, writers, summary)
                self._report(run, company, total, progress)
            while not plan.planning_done:
                page, rows = self._next_range(company, plan, keys_only=False,
                                              on_total=total.append if not total else None)
                plan = self.checkpoints.add_page(plan, page)
                self._process(page, rows, plan, partition, parked, writers, summary)
                if page.through is None:
                    plan.planning_done = True
                    plan = self.checkpoints.save_plan(plan)
                run.heartbeat()
                self._report(run, company, total, progress)
            writers.finish()
        except BaseException as exc:
            writers.abandon()
            summary.status = "failed"
            summary.detail = f"{type(exc).__name__}: {exc}"
            run.finish(advance=False)  # the open run stays in the watermark: the next run resumes it
            raise
        return self._finalize(run, plan, company)

    def _process(self, page: PageCheckpoint, rows: list[dict[str, Any]], plan: RunPlan, partition: str,
                 parked: set[str], writers: Any, summary: RunSummary) -> None:
        from shared.sync.engine import KeyDigests

        page_summary = RunSummary(template=plan.template, scope=plan.scope, run_id=plan.run_id)
        seen = KeyDigests()
        self.engine.compare_rows(rows, partition, parked, page_summary, writers, seen.add)
        writers.wait()  # the range is checkpointed only once all its writes and states are in
        page.counts = page_summary.counts()
        page.status = "done"
        self.checkpoints.complete_page(plan, page, seen.to_bytes())
        summary.add(page.counts)

    def _report(self, run: Run, company: str | None, total: list[int], progress: Progress | None) -> None:
        summary = run.summary
        rate = summary.seen / max(run.elapsed(), 1e-6)
        expected = total[0] if total else None
        eta_s = round(max(expected - summary.seen, 0) / rate) if expected is not None and rate else None
        log(logger, logging.INFO, "page done", template=self.engine.name, scope=company or "all", seen=summary.seen,
            total=expected if expected is not None else "?", written=summary.written, rate_per_s=round(rate),
            eta_s=eta_s if eta_s is not None else "?", run_id=summary.run_id)
        if progress is not None:
            progress(summary, expected)

    # -- fanned out --------------------------------------------------------------------------------------

    def start(self, company: str | None) -> RunSummary:
        """Plan every key range of a scope (reading keys only) and queue one task per range; the lease stays
        with the run until a worker finalises it. A resumed run re-queues the ranges not done."""
        assert self.enqueue is not None, "fan-out needs a pages queue"
        begun = self._begin(company)
        if isinstance(begun, RunSummary):
            return begun
        run, plan = begun
        if plan.delete_checks:  # a resumed run that was searching for deletes: queue the checks not done
            checks = [c for c in self.checkpoints.delete_checks(plan) if c.status != "done"]
            for check in checks:
                self._queue(plan, check.index, "deletes")
            run.summary.status = "fanned_out"
            run.summary.detail = f"{len(checks)} of {plan.delete_checks} delete checks queued again"
            self._maybe_close(plan)
            return run.summary
        total: list[int] = []
        queued = 0
        for page in self.checkpoints.pages(plan):
            if page.status != "done":
                self._queue(plan, page.index, "page")
                queued += 1
        while not plan.planning_done:
            page, _ = self._next_range(company, plan, keys_only=True, on_total=total.append if not total else None)
            if total and plan.total < 0:
                plan.total = total[0]
            plan = self.checkpoints.add_page(plan, page)
            self._queue(plan, page.index, "page")
            queued += 1
            if page.through is None:
                plan.planning_done = True
                plan = self.checkpoints.save_plan(plan)
            run.heartbeat()
        run.summary.status = "fanned_out"
        run.summary.detail = f"{plan.planned} key ranges, {queued} queued"
        log(logger, logging.INFO, "run fanned out", template=plan.template, scope=plan.scope, run_id=plan.run_id,
            ranges=plan.planned, queued=queued, total=total[0] if total else "?")
        self._maybe_finalize(plan.scope)  # every range may already be done (a resumed run)
        return run.summary

    def _queue(self, plan: RunPlan, index: int, kind: Literal["page", "deletes"]) -> None:
        assert self.enqueue is not None, "fan-out needs a pages queue"
        self.enqueue(PageTask(kind=kind, template=plan.template, scope=plan.scope, run_id=plan.run_id, index=index))

    def run_task(self, task: PageTask) -> str:
        """One queued task: a key range or a delete check. Returns what happened."""
        return self.run_delete_check(task) if task.kind == "deletes" else self.run_page(task)

    def run_page(self, task: PageTask) -> str:
        """Process one queued key range; the last one done finalises the run. Returns what happened."""
        engine = self.engine
        company = None if task.scope == "all" else task.scope
        plan = self.checkpoints.get_plan(task.template, task.scope, task.run_id)
        if plan is None or plan.finalizing:
            return "stale"  # the run was finalised (or never planned): nothing to do
        page = self.checkpoints.page(plan, task.index)
        if page is None:
            return "stale"
        if page.status == "done":
            self._maybe_finalize(task.scope, task.run_id)
            return "duplicate"
        if not engine.state.renew_lease(task.template, "fo_to_dataverse", task.scope, task.run_id, engine.lease_s):
            log(logger, logging.WARNING, "key range of a run that lost its lease; left to the run that holds it",
                template=task.template, scope=task.scope, run_id=task.run_id, index=task.index)
            return "stale"
        from shared.sync.engine import ChunkWriters

        partition = engine.partition(company)
        parked = engine.state.parked_keys(engine.name)
        writers = ChunkWriters(engine, partition, parked)
        summary = RunSummary(template=task.template, scope=task.scope, run_id=task.run_id)
        try:
            rows = [row for chunk in self._read(company, page.after, page.through) for row in chunk]
            self._process(page, rows, plan, partition, parked, writers, summary)
            writers.finish()
        except BaseException:
            writers.abandon()
            raise
        pages = self.checkpoints.pages(plan)
        done = [p for p in pages if p.status == "done"]
        log(logger, logging.INFO, "key range done", template=task.template, scope=task.scope, run_id=task.run_id,
            index=task.index, ranges_done=len(done), ranges=plan.planned if plan.planning_done else "?",
            run_seen=sum(p.counts.get("seen", 0) for p in done), total=plan.total if plan.total >= 0 else "?",
            **summary.counts())
        self._maybe_finalize(task.scope, task.run_id, pages=pages)
        return "done"

    # -- finalising ----------------------------------------------------------------------------------------

    def _maybe_finalize(self, scope: str, run_id: str | None = None, *,
                        pages: list[PageCheckpoint] | None = None) -> RunSummary | None:
        """Finalise the run if planning is done and every range is; ``pages``: the ranges, if just read.
        Fanned out, finalising splits the delete search into checks queued as tasks; without a queue it runs here."""
        engine = self.engine
        if run_id is None:
            run_id = engine.state.get_watermark(engine.name, "fo_to_dataverse", scope).open_run
        plan = self.checkpoints.get_plan(engine.name, scope, run_id) if run_id else None
        if plan is None or plan.finalizing or not plan.planning_done:
            return None
        pages = pages if pages is not None else self.checkpoints.pages(plan)
        if any(p.status != "done" for p in pages):
            return None
        plan.finalizing = str(uuid.uuid4())
        try:
            plan = self.checkpoints.save_plan(plan)
        except CheckpointConflict:
            return None  # another worker claimed it
        if self.enqueue is not None:
            self._queue_delete_checks(plan, states=sum(p.counts.get("seen", 0) for p in pages))
            return None
        return self._finalize(self._run_of(plan), plan, None if scope == "all" else scope, claimed=True)

    def _finalize(self, run: Run, plan: RunPlan, company: str | None, *, claimed: bool = False) -> RunSummary:
        """Finalise here: search every state bucket for deletes, then close the run."""
        engine = self.engine
        if not claimed:
            plan.finalizing = str(uuid.uuid4())
            plan = self.checkpoints.save_plan(plan)
        summary = run.summary
        found = RunSummary(template=summary.template, scope=summary.scope, run_id=summary.run_id)
        try:
            engine.find_deletes(engine.partition(company), self._seen(plan), found, run.heartbeat)
        except BaseException as exc:
            plan.finalizing = ""
            self.checkpoints.save_plan(plan)  # let the next run finalise again
            summary.status = "failed"
            summary.detail = f"{type(exc).__name__}: {exc}"
            run.finish(advance=False)
            raise
        return self._close(run, plan, found=found.counts())

    def _seen(self, plan: RunPlan) -> KeyDigests:
        """The digests of every key the run's ranges saw (8 bytes a key: 8 MB for a million)."""
        from shared.sync.engine import KeyDigests

        seen = KeyDigests()
        for digests in self.checkpoints.iter_digests(plan):
            seen.add_bytes(digests)
        return seen

    def _close(self, run: Run, plan: RunPlan, checks: list[DeleteCheck] | None = None, *,
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
        for name, value in totals.counts().items():
            setattr(summary, name, value)
        result = run.finish(advance=True, open_run="")
        self.checkpoints.drop(plan)
        return result

    # -- the delete search, fanned out ------------------------------------------------------------------

    def _queue_delete_checks(self, plan: RunPlan, states: int) -> None:
        """Split the delete search into checks of about ``delete_check_states`` states each (whole state
        buckets), record them and queue one task each, so no single invocation reads every state of a scope
        (a million states take minutes to read; Consumption stops a function after five by default)."""
        buckets = self.engine.state.buckets
        count = min(buckets, max(1, -(-states // self.delete_check_states)))
        bounds = [buckets * n // count for n in range(count + 1)]
        checks = [DeleteCheck(n, bounds[n], bounds[n + 1]) for n in range(count)]
        try:
            plan = self.checkpoints.add_delete_checks(plan, checks)
        except BaseException:
            plan.finalizing = ""
            self.checkpoints.save_plan(plan)  # let the next worker or run finalise again
            raise
        for check in checks:
            self._queue(plan, check.index, "deletes")
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
        if check.status == "done":
            self._maybe_close(plan)
            return "duplicate"
        renewed = [0.0]

        def heartbeat() -> None:  # at most every third of the lease: renewing reads the watermark
            if time.monotonic() - renewed[0] < engine.lease_s / 3:
                return
            if not engine.state.renew_lease(task.template, "fo_to_dataverse", task.scope, task.run_id, engine.lease_s):
                raise LeaseLost(f"{task.template}/{task.scope}: another run took the lease")
            renewed[0] = time.monotonic()

        try:
            heartbeat()
        except LeaseLost:
            log(logger, logging.WARNING, "delete check of a run that lost its lease; left to the run that holds it",
                template=task.template, scope=task.scope, run_id=task.run_id, index=task.index)
            return "stale"
        company = None if task.scope == "all" else task.scope
        summary = RunSummary(template=task.template, scope=task.scope, run_id=task.run_id)
        engine.find_deletes(engine.partition(company), self._seen(plan), summary, heartbeat, buckets=check.buckets)
        check.counts = summary.counts()
        check.status = "done"
        self.checkpoints.complete_delete_check(plan, check)
        log(logger, logging.INFO, "delete check done", template=task.template, scope=task.scope, run_id=task.run_id,
            index=task.index, checks=plan.delete_checks, buckets=f"{check.first}-{check.stop - 1}", **summary.counts())
        self._maybe_close(plan)
        return "done"

    def _maybe_close(self, plan: RunPlan) -> RunSummary | None:
        """Close the run if every delete check is done; an ETag claim on the plan row makes it exactly once."""
        checks = self.checkpoints.delete_checks(plan)
        if len(checks) < plan.delete_checks or any(c.status != "done" for c in checks):
            return None
        plan = self.checkpoints.get_plan(plan.template, plan.scope, plan.run_id) or plan
        if plan.closing:
            return None
        plan.closing = str(uuid.uuid4())
        try:
            plan = self.checkpoints.save_plan(plan)
        except CheckpointConflict:
            return None  # another worker closes it
        return self._close(self._run_of(plan), plan, checks)

    def _run_of(self, plan: RunPlan) -> Run:
        """The run a worker finalises or closes: the lease as the watermark has it now (workers renew it)."""
        engine = self.engine
        mark = engine.state.get_watermark(engine.name, "fo_to_dataverse", plan.scope)
        summary = RunSummary(template=engine.name, scope=plan.scope, run_id=plan.run_id, mode=plan.mode)
        return Run(engine.state, mark, summary, lease_s=engine.lease_s, started_at=plan.started_at or mark.last_run_started)
