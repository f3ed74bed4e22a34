"""One key range of an inbound baseline: every Dataverse row of the range against Commerce and the synced state,
decided by ``InboundSync.decide`` (the code the change feed uses), with the data already in hand.

Per page of Dataverse rows: the synced states of its keys in one query (per scope), the Commerce rows
from the range's read. A key that read does not hold is known to be absent from Commerce when it lies where the read
was complete and it and the read's bounds are plain (ASCII letters and digits, which Commerce's collation orders as
``casefold`` does; inferred); any other such key is looked up, one ``or`` query for all of them of the page. (A key
created in Commerce after the read is then POSTed again: F&O refuses the duplicate, the row is parked, and its
replay reads it by key.) Then per row:

- the shared image equals the one last synced: nothing (no request at all);
- Commerce holds the same image: both hashes are recorded, in entity-group transactions for the whole page;
- otherwise the decision of the change feed: a conflict is recorded and resolved by the policy; a row Commerce
  does not have is POSTed; the changed writable fields are PATCHed with ``If-Match`` on the ETag the page read
  returned (412: that row goes the change feed's way, re-read and retried). The rows just written are read back
  together, in one query, and both hashes recorded from what Commerce now holds.

Anything that does not fit the batch (a state written meanwhile, a key Commerce spells differently) goes through
``InboundSync.apply``, the change feed's path for one row, which reads what it needs itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from shared.http.errors import ApiError, PreconditionFailedError
from shared.mapping.plan import MappingError
from shared.observability import log
from shared.state.store import ConcurrencyConflict, SyncedEntry, SyncedState, encode_key, parked_key
from shared.sync.baseline.sides import BaselineSides, Key, MatchKey, match_key
from shared.sync.conflicts import Verdict
from shared.sync.runs import DIRECTION_IN, Outcome, RunSummary

if TYPE_CHECKING:
    from shared.sync.inbound import InboundSync

logger = logging.getLogger("loyaltysync.inbound")
SOURCE = "baseline"
# Called once per Dataverse row of a range: the range's counts so far.
Tick = Callable[[RunSummary], None]


@dataclass
class _Row:
    """One Dataverse row of a page, on its way to an outcome."""

    dv_row: dict[str, Any]
    key: dict[str, str]  # the F&O key (Commerce's spelling when Commerce has the row)
    fo_key: tuple[str, ...]
    row_key: str
    partition: str
    image: dict[str, Any]
    dv_hash: str
    current: dict[str, Any] | None = None  # Commerce's row, when in hand
    previous: SyncedState | None = None
    outcome: str = ""
    changes: dict[str, Any] = field(default_factory=dict)


def plain(key: Key) -> bool:
    """Only ASCII letters and digits: Commerce's collation (SQL Server, case-insensitive; inferred) orders such keys
    as ``casefold`` does here, so a comparison made here holds there too."""
    return all(isinstance(part, str) and part.isascii() and part.isalnum() for part in key)


@dataclass
class CommerceCache:
    """Commerce's rows of a range read (``key gt <after>``, in key order, ``$top``), by match key, and the key the read
    is complete through (None: to the end of the key space)."""

    rows: dict[MatchKey, dict[str, Any]]
    after: Key | None
    last: Key | None

    def absent(self, key: Key) -> bool:
        """Commerce did not have ``key`` when the range was read: the key lies where the read was complete, and the
        key and both bounds are plain (so Commerce orders them as this comparison does). Anything else is looked
        up (``RangeCompare._look_up``)."""
        if match_key(key) in self.rows or not plain(key):
            return False
        if self.after is not None and not (plain(self.after) and match_key(self.after) < match_key(key)):
            return False
        return self.last is None or (plain(self.last) and match_key(key) <= match_key(self.last))


class RangeCompare:
    def __init__(self, inbound: InboundSync, sides: BaselineSides) -> None:
        self.inbound = inbound
        self.sides = sides
        self.plan = inbound.plan
        self.state = inbound.state
        self.name = inbound.name

    def process(self, after: Key | None, through: Key | None, *, first: bool, summary: RunSummary,
                commerce: tuple[list[dict[str, Any]], Key | None] | None = None, tick: Tick | None = None,
                heartbeat: Callable[[], None] | None = None) -> None:
        """Compare the range's Dataverse rows and bring Commerce in line; ``commerce``: the rows the planner already
        read from ``after`` on and the key they are complete through (else they are read here, once the range turns
        out to have Dataverse rows)."""
        cache = self._cache(after, *commerce) if commerce is not None else None
        parked: set[str] | None = None
        for dv_rows in self.sides.dataverse_pages(after, through, first=first):
            if not dv_rows:
                continue
            if cache is None:
                cache = self._cache(after, *self.sides.commerce_page(after, keys_only=False))
            if parked is None:
                parked = self.state.parked.keys(self.name)
            self._page(dv_rows, cache, parked, summary, tick)
            if heartbeat is not None:
                heartbeat()

    def _cache(self, after: Key | None, rows: Iterable[dict[str, Any]], last: Key | None) -> CommerceCache:
        cache: dict[MatchKey, dict[str, Any]] = {}
        for row in rows:
            try:
                cache[match_key(self.plan.key_of(row))] = row
            except MappingError:
                continue  # an F&O row with no usable key: the outbound side parks it; no Dataverse row names it
        return CommerceCache(cache, after, last)

    # -- one page of Dataverse rows ---------------------------------------------------------------------

    def _page(self, dv_rows: list[dict[str, Any]], cache: CommerceCache, parked: set[str], summary: RunSummary,
              tick: Tick | None = None) -> None:
        inbound = self.inbound
        rows: list[_Row] = []
        ids: list[tuple[str, str]] = []
        primary_id = self.plan.template.dataverse.primary_id
        for dv_row in dv_rows:
            summary.read()
            row = self._prepare(dv_row, cache, ids, primary_id, summary)
            if row is not None:
                rows.append(row)
            if tick is not None:
                tick(summary)  # per row read (its outcome is counted once the page is decided)
        if ids:
            self.state.dataverse_ids.remember_many(self.name, ids)
        self._previous(rows)
        pending: list[_Row] = []
        for r in rows:
            if r.previous is not None and r.previous.shared == r.dv_hash:
                r.outcome = Outcome.UNCHANGED  # our own write, or nothing that flows to Commerce changed
            else:
                pending.append(r)
        missing = [r for r in pending if r.current is None and not cache.absent(r.fo_key)]
        if missing:
            self._look_up(missing)
        record: list[_Row] = []
        written: list[_Row] = []
        for r in pending:
            if r.outcome:  # settled by the look-up (went the change feed's way)
                continue
            try:
                self._decide(r, record, written)
            except (ApiError, MappingError) as exc:
                r.outcome = inbound.park(r.row_key, exc, SOURCE, r.dv_row)
        self._record(record)
        self._read_back(written)
        for r in pending:
            unparked = parked_key(r.row_key, DIRECTION_IN)
            if r.outcome != Outcome.PARKED and unparked in parked:
                self.state.parked.unpark(self.name, unparked)  # an earlier failure of this key has landed
                parked.discard(unparked)
        for r in rows:
            summary.count(r.outcome)

    def _prepare(self, dv_row: dict[str, Any], cache: CommerceCache, ids: list[tuple[str, str]],
                 primary_id: str, summary: RunSummary) -> _Row | None:
        inbound = self.inbound
        key = inbound.images.fo_key(dv_row)
        if key is None:
            summary.count(inbound.park(f"dataverse-id:{dv_row.get(primary_id)}",
                                       MappingError("key", "the Dataverse row has no complete key (key columns or company)"),
                                       SOURCE, dv_row))
            return None
        current = cache.rows.get(match_key(self.plan.key_of(key)))
        if current is not None:
            key = self.plan.key_as_dict(self.plan.key_of(current))  # Commerce's spelling of the key
        fo_key = self.plan.key_of(key)
        row_key = encode_key(fo_key)
        if inbound.delete_policy == "delete" and dv_row.get(primary_id):
            ids.append((str(dv_row[primary_id]), row_key))
        try:
            image, dv_hash = inbound.images.from_dataverse(dv_row)
        except MappingError as exc:
            summary.count(inbound.park(row_key, exc, SOURCE, dv_row))
            return None
        return _Row(dv_row, key, fo_key, row_key, inbound.outbound.partition(self.plan.company_of(fo_key)), image,
                    dv_hash, current)

    def _previous(self, rows: list[_Row]) -> None:
        """The synced states of the page's keys: one query per state scope (``SyncedStates.among``)."""
        by_partition: dict[str, list[str]] = {}
        for r in rows:
            by_partition.setdefault(r.partition, []).append(r.row_key)
        states: dict[tuple[str, str], SyncedState] = {}
        for partition, keys in by_partition.items():
            states.update(((partition, k), s) for k, s in self.state.synced.among(partition, keys).items())
        for r in rows:
            r.previous = states.get((r.partition, r.row_key))

    def _look_up(self, missing: list[_Row]) -> None:
        """Commerce rows of keys the range's read did not bring (Dataverse-only rows, or keys the two services
        order differently): one ``or`` query for the page's. A row Commerce spells with another key goes the
        change feed's way (its state is under Commerce's spelling)."""
        found = self.sides.commerce_by_keys([r.fo_key for r in missing])
        for r in missing:
            current = found.get(match_key(r.fo_key))
            if current is None:
                continue
            if self.plan.key_of(current) != r.fo_key:
                r.outcome = self.inbound.apply(r.dv_row, source=SOURCE)
                continue
            r.current = current

    def _decide(self, r: _Row, record: list[_Row], written: list[_Row]) -> None:
        inbound = self.inbound
        decision = inbound.decide(r.row_key, r.image, r.dv_hash, r.previous, r.current, SOURCE, decided=False)
        if decision.kind == "unchanged":
            r.outcome = Outcome.UNCHANGED  # deleted in Commerce after the last sync: that delete wins
        elif decision.kind == "create":
            r.outcome = inbound.create(r.key, r.image, r.previous)
        elif decision.kind == "equal":
            r.outcome = Outcome.UNCHANGED
            record.append(r)
        elif decision.kind == "commerce_wins":
            assert r.current is not None
            inbound.outbound.write_row(r.current, r.previous, source="conflict")  # Commerce's content to Dataverse
            r.outcome = Outcome.CONFLICT
        else:
            assert r.current is not None
            try:
                inbound.patch(r.key, r.current, decision.changes)
            except PreconditionFailedError:
                log(logger, logging.INFO, "Commerce row changed while writing; re-reading", template=self.name,
                    key=r.row_key)
                r.outcome = inbound.apply(r.dv_row, source=SOURCE)
                return
            r.changes = decision.changes
            r.outcome = Outcome.CONFLICT if decision.verdict is not Verdict.NO_CONFLICT else Outcome.WRITTEN
            written.append(r)

    def _record(self, rows: list[_Row]) -> None:
        """Both sides hold the same image: record both hashes, in transactions per scope (``put_many``). A key
        whose state changed meanwhile goes the change feed's way."""
        by_partition: dict[str, list[tuple[SyncedEntry, _Row]]] = {}
        for r in rows:
            assert r.current is not None
            record = self.plan.to_dataverse(r.current)
            _, shared = self.inbound.images.from_commerce(r.current)
            by_partition.setdefault(r.partition, []).append(((r.row_key, record.content_hash, r.previous, shared, ""), r))
        for partition, entries in by_partition.items():
            try:
                conflicted = set(self.state.synced.put_many(partition, [entry for entry, _ in entries]))
            except AzureError as exc:
                log(logger, logging.WARNING, "could not record the state of equal records; they are compared again "
                    "next time", template=self.name, records=len(entries), error=f"{type(exc).__name__}: {exc}")
                continue
            for _, r in entries:
                if r.row_key in conflicted:
                    r.outcome = self.inbound.apply(r.dv_row, source=SOURCE)

    def _read_back(self, rows: list[_Row]) -> None:
        """The rows just PATCHed, read back together; both hashes recorded from what Commerce now holds (and what
        F&O normalised written to Dataverse), as the change feed's path does after a read by key."""
        if not rows:
            return
        fresh = self.sides.commerce_by_keys([r.fo_key for r in rows])
        for r in rows:
            assert r.current is not None
            written: Mapping[str, Any] = fresh.get(match_key(r.fo_key)) or {**r.current, **r.changes}
            try:
                self.inbound.after_write(written, r.previous)
            except ConcurrencyConflict:
                r.outcome = self.inbound.apply(r.dv_row, source=SOURCE)  # synced meanwhile: compare again
                continue
            log(logger, logging.INFO, "Dataverse edit written to Commerce", template=self.name, key=r.row_key,
                fields=",".join(sorted(r.changes)), source=SOURCE)
