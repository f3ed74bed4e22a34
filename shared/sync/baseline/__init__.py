"""The inbound baseline: the first Dataverse -> Commerce run, and the re-baseline after a rejected token.

Change tracking's initial read pages only through nextLinks, in an order of its own, and takes neither
``$filter``, ``$orderby`` nor ``$top`` (docs/protocol-notes.md §2.11), so it cannot be split into parts to compare, and row
by row it costs a state read and a Commerce read per row. The baseline therefore takes two steps:

1. **The token.** The tracked initial set is paged through (``odata.maxpagesize``, with the change feed's
   ``$select``, which the deltaLink keeps for the delta runs; no work per row) just to reach its
   ``@odata.deltaLink`` on the last page, counting the rows (the progress total). The nextLink of each page is
   checkpointed, so a run stopped here goes on from its last page. The link is kept in the run's checkpoint and
   becomes the watermark when the run closes: a change made after the token arrives with the next delta run, one
   made while the ranges are compared may be seen by both, which is idempotent (its image then equals the one
   recorded, and nothing is written).
2. **The comparison, by key ranges** ``(after, through]`` of the F&O key, planned from both sides' keys (each range
   holds at most a page of each side's rows, ``SYNC_PAGE_SIZE`` up to 5,000; a table with a company lookup is
   planned from Commerce's keys, since its GUIDs do not sort like company codes) and checkpointed like a scan's
   (``<prefix>pages``). Per range (``compare``): the Dataverse rows of the range by a normal query, Commerce's rows
   from the range on, the synced states of the keys in one query per state bucket, and each row decided by
   ``InboundSync.decide``; rows equal on both sides cost no request.

**In place** (``run``: the CLI, or the timer with ``SYNC_FAN_OUT=false``) one process takes the token, then plans
a range, compares it, checkpoints it, and so on, with progress (rows compared out of the token pass's count, rate,
ETA) in the log and the CLI's bar. **Fanned out** (``start``: the timer by default) the timer takes the token,
plans every range (keys only) and queues one ``PageTask`` (``kind="inbound"``) per range on the pages queue; the
page workers compare them (``run_task``), renewing the run's lease, and the worker that completes the last range
closes the run (an ETag claim on the plan row). **Resume**: a run that fails or crashes leaves its id in the
watermark (``open_run``); the next run of either kind takes it over: a token pass goes on from its last page,
planning from its last range, and only the ranges not done are compared. The run closes with the watermark set to
the deltaLink taken first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.dataverse.client import ODATA_HEADERS
from shared.http.errors import ApiError, BadRequestError, NotFoundError
from shared.messages import PageTask
from shared.observability import log
from shared.state.checkpoints import CheckpointConflict, PageCheckpoint, PageStatus, RunCheckpoint, all_done
from shared.state.store import Watermark
from shared.sync.baseline.compare import SOURCE, RangeCompare
from shared.sync.baseline.sides import BaselineSides, Key
from shared.sync.runs import ALL, DIRECTION_IN, LeaseKeeper, LeaseLost, Progress, Run, RunStatus, RunSummary

if TYPE_CHECKING:
    from shared.sync.inbound import InboundSync

__all__ = ["SOURCE", "Baseline"]

logger = logging.getLogger("loyaltysync.inbound")
Enqueue = Callable[[PageTask], None]
TOKEN_LOG_EVERY = 20  # pages of the token pass between progress lines
# Seconds a fanned-out invocation (the timer, or an ``inbound_plan`` task) spends taking the token and planning before
# it hands the rest to the next task: well inside Consumption's default function timeout of 5 minutes.
PLAN_BUDGET_S = 180.0


class Baseline:
    """One template's inbound baselines (see the module docstring)."""

    def __init__(self, inbound: InboundSync, page_size: int) -> None:
        self.inbound = inbound
        self.name = inbound.name
        self.state = inbound.state
        self.checkpoints = inbound.state.checkpoints
        self.dataverse = inbound.dataverse
        self.sides = BaselineSides(inbound.plan, inbound.commerce, inbound.dataverse, page_size,
                                   inbound.images.select)
        self.compare = RangeCompare(inbound, self.sides)
        self.plan_budget_s = PLAN_BUDGET_S

    # -- a run's plan -------------------------------------------------------------------------------------

    def open_run_of(self, mark: Watermark) -> str | None:
        """The id of an unfinished baseline the watermark names, if its checkpoints are still there."""
        if not mark.open_run:
            return None
        return mark.open_run if self.checkpoints.get_plan(self.name, ALL, mark.open_run) is not None else None

    def resume(self, run: Run) -> RunCheckpoint | None:
        """The plan of the unfinished baseline this run took over; None for a new run."""
        plan = self.checkpoints.get_plan(self.name, ALL, run.summary.run_id)
        if plan is None:
            return None
        run.started_at = plan.started_at or run.started_at
        run.summary.mode = plan.mode
        if plan.closing:  # whoever claimed closing held the lease, which has expired since: it died first
            plan.closing = False
            plan = self.checkpoints.save_plan(plan)
        return plan

    def open(self, run: Run, mode: str) -> RunCheckpoint:
        """A new baseline's plan row, and its id in the watermark (``open_run``) so a failure resumes it."""
        run.summary.mode = mode
        plan = self.checkpoints.save_plan(RunCheckpoint(self.name, ALL, run.summary.run_id, started_at=run.started_at,
                                                        mode=mode))
        run.lease.open_run = run.summary.run_id
        run.lease = self.state.watermarks.save(run.lease)
        return plan

    # -- step 1: the token ------------------------------------------------------------------------------

    def _tracked_bodies(self, plan: RunCheckpoint) -> Iterator[dict[str, Any]]:
        core = self.dataverse.core
        headers = {**ODATA_HEADERS, "Prefer": f"odata.track-changes,odata.maxpagesize={self.dataverse.page_size}"}
        if plan.token_next:
            try:
                first = core.get_json(plan.token_next, headers=headers)
            except (BadRequestError, NotFoundError) as exc:  # a nextLink that no longer holds: take it again
                log(logger, logging.WARNING, "tracked read could not go on from its checkpoint; starting it again",
                    template=self.name, run_id=plan.run_id, error=exc.reason)
                plan.token_next, plan.total = "", 0
            else:
                yield first
                if first.get("@odata.nextLink"):
                    yield from core.iter_bodies(str(first["@odata.nextLink"]), headers=headers)
                return
        # The columns the change feed reads: the deltaLink keeps the query it was taken with, and the delta runs
        # follow it verbatim.
        yield from core.iter_bodies(self.inbound.dv_entity_set, params={"$select": ",".join(self.inbound.images.select)},
                                    headers=headers)

    def take_token(self, plan: RunCheckpoint, heartbeat: Callable[[], None], *,
                   deadline: float | None = None) -> RunCheckpoint:
        """Page through the tracked initial set to its deltaLink, counting rows; checkpointed per page. With a
        ``deadline`` (the clock's monotonic time) it stops after the page that reaches it (``token_done`` False)."""
        if plan.token_done:
            return plan
        pages = 0
        for body in self._tracked_bodies(plan):
            # ``total`` holds the rows counted up to ``token_next`` (none when the pass starts, or starts again).
            rows = (max(plan.total, 0) if plan.token_next else 0) + len(body.get("value") or [])
            pages += 1
            heartbeat()
            next_link = body.get("@odata.nextLink")
            if next_link:
                plan.token_next, plan.total = str(next_link), rows
                plan = self.checkpoints.save_plan(plan)
                if pages % TOKEN_LOG_EVERY == 0:
                    log(logger, logging.INFO, "taking the change-tracking token", template=self.name,
                        run_id=plan.run_id, dataverse_rows=rows, pages=pages)
                if deadline is not None and self.state.clock.monotonic() >= deadline:
                    return plan  # the next invocation goes on from this page
                continue
            delta_link = body.get("@odata.deltaLink")
            if not delta_link:
                raise ApiError("change tracking answered without an @odata.deltaLink", method="GET",
                               url=self.dataverse.core.url(self.inbound.dv_entity_set))
            plan.delta_link, plan.token_next, plan.token_done, plan.total = str(delta_link), "", True, rows
        plan = self.checkpoints.save_plan(plan)
        log(logger, logging.INFO, "change-tracking token taken", template=self.name, run_id=plan.run_id,
            dataverse_rows=plan.total, pages=pages)
        return plan

    # -- step 2: key ranges -------------------------------------------------------------------------------

    def plan_next(self, plan: RunCheckpoint, *, keys_only: bool) -> tuple[RunCheckpoint, PageCheckpoint,
                                                                          tuple[list[dict[str, Any]], Key | None]]:
        """Plan and record the range after the last one: through the nearer of the next page of keys on either
        side (open-ended when neither has a page left). Returns the Commerce rows read (keys only for a queue) and
        the key they are complete through."""
        after: Key | None = plan.last_through
        fo_rows, fo_through = self.sides.commerce_page(after, keys_only=keys_only)
        dv_through = self.sides.dataverse_through(after)
        through = self.sides.smaller(after, fo_through, dv_through)
        page = PageCheckpoint(plan.planned, after, through)
        plan = self.checkpoints.add_page(plan, page)
        if through is None:
            plan.planning_done = True
            plan = self.checkpoints.save_plan(plan)
        return plan, page, (fo_rows, fo_through)

    def _compare(self, plan: RunCheckpoint, page: PageCheckpoint, *,
                 commerce: tuple[list[dict[str, Any]], Key | None] | None,
                 heartbeat: Callable[[], None], tick: Callable[[RunSummary], None] | None = None) -> RunSummary:
        summary = RunSummary(template=self.name, scope=ALL, run_id=plan.run_id, direction=DIRECTION_IN, mode=plan.mode)
        self.compare.process(page.after, page.through, first=page.index == 0, summary=summary,
                             commerce=commerce, tick=tick, heartbeat=heartbeat)
        page.counts = summary.counts()
        page.status = PageStatus.DONE
        self.checkpoints.complete_page(plan, page, b"")
        return summary

    # -- in place ---------------------------------------------------------------------------------------

    def run(self, run: Run, plan: RunCheckpoint, *, progress: Progress | None = None) -> RunSummary:
        summary = run.summary
        self.sides.forget_companies()
        try:
            plan = self.take_token(plan, run.heartbeat)
            live = RunSummary(template=self.name, scope=ALL, run_id=plan.run_id, direction=DIRECTION_IN,
                              mode=plan.mode)

            def tick(page: RunSummary) -> None:
                if progress is not None:
                    live.set_counts(summary.counts())
                    live.add(page.counts())
                    progress(live, plan.total)

            for page in self.checkpoints.pages(plan):  # a resumed run: what was done, and what was only planned
                if page.status == PageStatus.DONE:
                    summary.add(page.counts)
                    continue
                summary.add(self._compare(plan, page, commerce=None, heartbeat=run.heartbeat, tick=tick).counts())
                self._report(plan, summary.seen, run.elapsed(), page.index)
            while not plan.planning_done:
                plan, page, commerce = self.plan_next(plan, keys_only=False)
                summary.add(self._compare(plan, page, commerce=commerce, heartbeat=run.heartbeat, tick=tick).counts())
                run.heartbeat()
                self._report(plan, summary.seen, run.elapsed(), page.index)
        except BaseException as exc:
            run.fail(exc)  # the open run stays in the watermark: the next run resumes it
            raise
        return self.close(run, plan)

    def _report(self, plan: RunCheckpoint, done: int, elapsed_s: float, index: int, ranges_done: int | None = None) -> None:
        """Progress in the log: Dataverse rows compared out of the token pass's count, the rate and an ETA."""
        rate = done / max(elapsed_s, 1e-6)
        total = plan.total if plan.token_done else -1
        eta_s = round(max(total - done, 0) / rate) if total >= 0 and rate else None
        log(logger, logging.INFO, "inbound range done", template=self.name, run_id=plan.run_id, index=index,
            ranges_done=ranges_done if ranges_done is not None else index + 1,
            ranges=plan.planned if plan.planning_done else "?", done=done, total=total if total >= 0 else "?",
            rate_per_s=round(rate), eta_s=eta_s if eta_s is not None else "?")

    # -- fanned out ------------------------------------------------------------------------------------

    def start(self, run: Run, plan: RunCheckpoint, enqueue: Enqueue) -> RunSummary:
        """Take the token, plan the ranges (keys only) and queue one task per range; the lease stays with the run
        until the worker of the last range closes it. A resumed run's ranges not done are queued again first. What
        the timer cannot finish within ``plan_budget_s`` (a million rows' token pass alone is 200 pages) goes on in
        an ``inbound_plan`` task on the same queue, as often as needed."""
        try:
            queued = 0
            for page in self.checkpoints.pages(plan):
                if page.status != PageStatus.DONE:
                    enqueue(self._task(plan, page.index))
                    queued += 1
            plan, planned, more = self._advance(plan, run.heartbeat, enqueue)
            queued += planned
        except BaseException as exc:
            run.fail(exc)
            raise
        run.summary.status = RunStatus.FANNED_OUT
        run.summary.detail = (f"{plan.planned} key ranges, {queued} queued" +
                              ("; taking the token and planning go on in the pages queue" if more else ""))
        log(logger, logging.INFO, "inbound baseline fanned out", template=self.name, run_id=plan.run_id,
            ranges=plan.planned, queued=queued, dataverse_rows=plan.total if plan.token_done else "?",
            planning_done=plan.planning_done)
        if more:
            enqueue(self._task(plan, 0, kind="inbound_plan"))
            return run.summary
        closed = self.maybe_close(plan)  # every range may already be done (a resumed run)
        return closed or run.summary

    def _advance(self, plan: RunCheckpoint, heartbeat: Callable[[], None],
                 enqueue: Enqueue) -> tuple[RunCheckpoint, int, bool]:
        """Take the token, then plan ranges and queue each, until done or ``plan_budget_s`` is spent. Returns the
        plan, how many ranges were queued, and whether there is more to do."""
        deadline = self.state.clock.monotonic() + self.plan_budget_s
        plan = self.take_token(plan, heartbeat, deadline=deadline)
        if not plan.token_done:
            return plan, 0, True
        queued = 0
        while not plan.planning_done:
            if queued and self.state.clock.monotonic() >= deadline:
                return plan, queued, True
            plan, page, _ = self.plan_next(plan, keys_only=True)
            enqueue(self._task(plan, page.index))
            queued += 1
            heartbeat()
        return plan, queued, False

    def _task(self, plan: RunCheckpoint, index: int,
              kind: Literal["inbound", "inbound_plan"] = "inbound") -> PageTask:
        return PageTask(kind=kind, template=self.name, scope=ALL, run_id=plan.run_id, index=index)

    def run_task(self, task: PageTask, enqueue: Enqueue | None = None) -> str:
        """One queued task: compare a range (the worker that completes the last one closes the run), or go on taking
        the token and planning (``inbound_plan``, which needs ``enqueue``). Returns what happened."""
        plan = self.checkpoints.get_plan(task.template, task.scope, task.run_id)
        if plan is None or plan.closing:
            return "stale"  # the run was closed (or never planned): nothing to do
        if task.kind == "inbound_plan":
            return self._go_on_planning(task, plan, enqueue)
        page = self.checkpoints.page(plan, task.index)
        if page is None:
            return "stale"
        if page.status == PageStatus.DONE:
            self.maybe_close(plan)
            return "duplicate"
        lease = self._lease(task)
        if lease is None:
            return "stale"
        self.sides.forget_companies()
        self._compare(plan, page, commerce=None, heartbeat=lease.heartbeat)
        pages = self.checkpoints.pages(plan)
        done = [p for p in pages if p.status == PageStatus.DONE]
        self._report(plan, sum(p.counts.get("seen", 0) for p in done), self._elapsed(plan), task.index, len(done))
        self.maybe_close(plan, pages)
        return "done"

    def _lease(self, task: PageTask) -> LeaseKeeper | None:
        """The run's lease, renewed for one task; None (logged) when another run holds it now."""
        lease = LeaseKeeper(self.state, self.name, DIRECTION_IN, ALL, task.run_id, self.inbound.lease_s)
        try:
            lease.renew()
        except LeaseLost:
            log(logger, logging.WARNING, "inbound baseline task of a run that lost its lease; left to the run that "
                "holds it", template=task.template, run_id=task.run_id, kind=task.kind, index=task.index)
            return None
        return lease

    def _go_on_planning(self, task: PageTask, plan: RunCheckpoint, enqueue: Enqueue | None) -> str:
        assert enqueue is not None, "planning queues key ranges: it needs the pages queue"
        if plan.planning_done:
            self.maybe_close(plan)
            return "duplicate"
        lease = self._lease(task)
        if lease is None:
            return "stale"
        try:
            plan, _, more = self._advance(plan, lease.heartbeat, enqueue)
        except CheckpointConflict:
            return "duplicate"  # the same task delivered twice: the other delivery goes on with it
        if more:
            enqueue(self._task(plan, 0, kind="inbound_plan"))
        else:
            self.maybe_close(plan)
        return "planned"

    def _elapsed(self, plan: RunCheckpoint) -> float:
        try:
            return (self.state.clock.now() - datetime.fromisoformat(plan.started_at)).total_seconds()
        except ValueError:
            return 0.0

    def maybe_close(self, plan: RunCheckpoint, pages: list[PageCheckpoint] | None = None) -> RunSummary | None:
        """Close the run once planning is done and every range is (exactly once: an ETag claim on the plan row)."""
        plan = self.checkpoints.get_plan(plan.template, plan.scope, plan.run_id) or plan
        if plan.closing or not plan.planning_done:
            return None
        pages = pages if pages is not None else self.checkpoints.pages(plan)
        if not all_done(pages, plan.planned):
            return None
        claimed = self.checkpoints.claim_closing(plan)
        if claimed is None:
            return None  # another worker closes it
        plan = claimed
        mark = self.state.watermarks.get(self.name, DIRECTION_IN, ALL)
        summary = RunSummary(template=self.name, scope=ALL, run_id=plan.run_id, direction=DIRECTION_IN, mode=plan.mode)
        run = Run(self.state, mark, summary, lease_s=self.inbound.lease_s,
                  started_at=plan.started_at or mark.last_run_started)
        run.started = self.state.clock.monotonic() - self._elapsed(plan)
        return self.close(run, plan, pages)

    def close(self, run: Run, plan: RunCheckpoint, pages: list[PageCheckpoint] | None = None) -> RunSummary:
        """Add up the ranges' counts, set the watermark to the token taken first, drop the checkpoints."""
        totals = RunSummary(template=self.name, scope=ALL, run_id=plan.run_id, direction=DIRECTION_IN)
        for page in pages if pages is not None else self.checkpoints.pages(plan):
            totals.add(page.counts)
        run.summary.set_counts(totals.counts())
        result = run.finish(advance=True, delta_link=plan.delta_link, open_run="")
        self.checkpoints.drop(plan)
        return result
