"""Aggregate templates (``"kind": "aggregate"``): groups of source lines folded into one record each.

The engine is ``OutboundSync`` with a different source: where a row template maps each Commerce row, an aggregate
template reads the lines of ``aggregate.source_entity_set`` ordered by the group key, folds each group while
streaming (``shared.balances.fold``: constant memory a group, whatever the number of lines) and hands the folded
records to the same compare (content hash against the synced state), chunked bulk writes, parking and deletes.

Which records to recompute:

* **Full build** (the template's ``schedule``, ``Scan``): key ranges of the range key (cards), checkpointed and
  fanned out like any scan (``LineReader`` plans a range from the cards of up to ``SYNC_PAGE_SIZE`` lines, so every
  range holds whole cards); the finaliser's delete search, through the mass-delete guard, removes the records of
  groups with no line left (a candidate is confirmed by reading its group's lines first).
* **Incremental pass** (``aggregate.incremental_schedule``, ``incremental``): reads only the lines whose watermark
  (``EntryDate`` and ``EntryTime``) is at most ``overlap_minutes`` before the newest one the last pass read (lines
  are not committed in that order); a line not read by the last pass touches its card, and a line of a pooled card
  ("As contact tender", inferred) touches every card of its customer. Cards due in the due index (a line vests,
  expires or enters the expiring-soon horizon: ``Balance.recompute_on``) are added with no read at all. All of
  those cards' lines are then re-read, several cards a request (``or``-ed filters within
  ``SYNC_BALANCE_FILTER_CHARS``: F&O has no ``in``, docs/protocol-notes.md §3.2), and folded again.
* **One card** (``sync_key``: a data event on the transactions' virtual table, a replay): the same recompute.

One-way: the records are written from Commerce only; an edit in Dataverse is overwritten by the next write of the
record (``OneWayGuard`` finds such edits through change tracking and recomputes their cards, with a log line).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.balances.fold import Balance, BalanceSettings, Folder, as_row
from shared.balances.lines import LineError, line_of
from shared.commerce.client import CommerceClient
from shared.dataverse.client import DataverseClient
from shared.http.errors import ApiError
from shared.http.urls import literal
from shared.mapping.model import AggregateSpec
from shared.mapping.plan import DataverseRecord, MappingError, Plan, column_digests
from shared.observability import log
from shared.state.checkpoints import PageCheckpoint, RunCheckpoint
from shared.state.store import StateStore, SyncedState, decode_key, encode_key
from shared.sync.chunks import ChunkPool, Pending
from shared.sync.digests import KeyDigests
from shared.sync.engine import OutboundSync
from shared.sync.runs import DIRECTION_OUT, Outcome, Run, RunStatus, RunSummary
from shared.sync.scan.ranges import RangeReader, range_filter

logger = logging.getLogger("loyaltysync.sync")
INCREMENTAL_SCOPE = "recent"  # the incremental pass's lease and status row (the full build's scope is "all")
FILTER_CHARS = 1800  # characters of an or-ed $filter (a conservative guess at F&O's URL limit: a setting)
Mapped = tuple[str, DataverseRecord, Mapping[str, Any]]


@dataclass
class CardFold:
    """What one card's lines fold into: a balance per reward point, the groups whose lines could not be read, the
    pooled customers its lines name, and the first day its balances change by themselves."""

    card: str
    balances: list[Balance] = field(default_factory=list)
    bad: dict[str, tuple[LineError, Mapping[str, Any]]] = field(default_factory=dict)
    customers: set[str] = field(default_factory=set)  # every customer its lines name (the pool index)
    pooled: set[str] = field(default_factory=set)  # those named with a pooled tender: their cards are affected
    due: date | None = None


def _hash_with_due(content_hash: str, due: date | None) -> str:
    """The content hash with the card's due day: a record whose due day moved is written again (its due entry with
    it), even when no column shows it (a line entering the horizon later)."""
    return hashlib.blake2b(f"{content_hash}|{due.isoformat() if due else ''}".encode(), digest_size=16).hexdigest()


def _datetime_literal(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LineReader(RangeReader):
    """An aggregate's source lines in key ranges of its range key: a range ``(after, through]`` of cards holds every
    line of its cards, streamed in group-key order."""

    def __init__(self, engine: AggregateSync, page_size: int) -> None:
        super().__init__(engine, page_size)
        spec = engine.spec
        self.order = [spec.range_key]
        self.sort = list(dict.fromkeys([spec.range_key, *spec.group_key]))

    def read(self, company: str | None, after: tuple[Any, ...] | None, through: tuple[Any, ...] | None, *,
             top: int | None = None, keys_only: bool = False,
             on_total: Callable[[int], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        select = self.order if keys_only else list(self.engine.plan.select_properties)
        return self.engine.commerce.iter_pages(self.engine.entity_set, select=select, order_by=self.sort,
                                               where=range_filter(self.order, after, through), top=top)

    def rows(self, company: str | None, page: PageCheckpoint) -> Iterator[dict[str, Any]]:
        for chunk in self.read(company, page.after, page.through):
            yield from chunk

    def next_range(self, company: str | None, plan: RunCheckpoint, *, keys_only: bool,
                   on_total: Callable[[int], None] | None = None) -> tuple[PageCheckpoint, Iterable[dict[str, Any]]]:
        """The next range ends at the card of the ``page_size``-th line after the last range (all of that card's
        lines included); fewer lines left make it the open-ended last. Planned from range keys only; its lines are
        streamed when it is processed."""
        after = plan.last_through
        count, last = 0, None
        for chunk in self.read(company, after, None, top=self.page_size, keys_only=True):
            count += len(chunk)
            last = chunk[-1] if chunk else last
        through = (last[self.order[0]],) if count >= self.page_size and last is not None else None
        page = PageCheckpoint(plan.planned, after, through)
        return page, ([] if keys_only else self.rows(company, page))


class AggregateSync(OutboundSync):
    """One aggregate template's records: folded from Commerce's lines, compared and written like rows."""

    def __init__(self, plan: Plan, commerce: CommerceClient, dataverse: DataverseClient, state: StateStore, *,
                 balances: BalanceSettings | None = None, overlap_minutes: int | None = None,
                 filter_chars: int = FILTER_CHARS, **options: Any) -> None:
        options["two_way"] = False  # one-way: nothing flows back, no shared image is kept
        super().__init__(plan, commerce, dataverse, state, **options)
        assert plan.aggregate is not None, "an aggregate template has an aggregate block"
        self.spec: AggregateSpec = plan.aggregate
        self.balance_settings = balances or BalanceSettings()
        self.overlap = timedelta(minutes=self.spec.overlap_minutes if overlap_minutes is None else overlap_minutes)
        self.filter_chars = filter_chars
        self.compare_size = max(self.bulk_size, 2000)  # folded records compared against one state read
        self.range_key = self.spec.range_key
        pooling = self.spec.pooling
        self.pooled_values = frozenset(v.lower() for v in pooling.pooled_values) if pooling else frozenset()
        self.reader_factory = LineReader  # scans read lines in ranges of whole cards
        self.lines_read = 0  # source lines folded by this engine (all runs): what a benchmark divides by
        self.changed_cards: set[str] = set()  # cards with a changed record in the last recompute

    def today(self) -> date:
        return self.balance_settings.today(self.state.clock.now())

    # -- folding ------------------------------------------------------------------------------------------------

    def _customer(self, row: Mapping[str, Any]) -> str | None:
        pooling = self.spec.pooling
        customer = row.get(pooling.customer_property) if pooling is not None else None
        return customer if isinstance(customer, str) and customer else None

    def _pooled_customer(self, row: Mapping[str, Any]) -> str | None:
        pooling = self.spec.pooling
        if pooling is None:
            return None
        tender = row.get(pooling.tender_property)
        customer = row.get(pooling.customer_property)
        if isinstance(tender, str) and tender.lower() in self.pooled_values and isinstance(customer, str) and customer:
            return customer
        return None

    def fold_cards(self, rows: Iterable[Mapping[str, Any]], today: date) -> Iterator[CardFold]:
        """Fold lines ordered by card: one ``CardFold`` per card, as soon as its last line is read."""
        settings = self.balance_settings
        current: CardFold | None = None
        folders: dict[str, Folder] = {}

        def finish(fold: CardFold) -> CardFold:
            fold.balances = [folder.result() for _, folder in sorted(folders.items())]
            days = [b.recompute_on for b in fold.balances if b.recompute_on is not None]
            fold.due = min(days) if days else None
            return fold

        lines = 0
        for row in rows:
            lines += 1
            card = row.get(self.range_key)
            card = card if isinstance(card, str) else ""
            if current is None or card != current.card:
                if current is not None:
                    yield finish(current)
                current, folders = CardFold(card), {}
            customer = self._customer(row)
            if customer is not None:
                current.customers.add(customer)
                if self._pooled_customer(row) is not None:
                    current.pooled.add(customer)
            try:
                line = line_of(row)
            except LineError as exc:
                point = row.get("RewardPointId")
                point = point if isinstance(point, str) else ""
                current.bad.setdefault(point, (exc, row))
                folders.pop(point, None)
                continue
            point = line.reward_point_id
            if point in current.bad:
                continue
            folder = folders.get(point)
            if folder is None:
                folder = folders[point] = Folder(card, point, today, settings)
            folder.add(line)
        if current is not None:
            yield finish(current)
        self.lines_read += lines

    def _map(self, fold: CardFold, mapped: list[Mapped], summary: RunSummary, seen: Callable[[str], None],
             guard: Any, source: str) -> None:
        """The card's folded records, mapped, into ``mapped``; a group that cannot be folded or mapped is parked
        with its reason (and reported seen, so no delete takes its record)."""
        for point, (exc, row) in fold.bad.items():
            summary.read()
            error = MappingError(exc.field, f"line of card {fold.card!r}, reward point {point!r}: {exc}")
            summary.count(self._park_unmappable(row, error, source))
            guard.failed(error)
            if fold.card and point:
                seen(encode_key((fold.card, point)))
        for balance in fold.balances:
            summary.read()
            row = as_row(balance)
            try:
                record = self.plan.to_dataverse(row)
            except MappingError as exc:
                summary.count(self._park_unmappable(row, exc, source))
                guard.failed(exc)
                seen(encode_key(balance.key))
                continue
            record.content_hash = _hash_with_due(record.content_hash, fold.due)
            mapped.append((encode_key(record.key), record, row))

    def _due_of(self, folds: dict[str, CardFold]) -> Callable[[list[Pending]], None]:
        """Before changed records are written: the due days of their cards go into the due index, their pooled
        customers into the pool index (a crash after the write then never leaves a card without its entries)."""
        def record(changed: list[Pending]) -> None:
            due: dict[str, date] = {}
            pool: set[tuple[str, str]] = set()
            self.changed_cards.update(record_.key[0] for record_, _, _ in changed)
            for record_, _, _ in changed:
                fold = folds.get(record_.key[0])
                if fold is not None and fold.due is not None:
                    due[fold.card] = fold.due
                if fold is not None:
                    pool.update((customer, fold.card) for customer in fold.customers)
            if due:
                self.state.aggregates.add_due(self.name, due)
            if pool:
                self.state.aggregates.add_pool(self.name, pool)
        return record

    # -- full build (driven range by range by ``shared.sync.scan``) ----------------------------------------------

    def compare_rows(self, rows: Iterable[dict[str, Any]], partition: str, parked: set[str], summary: RunSummary,
                     pool: ChunkPool, seen: Callable[[str], None]) -> None:
        """Fold one key range's lines while streaming them, compare the folded records with their states a batch
        at a time, and submit the changed ones in chunks."""
        today = self.today()
        mapped: list[Mapped] = []
        folds: dict[str, CardFold] = {}
        for fold in self.fold_cards(rows, today):
            self._map(fold, mapped, summary, seen, pool.guard, "timer")
            folds[fold.card] = fold
            if len(mapped) >= self.compare_size:
                self._compare(mapped, folds, partition, parked, summary, pool, seen)
                mapped, folds = [], {}
        if mapped:
            self._compare(mapped, folds, partition, parked, summary, pool, seen)

    def _compare(self, mapped: list[Mapped], folds: dict[str, CardFold], partition: str, parked: set[str],
                 summary: RunSummary, pool: ChunkPool, seen: Callable[[str], None]) -> None:
        # The states of a batch of whole cards in one query over every bucket (not one per bucket).
        known = self.state.synced.among(partition, [row_key for row_key, _, _ in mapped])
        self.compare_records(mapped, partition, parked, summary, pool, seen, known=known,
                             before_write=self._due_of(folds))

    def folded_rows(self, lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Lines ordered by card, folded as of today into the records' source rows (what reconcile compares)."""
        return [as_row(balance) for fold in self.fold_cards(lines, self.today()) for balance in fold.balances]

    def read(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """The folded record of one group as Commerce's lines make it now (None: the group has no line left)."""
        card, point = key[0], key[1]
        where = (f"{self.range_key} eq {literal(card)} and {self.spec.group_key[1]} eq {literal(point)}"
                 if len(self.spec.group_key) > 1 else f"{self.range_key} eq {literal(card)}")
        rows = (row for page in self.commerce.iter_pages(self.entity_set, select=list(self.plan.select_properties),
                                                         where=where, order_by=self.spec.group_key)
                for row in page if row.get(self.range_key) == card and row.get(self.spec.group_key[-1]) == point)
        for fold in self.fold_cards(rows, self.today()):
            for balance in fold.balances:
                if balance.key == (card, point):
                    record = as_row(balance)
                    return record
        return None

    # -- recomputing cards ---------------------------------------------------------------------------------------

    def _or_batches(self, prop: str, values: Iterable[str]) -> Iterator[tuple[list[str], str]]:
        """``values`` in batches whose ``prop eq v or ...`` filter stays within ``filter_chars``."""
        batch: list[str] = []
        clauses: list[str] = []
        size = 0
        for value in sorted(values):
            clause = f"{prop} eq {literal(value)}"
            if batch and size + len(clause) + 4 > self.filter_chars:
                yield batch, " or ".join(clauses)
                batch, clauses, size = [], [], 0
            batch.append(value)
            clauses.append(clause)
            size += len(clause) + 4
        if batch:
            yield batch, " or ".join(clauses)

    def cards_of_customers(self, customers: Iterable[str]) -> set[str]:
        """Every card of ``customers`` (their pooled cards): from the pool index the folds keep; a customer it
        does not know yet is looked up in Commerce (every card with a line naming it)."""
        pooling = self.spec.pooling
        if pooling is None:
            return set()
        wanted = set(customers)
        known = self.state.aggregates.pooled_cards(self.name, wanted)
        cards: set[str] = set().union(*known.values()) if known else set()
        for batch, where in self._or_batches(pooling.customer_property, wanted - known.keys()):
            wanted = {c.casefold() for c in batch}
            for page in self.commerce.iter_pages(self.entity_set, select=[self.range_key, pooling.customer_property],
                                                 where=where):
                for row in page:
                    customer = row.get(pooling.customer_property)
                    card = row.get(self.range_key)
                    if isinstance(customer, str) and customer.casefold() in wanted and isinstance(card, str) and card:
                        cards.add(card)
        return cards

    def recompute(self, cards: Iterable[str], summary: RunSummary, *, source: str,
                  pooled: bool = False, overwrite: frozenset[str] = frozenset()) -> set[str]:
        """Re-read every line of ``cards`` (several cards a request), fold them and write what changed. ``pooled``:
        also the cards of the pooled customers those lines name; ``overwrite``: row keys edited in Dataverse, written
        whole even when unchanged here. Returns the pooled customers seen."""
        partition = self.partition(None)
        parked = self.state.parked.keys(self.name)
        pool = self.chunk_pool(partition, parked)
        today = self.today()
        customers: set[str] = set()
        done: set[str] = set()
        self.changed_cards = set()
        todo = {c for c in cards if c}
        mapped: list[Mapped] = []
        folds: dict[str, CardFold] = {}
        known: dict[str, SyncedState] = {}
        seen: set[str] = set()
        try:
            while todo:
                for batch, where in self._or_batches(self.range_key, todo):
                    self._read_cards(batch, where, partition, pool, summary, today, source, mapped, folds, known, seen)
                done |= todo
                customers = set().union(*(f.pooled for f in folds.values()))
                todo = (self.cards_of_customers(customers) - done) if pooled and customers else set()
            for row_key in overwrite & known.keys():  # edited in Dataverse: written whole, whatever its hash
                state = known[row_key]
                known[row_key] = SyncedState(state.row_key, "", state.etag, state.control_number, state.shared, "")
            # Every changed record of the cards at once: chunks as large as SYNC_BULK_SIZE, not one per read.
            self.compare_records(mapped, partition, parked, summary, pool, seen.add, known=dict(known),
                                 before_write=self._due_of(folds))
            pool.finish()
        except BaseException:
            pool.abandon()
            raise
        return customers

    def _read_cards(self, batch: list[str], where: str, partition: str, pool: ChunkPool, summary: RunSummary,
                    today: date, source: str, mapped: list[Mapped], folds: dict[str, CardFold],
                    known: dict[str, SyncedState], seen: set[str]) -> None:
        """One or-ed read of a batch of cards: every line of each, folded; their states read too."""
        wanted = set(batch)
        rows = (row for page in self.commerce.iter_pages(self.entity_set, select=list(self.plan.select_properties),
                                                         where=where, order_by=self.reader_sort())
                for row in page if row.get(self.range_key) in wanted)  # exact: eq '…*…' is a wildcard in F&O
        start = len(mapped)
        for fold in self.fold_cards(rows, today):
            folds[fold.card] = fold
            self._map(fold, mapped, summary, seen.add, pool.guard, source)
        # The states of the records folded, by key (a point read each: a range over every bucket would scan the
        # table). A reward point whose lines all went is left to the full build's delete search.
        for row_key, _, _ in mapped[start:]:
            seen.add(row_key)
            state = self.state.synced.get(partition, row_key)
            if state is not None:
                known[row_key] = state

    def reader_sort(self) -> list[str]:
        return list(dict.fromkeys([self.range_key, *self.spec.group_key]))

    def sync_key(self, fo_key: Mapping[str, Any], *, source: str = "callback", control_number: int = 0,
                 decided: bool = False, force: bool = False, ours: frozenset[str] = frozenset()) -> str:
        """Recompute the card a key names (a data event's line, a replay) and the cards it pools with: written when
        a record was written, deleted when one went, else unchanged (or parked)."""
        card = fo_key.get(self.range_key)
        if not isinstance(card, str) or not card:
            raise MappingError(self.range_key, "key field is missing or empty")
        summary = RunSummary(template=self.name, scope="all", run_id=f"{source}:{card}")
        self.recompute([card], summary, source=source, pooled=True)
        if summary.written:
            return Outcome.WRITTEN
        if summary.deleted:
            return Outcome.DELETED
        if summary.failed:
            return Outcome.PARKED
        return Outcome.UNCHANGED

    # -- the incremental pass ------------------------------------------------------------------------------------

    def _moment(self, row: Mapping[str, Any]) -> datetime | None:
        value = row.get(self.spec.watermark_property)
        if not isinstance(value, str) or not value:
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        time_prop = self.spec.watermark_time_property
        if time_prop is not None:
            seconds = row.get(time_prop)
            if isinstance(seconds, int) and not isinstance(seconds, bool) and 0 <= seconds < 86_400:
                moment = moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(seconds=seconds)
        return moment

    def recent_filter(self, since: datetime) -> str:
        """Lines whose watermark is at or after ``since``: by date and time of day when the template names both."""
        prop, time_prop = self.spec.watermark_property, self.spec.watermark_time_property
        day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if time_prop is None:
            return f"{prop} ge {_datetime_literal(day)}"
        seconds = int((since.astimezone(UTC) - day).total_seconds())
        return (f"{prop} gt {_datetime_literal(day)} or ({prop} eq {_datetime_literal(day)} and "
                f"{time_prop} ge {seconds})")

    def _line_digest(self, row: Mapping[str, Any]) -> int:
        props = self.spec.line_key or sorted(row)
        blob = json.dumps([row.get(p) for p in props], default=str, separators=(",", ":"))
        return int.from_bytes(hashlib.blake2b(blob.encode("utf-8"), digest_size=8).digest(), "big")

    def incremental(self) -> RunSummary:
        """One incremental pass: recent lines → their cards (and pooled cards), plus the cards due today; re-read
        and refold them. Skipped until a full build has completed (it sets where the first pass starts)."""
        run = Run.begin(self.state, self.name, DIRECTION_OUT, INCREMENTAL_SCOPE, self.lease_s)
        if isinstance(run, RunSummary):
            return run
        try:
            return self._incremental(run)
        except BaseException as exc:
            run.fail(exc)
            raise

    def _incremental(self, run: Run) -> RunSummary:
        summary = run.summary
        build = self.state.watermarks.get(self.name, DIRECTION_OUT, "all")
        if not build.initial_completed_at:
            summary.status = RunStatus.SKIPPED
            summary.detail = "no full build has completed yet: run the template's scan first"
            log(logger, logging.INFO, "incremental pass skipped: no full build yet", template=self.name)
            return run.finish(advance=False, status=RunStatus.SKIPPED)
        aggregates = self.state.aggregates
        mark = aggregates.mark(self.name)
        newest = datetime.fromisoformat(mark.newest or build.last_run_started)
        since = newest - self.overlap
        before = KeyDigests()
        before.add_bytes(mark.digests)
        before.freeze()
        select = list(dict.fromkeys([self.range_key, self.spec.watermark_property,
                                     *([self.spec.watermark_time_property] if self.spec.watermark_time_property else []),
                                     *self.spec.line_key,
                                     *((self.spec.pooling.tender_property, self.spec.pooling.customer_property)
                                       if self.spec.pooling else ())]))
        cards: set[str] = set()
        customers: set[str] = set()
        window: list[tuple[datetime, int]] = []
        lines = fresh = 0
        for page in self.commerce.iter_pages(self.entity_set, select=select, where=self.recent_filter(since)):
            for row in page:
                lines += 1
                moment = self._moment(row)
                digest = self._line_digest(row)
                if moment is not None:
                    window.append((moment, digest))
                    newest = max(newest, moment)
                if before.contains_digest(digest):
                    continue
                fresh += 1
                card = row.get(self.range_key)
                if isinstance(card, str) and card:
                    cards.add(card)
                customer = self._pooled_customer(row)
                if customer is not None:
                    customers.add(customer)
        pooled = self.cards_of_customers(customers) if customers else set()
        due = list(aggregates.due_through(self.name, self.today()))
        due_cards = {card for _, _, card in due}
        edited, delta_link = self.edits_in_dataverse(run.lease.delta_link or None)
        edited_cards = {decode_key(row_key)[0] for row_key in edited}
        touched = cards | pooled | due_cards | edited_cards
        run.heartbeat()
        self.recompute(touched, summary, source="incremental", pooled=False, overwrite=frozenset(edited))
        aggregates.remove_due(due)
        keep = newest - self.overlap
        digests = KeyDigests()
        for moment, digest in window:
            if moment >= keep:
                digests.add_digest(digest)
        aggregates.save_mark(self.name, type(mark)(newest.isoformat(), digests.to_bytes()))
        summary.detail = (f"{lines} recent lines ({fresh} new), {len(cards)} cards touched, {len(pooled)} pooled, "
                          f"{len(due_cards)} due, {len(edited)} rows edited in Dataverse; {len(touched)} recomputed")
        log(logger, logging.INFO, "incremental pass done", template=self.name, run_id=summary.run_id, lines=lines,
            new_lines=fresh, cards=len(cards), pooled=len(pooled), due=len(due_cards), recomputed=len(touched),
            **summary.counts())
        return run.finish(advance=True, delta_link=delta_link)

    # -- one-way: edits in Dataverse ------------------------------------------------------------------------------

    def edits_in_dataverse(self, delta_link: str | None) -> tuple[dict[str, list[str]], str]:
        """The balance rows changed in Dataverse since ``delta_link`` (change tracking, docs/protocol-notes.md §2.11)
        whose columns are not what this app last wrote (compared with the column digests in the synced state),
        each with the columns that differ, logged; and the link to resume from. Without a link the feed's baseline
        only yields the first link (the build just wrote every row). Lookup columns are not compared (reading a
        lookup back as its code costs a read per row): an edit of only a lookup is overwritten by the next change.
        A link Dataverse no longer takes starts a new baseline."""
        dv = self.plan.template.dataverse
        key_columns = list(self.plan.alternate_key_columns)
        lookups = {row.lookup.navigation_property for row in self.plan.template.fields if row.lookup}
        columns = list(self.plan.dataverse_columns)
        compared = [(n, c) for n, c in enumerate(columns) if c not in lookups]
        select = [dv.primary_id, *(c for _, c in compared)]
        try:
            feed = self.dataverse.changes(dv.entity_set, select=select, delta_link=delta_link)
            rows = [row for row in feed if not row.get("@removed")] if delta_link else [None for _ in feed]
        except ApiError as exc:
            if delta_link is None:
                raise
            log(logger, logging.WARNING, "change tracking link refused; taking a new baseline", template=self.name,
                error=f"{type(exc).__name__}: {exc}")
            return self.edits_in_dataverse(None)
        assert feed.delta_link is not None
        partition = self.partition(None)
        edited: dict[str, list[str]] = {}
        for row in rows:
            if row is None or any(not isinstance(row.get(c), str) for c in key_columns):
                continue
            row_key = encode_key(tuple(str(row[c]) for c in key_columns))
            state = self.state.synced.get(partition, row_key)
            if state is None or len(state.columns) != 12 * (len(columns) + 1):
                continue
            differing = [column for n, column in compared
                         if column_digests({column: _as_written(row.get(column))}, None)[:12]
                         != state.columns[12 * n:12 * n + 12]]
            if differing:
                edited[row_key] = differing
                log(logger, logging.WARNING, "balance row edited in Dataverse; it is overwritten (this table is "
                    "one-way: Commerce -> Dataverse)", template=self.name, key=row_key, columns=",".join(differing))
        return edited, feed.delta_link


def _as_written(value: Any) -> Any:
    """A Dataverse value as this app wrote it: a whole decimal as an int (the fold writes whole numbers so)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


