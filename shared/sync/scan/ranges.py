"""Key ranges of a full outbound scan: the ``$filter`` of a range, reading one, and processing one
(map, compare, write in chunks, checkpoint with the digests of the keys it saw)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shared.http.urls import literal
from shared.messages import PageTask
from shared.observability import log
from shared.state.checkpoints import PageCheckpoint, PageStatus, RunCheckpoint
from shared.sync.chunks import ChunkPool
from shared.sync.digests import KeyDigests
from shared.sync.engine import OutboundSync
from shared.sync.runs import RunSummary, scope_company

logger = logging.getLogger("loyaltysync.sync")
MAX_PAGE_SIZE = 10_000  # F&O's server page (docs/protocol-notes.md §3.2), and what a checkpoint's digests hold
# Called per record of a range being processed: the range's counts so far and how many of its records were seen.
Tick = Callable[[RunSummary, int], None]


def _ticking(seen: KeyDigests, tick: Tick, page: RunSummary) -> Callable[[str], None]:
    """``seen.add`` that also ticks once per record."""
    count = 0

    def see(row_key: str) -> None:
        nonlocal count
        seen.add(row_key)
        count += 1
        tick(page, count)

    return see


def range_filter(properties: list[str], after: tuple[Any, ...] | None, through: tuple[Any, ...] | None) -> str | None:
    """An OData ``$filter`` for the keys in ``(after, through]``, compared as tuples in ``properties`` order
    (``a gt x or (a eq x and b gt y)`` for composite keys). None: the whole key space."""

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


class RangeReader:
    """Reads key ranges of one template in Commerce's key order (keyset paging: ``key gt <last>``, ``$top``)."""

    def __init__(self, engine: OutboundSync, page_size: int) -> None:
        self.engine = engine
        self.page_size = min(page_size, MAX_PAGE_SIZE)
        # The key order of a scope: the key properties, without dataAreaId (the scope fixes it).
        self.order = [p for p in engine.plan.key_properties if p != "dataAreaId"]

    def _key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(p) for p in self.order)

    def read(self, company: str | None, after: tuple[Any, ...] | None, through: tuple[Any, ...] | None, *,
             top: int | None = None, keys_only: bool = False,
             on_total: Callable[[int], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        select = self.order if keys_only else list(self.engine.plan.select_properties)
        return self.engine.commerce.iter_pages(self.engine.entity_set, select=select, company=company,
                                               order_by=self.order,
                                               where=self.engine.where(range_filter(self.order, self.typed(after),
                                                                                    self.typed(through))),
                                               top=top, on_total=on_total)

    def typed(self, key: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """A range bound (from a row, or a checkpoint's JSON) as F&O literals: date parts bare, exactly as read."""
        if key is None:
            return None
        plan = self.engine.plan
        return tuple(plan.fo_literal(prop, value) for prop, value in zip(self.order, key, strict=True))

    def rows(self, company: str | None, page: PageCheckpoint) -> Iterable[dict[str, Any]]:
        return [row for chunk in self.read(company, page.after, page.through) for row in chunk]

    def next_range(self, company: str | None, plan: RunCheckpoint, *, keys_only: bool,
                   on_total: Callable[[int], None] | None = None) -> tuple[PageCheckpoint, Iterable[dict[str, Any]]]:
        """Plan the range after the last one: up to a page of rows; fewer means it is the open-ended last."""
        after = plan.last_through
        rows: list[dict[str, Any]] = []
        for page in self.read(company, after, None, top=self.page_size, keys_only=keys_only, on_total=on_total):
            rows.extend(page)
        through = self._key(rows[-1]) if len(rows) >= self.page_size else None
        return PageCheckpoint(plan.planned, after, through), rows


class RangeWorker:
    """Processes key ranges: in place (one process, ranges in order) or one queued ``PageTask`` at a time."""

    def __init__(self, engine: OutboundSync, reader: RangeReader) -> None:
        self.engine = engine
        self.reader = reader
        self.checkpoints = engine.state.checkpoints

    def process(self, page: PageCheckpoint, rows: Iterable[dict[str, Any]], plan: RunCheckpoint, partition: str,
                parked: set[str], pool: ChunkPool, summary: RunSummary, *, tick: Tick | None = None) -> None:
        """Compare and write one range's rows; checkpoint it once every write and state of it is in. ``tick``
        is called once per record compared (for a progress bar)."""
        page_summary = RunSummary(template=plan.template, scope=plan.scope, run_id=plan.run_id)
        seen = KeyDigests()
        self.engine.compare_rows(rows, partition, parked, page_summary, pool,
                                 seen.add if tick is None else _ticking(seen, tick, page_summary))
        pool.wait()  # the range is checkpointed only once all its writes and states are in
        page.counts = page_summary.counts()
        page.status = PageStatus.DONE
        self.checkpoints.complete_page(plan, page, seen.to_bytes())
        summary.add(page.counts)

    def run_task(self, task: PageTask, plan: RunCheckpoint, page: PageCheckpoint) -> RunSummary:
        """One queued key range of a fanned-out run (the caller checked the run and the lease)."""
        engine = self.engine
        company = scope_company(task.scope)
        partition = engine.partition(company)
        parked = engine.state.parked.keys(engine.name)
        pool = engine.chunk_pool(partition, parked)
        summary = RunSummary(template=task.template, scope=task.scope, run_id=task.run_id)
        try:
            self.process(page, self.reader.rows(company, page), plan, partition, parked, pool, summary)
            pool.finish()
        except BaseException:
            pool.abandon()
            raise
        return summary


def log_range_done(task: PageTask, plan: RunCheckpoint, pages: list[PageCheckpoint], summary: RunSummary) -> None:
    done = [p for p in pages if p.status == PageStatus.DONE]
    log(logger, logging.INFO, "key range done", template=task.template, scope=task.scope, run_id=task.run_id,
        index=task.index, ranges_done=len(done), ranges=plan.planned if plan.planning_done else "?",
        run_seen=sum(p.counts.get("seen", 0) for p in done), total=plan.total if plan.total >= 0 else "?",
        **summary.counts())
