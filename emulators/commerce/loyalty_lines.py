"""Reward-point transaction lines (``RetailLoyaltyCardRewardPointTransactions``) in a compact store of their own.

A million lines as the generic store's row dicts would cost gigabytes and a full pass of the ``$filter`` per page,
so lines are slotted objects grouped by card (cards in card-number order, each card's lines in entry order) and
rendered to OData rows only when a request reads them. Reads behave as for the other entity sets
(``emulators.commerce.query``: ``$filter``, ``$orderby``, ``$select``, ``$top``, ``$skip``, ``$count``, server
paging with a ``$skip``/``$top`` nextLink); the store only narrows the candidates first:

* ``CardNumber`` comparisons joined by ``and``/``or`` (a key range, or a batch of ``CardNumber eq`` re-reads) pick
  the cards by binary search, and ``EntryDate`` comparisons skip lines by their entry day before rendering. The
  narrowed candidates are a superset; the compiled ``$filter`` still decides every row.
* Without ``$orderby``, or with one that starts with ``CardNumber`` ascending, lines come card by card (each card's
  lines sorted by the rest of ``$orderby``, else in entry order). F&O documents no default order (inferred: the
  emulator's is card, then entry). Any other ``$orderby`` sorts every match (correct, slower).

The consumption rules (a redemption lowers ``Remaining`` on earlier lines, returns deduct unvested points first,
pooled "As contact tender" cards) live in :mod:`emulators.commerce.loyalty_rules`; this module only stores.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from emulators.common.odata import _tokenize, sort_rows

from .entities import ENTRY_TYPE, TENDER_TYPE, TRANSACTION_TYPE
from .entities import RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS as LINES_SET
from .query import MAX_PAGE_SIZE, QueryOptions, QueryResult
from .store import FIRST_REC_ID, make_etag

Row = dict[str, Any]

ENTRY_TYPES = ENTRY_TYPE.member_names  # index = what Line.entry_type holds
TRANSACTION_TYPES = TRANSACTION_TYPE.member_names
TENDER_TYPES = TENDER_TYPE.member_names
#: Line record ids start above the generic store's so the two never share an ETag (inferred: any RecIds).
FIRST_LINE_REC_ID = FIRST_REC_ID + 50_000_000


def day_of(value: str) -> int:
    """Date ordinal of an ISO date/time text (``2024-01-01T00:00:00Z``)."""
    return date.fromisoformat(value[:10]).toordinal()


_ISO_DAYS: dict[int, str] = {}


def iso_day(day: int) -> str:
    text = _ISO_DAYS.get(day)
    if text is None:
        text = _ISO_DAYS[day] = f"{date.fromordinal(day).isoformat()}T00:00:00Z"
    return text


def cents(value: float | int) -> int:
    """Hundredths of a point (Amount points have two decimals)."""
    return round(value * 100)


def points(value: int) -> int | float:
    """Hundredths back to the JSON number F&O sends (an integer when whole)."""
    return value // 100 if value % 100 == 0 else value / 100


class CardInfo:
    """One card's fixed facts and its lines (entry order)."""

    __slots__ = ("card_number", "company", "customer", "key", "lines", "party", "program", "tender", "tier")

    def __init__(self, card_number: str, *, party: str, customer: str, company: str, tender: str, program: str,
                 tier: str) -> None:
        self.card_number = card_number
        self.key = card_number.casefold()
        self.party = party
        self.customer = customer
        self.company = company
        self.tender = tender
        self.program = program
        self.tier = tier
        self.lines: list[Line] = []


class Line:
    """One transaction line. Amounts in hundredths; dates as ordinals (``exp_day`` 0 = never expires)."""

    __slots__ = ("adjustment", "card", "entry_day", "entry_time", "entry_type", "exp_day", "extra", "line_no",
                 "operator", "qty", "rec_id", "rec_version", "remaining", "reward", "sales_order", "start_day",
                 "terminal", "trans_type", "txn", "unit")

    def __init__(self, card: CardInfo, *, rec_id: int, entry_type: int, trans_type: int, entry_day: int,
                 entry_time: int, qty: int, remaining: int, start_day: int, exp_day: int, reward: str,
                 unit: str = "", terminal: str = "", txn: str = "", sales_order: str = "", adjustment: str = "",
                 line_no: int = 1, operator: str = "") -> None:
        self.card = card
        self.rec_id = rec_id
        self.rec_version = 1
        self.entry_type = entry_type
        self.trans_type = trans_type
        self.entry_day = entry_day
        self.entry_time = entry_time
        self.qty = qty
        self.remaining = remaining
        self.start_day = start_day
        self.exp_day = exp_day
        self.reward = reward
        self.unit = unit
        self.terminal = terminal
        self.txn = txn
        self.sales_order = sales_order
        self.adjustment = adjustment
        self.line_no = line_no
        self.operator = operator
        #: Values an OData write set that the slots do not derive (None: none).
        self.extra: Row | None = None

    def order_key(self) -> tuple[int, int, int]:
        return (self.entry_day, self.entry_time, self.rec_id)

    @property
    def etag(self) -> str:
        return make_etag(self.rec_version, self.rec_id)


def _getters(never_expires: str) -> dict[str, Callable[[Line], Any]]:
    """Property name -> how a line renders it (metadata order is the entity's)."""
    def receipt(line: Line) -> str:
        return f"{line.unit}{line.txn[-8:]}" if line.txn else ""

    getters: dict[str, Callable[[Line], Any]] = {
        "LoyaltyTransactionLineNumber": lambda ln: ln.line_no,
        "OperatingUnitNumber": lambda ln: ln.unit,
        "Terminal": lambda ln: ln.terminal,
        "TransactionNumber": lambda ln: ln.txn,
        "LoyaltyTransactionCompany": lambda ln: ln.card.company,
        "SalesOrderId": lambda ln: ln.sales_order,
        "AdjustmentId": lambda ln: ln.adjustment,
        "CardNumber": lambda ln: ln.card.card_number,
        "LoyaltyTierLoyaltyProgramName": lambda ln: ln.card.program if ln.card.tier else "",
        "LoyaltyOtherActivityTypeName": lambda ln: "",
        "EntryType": lambda ln: ENTRY_TYPES[ln.entry_type],
        "CustomerAccount": lambda ln: ln.card.customer,
        "SalesLineLineNum": lambda ln: ln.line_no if ln.sales_order else 0,
        "RewardPointAmountQty": lambda ln: points(ln.qty),
        "ExpirationDate": lambda ln: iso_day(ln.exp_day) if ln.exp_day else never_expires,
        "StartDate": lambda ln: iso_day(ln.start_day),
        "LoyaltyTransactionType": lambda ln: TRANSACTION_TYPES[ln.trans_type],
        "EntryTime": lambda ln: ln.entry_time,
        "NonTransactionalActivityId": lambda ln: "",
        "CustomerAccountCompany": lambda ln: ln.card.company if ln.card.customer else "",
        "Remaining": lambda ln: points(ln.remaining),
        "LoyaltyProgramName": lambda ln: ln.card.program,
        "OperatorId": lambda ln: ln.operator,
        "CardTenderType": lambda ln: ln.card.tender,
        "RetailTransactionSalesTransLineNum": lambda ln: ln.line_no if ln.terminal else 0,
        "ReceiptId": receipt,
        "RewardPointId": lambda ln: ln.reward,
        "EntryDate": lambda ln: iso_day(ln.entry_day),
        "LoyaltyTierId": lambda ln: ln.card.tier,
    }
    assert list(getters) == list(LINES_SET.property_names), "getters must follow the entity's properties"
    return getters


# -- narrowing a $filter to card ranges and entry days ------------------------------------------------------------

Interval = tuple[Any, Any]  # (low, high), both inclusive; None = unbounded
Bounds = list[Interval] | None  # None: unconstrained


def _intersect(a: Bounds, b: Bounds) -> Bounds:
    if a is None:
        return b
    if b is None:
        return a
    out: list[Interval] = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo = lo2 if lo1 is None else lo1 if lo2 is None else max(lo1, lo2)
            hi = hi2 if hi1 is None else hi1 if hi2 is None else min(hi1, hi2)
            if lo is None or hi is None or lo <= hi:
                out.append((lo, hi))
    return out


def _union(a: Bounds, b: Bounds) -> Bounds:
    return None if a is None or b is None else a + b


_FLIP = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq", "ne": "ne"}


class _Narrower:
    """A superset of what a ``$filter`` can match on one property, as inclusive intervals (None: anything).

    Mirrors the grammar of ``emulators.common.odata`` (or/and/not, parentheses, comparisons); anything it does not
    understand is unconstrained, so the result never excludes a match.
    """

    def __init__(self, text: str, prop: str, convert: Callable[[str, Any], Any]) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.prop = prop
        self.convert = convert

    @property
    def tok(self) -> Any:
        return self.tokens[self.i]

    def word(self, value: str) -> bool:
        return bool(self.tok.kind == "ident" and self.tok.value == value)

    def run(self) -> Bounds:
        try:
            result = self.parse_or()
        except (IndexError, ValueError, TypeError):
            return None
        return result if self.tok.kind == "eof" else None

    def parse_or(self) -> Bounds:
        left = self.parse_and()
        while self.word("or"):
            self.i += 1
            left = _union(left, self.parse_and())
        return left

    def parse_and(self) -> Bounds:
        left = self.parse_not()
        while self.word("and"):
            self.i += 1
            left = _intersect(left, self.parse_not())
        return left

    def parse_not(self) -> Bounds:
        if self.word("not"):
            self.i += 1
            self.parse_not()
            return None
        return self.parse_primary()

    def parse_primary(self) -> Bounds:
        if self.tok.kind == "(":
            self.i += 1
            inner = self.parse_or()
            if self.tok.kind != ")":
                raise ValueError("unbalanced")
            self.i += 1
            return inner
        left = self.operand()
        if self.tok.kind == "ident" and self.tok.value in _FLIP:
            op = self.tok.value
            self.i += 1
            right = self.operand()
            if left[0] == "prop" and right[0] == "lit":
                return self.compare(op, right)
            if right[0] == "prop" and left[0] == "lit":
                return self.compare(_FLIP[op], left)
        return None

    def operand(self) -> tuple[str, Any, Any]:
        token = self.tok
        self.i += 1
        if token.kind in ("string", "number", "datetime", "guid", "enum"):
            return ("lit", token.kind, token.value)
        if token.kind == "ident":
            if self.tok.kind == "(":  # a function call: skip its arguments
                depth = 0
                while True:
                    kind = self.tok.kind
                    self.i += 1
                    depth += {"(": 1, ")": -1}.get(kind, 0)
                    if depth == 0 or kind == "eof":
                        return ("func", None, None)
            return ("prop", token.value, None) if token.value == self.prop else ("other", None, None)
        raise ValueError("unexpected token")

    def compare(self, op: str, literal: tuple[str, Any, Any]) -> Bounds:
        value = self.convert(literal[1], literal[2])
        if value is None or op == "ne":
            return None
        if op == "eq":
            return [(value, value)]
        return [(value, None)] if op in ("gt", "ge") else [(None, value)]


def _card_value(kind: str, value: Any) -> Any:
    if kind != "string" or "*" in value:  # F&O's eq '*x*' is a wildcard match (docs/protocol-notes.md §3.2)
        return None
    return str(value).casefold()


def _day_value(kind: str, value: Any) -> Any:
    if kind != "datetime" or not isinstance(value, datetime):
        return None
    return value.astimezone(UTC).date().toordinal()  # whole days: a superset of any time of day


def _merge(bounds: list[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals (an unbounded low sorts first)."""
    ordered = sorted(bounds, key=lambda iv: (iv[0] is not None, iv[0] or ""))
    merged: list[Interval] = []
    for lo, hi in ordered:
        if merged:
            last_lo, last_hi = merged[-1]
            if last_hi is None or (lo is not None and lo <= last_hi):
                merged[-1] = (last_lo, None if last_hi is None or hi is None else max(last_hi, hi))
                continue
        merged.append((lo, hi))
    return merged


# -- the store ----------------------------------------------------------------------------------------------------


class LineStore:
    """Every transaction line, grouped by card; thread-safe (one lock, as the generic store)."""

    def __init__(self, never_expires: str) -> None:
        self.lock = threading.RLock()
        self.never_expires = never_expires
        self._getters = _getters(never_expires)
        self.cards: dict[str, CardInfo] = {}
        self._order: list[str] = []  # card keys, sorted
        self._next_rec_id = FIRST_LINE_REC_ID
        self.count = 0

    # -- building -----------------------------------------------------------------------------------------------
    def add_card(self, card: CardInfo) -> CardInfo:
        with self.lock:
            existing = self.cards.get(card.key)
            if existing is not None:
                return existing
            self.cards[card.key] = card
            if self._order and card.key < self._order[-1]:
                bisect.insort(self._order, card.key)
            else:
                self._order.append(card.key)
            return card

    def card(self, card_number: str) -> CardInfo | None:
        return self.cards.get(card_number.casefold())

    def next_rec_id(self) -> int:
        rec_id = self._next_rec_id
        self._next_rec_id += 1
        return rec_id

    def append(self, line: Line) -> None:
        """Add a line in entry order (generation appends in order; admin posts may land anywhere)."""
        with self.lock:
            lines = line.card.lines
            if lines and line.order_key() < lines[-1].order_key():
                bisect.insort(lines, line, key=Line.order_key)
            else:
                lines.append(line)
            self.count += 1

    def remove(self, line: Line) -> None:
        with self.lock:
            line.card.lines.remove(line)
            self.count -= 1

    def touch(self, line: Line) -> None:
        line.rec_version += 1

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, line: Line, fields: Iterable[str] | None = None) -> Row:
        getters = self._getters
        names = getters if fields is None else fields
        row = {name: getters[name](line) for name in names}
        if line.extra:
            row.update({k: v for k, v in line.extra.items() if k in row})
        return row

    def key_of_line(self, line: Line) -> tuple[Any, ...]:
        row = self.render(line, LINES_SET.keys)
        return tuple(v.casefold() if isinstance(v, str) else v for v in row.values())

    def find(self, key: Sequence[Any]) -> Line | None:
        """The line with this entity key (normalised as the generic store's keys: strings case-folded)."""
        card = self.cards.get(str(key[-1]))
        if card is None:
            return None
        wanted = tuple(key)
        for line in card.lines:
            if self.key_of_line(line) == wanted:
                return line
        return None

    # -- reading ------------------------------------------------------------------------------------------------
    def _selected_cards(self, bounds: Bounds, *, reverse: bool = False) -> Iterator[CardInfo]:
        order = self._order
        spans: list[tuple[int, int]] = []
        for lo, hi in [(None, None)] if bounds is None else _merge(bounds):
            start = 0 if lo is None else bisect.bisect_left(order, lo)
            stop = len(order) if hi is None else bisect.bisect_right(order, hi)
            if start < stop:
                spans.append((start, stop))
        cards = self.cards
        if reverse:
            for start, stop in reversed(spans):
                for index in range(stop - 1, start - 1, -1):
                    yield cards[order[index]]
        else:
            for start, stop in spans:
                for index in range(start, stop):
                    yield cards[order[index]]

    def query(self, options: QueryOptions, page_size: int) -> QueryResult:
        """One page of a collection read, as ``query.run_query`` answers it for the other sets."""
        with self.lock:
            return self._query(options, page_size)

    def _query(self, options: QueryOptions, page_size: int) -> QueryResult:
        text = getattr(options.filter, "text", None)
        card_bounds = _Narrower(text, "CardNumber", _card_value).run() if text else None
        day_bounds = _Narrower(text, "EntryDate", _day_value).run() if text else None
        days = _merge(day_bounds) if day_bounds is not None else None
        predicate = options.filter
        fields: set[str] | None = None
        if options.select is not None:
            fields = set(options.select) | set(getattr(predicate, "properties", ())) | {p for p, _ in options.orderby}
        ordered_fields = None if fields is None else [n for n in self._getters if n in fields]
        orderby = list(options.orderby)
        card_major = not orderby or orderby[0] == ("CardNumber", False)
        rest = orderby[1:] if card_major else orderby
        size = max(1, min(page_size, MAX_PAGE_SIZE))

        def lines_of(card: CardInfo) -> Iterator[Line]:
            if days is None:
                return iter(card.lines)
            return (ln for ln in card.lines
                    if any((lo is None or ln.entry_day >= lo) and (hi is None or ln.entry_day <= hi) for lo, hi in days))

        def matches() -> Iterator[tuple[Row, Line]]:
            for card in self._selected_cards(card_bounds):
                if not card.lines:
                    continue
                rows = ((self.render(ln, ordered_fields), ln) for ln in lines_of(card))
                if predicate is not None:
                    rows = ((row, ln) for row, ln in rows if predicate(row))
                if rest:
                    yield from _sorted_pairs(list(rows), rest)
                else:
                    yield from rows

        if predicate is None and days is None and card_major and not rest and not options.count:
            return self._unfiltered_page(options, size, ordered_fields)
        if not card_major:
            found = list(matches())
            return _page_of(_sorted_pairs(found, rest), options, size, self.render, len(found))
        stream = matches()
        skipped = sum(1 for _ in itertools.islice(stream, options.skip))
        window = options.top if options.top is not None else None
        take = size if window is None else min(size, window)
        page = list(itertools.islice(stream, take))
        more = 0
        if options.count or (window is None):
            more = sum(1 for _ in stream)  # the rest, for $count or the nextLink's $top
        elif window > take:
            more = 1 if next(stream, None) is not None else 0
        total = skipped + len(page) + more if (options.count or window is None) else -1
        return _finish(page, options, take, more, total, self.render)

    def _unfiltered_page(self, options: QueryOptions, size: int, fields: list[str] | None) -> QueryResult:
        """No filter, key order: skip whole cards by their line counts instead of rendering them."""
        skip = options.skip
        take = size if options.top is None else min(size, options.top)
        page: list[tuple[Row, Line]] = []
        for card in self._selected_cards(None):
            n = len(card.lines)
            if skip >= n:
                skip -= n
                continue
            for line in card.lines[skip:]:
                if len(page) >= take:
                    break
                page.append((self.render(line, fields), line))
            skip = 0
            if len(page) >= take:
                break
        after = self.count - options.skip - len(page)
        if options.top is not None:
            after = min(after, options.top - len(page))
        return _finish(page, options, take, max(0, after), self.count, self.render)


def _sorted_pairs(pairs: list[tuple[Row, Line]], orderby: Sequence[tuple[str, bool]]) -> list[tuple[Row, Line]]:
    if not orderby:
        return pairs
    by_id = {id(row): line for row, line in pairs}
    return [(row, by_id[id(row)]) for row in sort_rows([row for row, _ in pairs], orderby)]  # type: ignore[misc]


def _page_of(pairs: list[tuple[Row, Line]], options: QueryOptions, size: int,
             render: Callable[[Line], Row], total: int) -> QueryResult:
    window = pairs[options.skip:]
    if options.top is not None:
        window = window[: options.top]
    page = window[:size]
    return _finish(page, options, size, len(window) - len(page), total, render)


def _finish(page: list[tuple[Row, Line]], options: QueryOptions, take: int, more: int, total: int,
            render: Callable[[Line], Row]) -> QueryResult:
    """The QueryResult of one page: rows with their ETags, the nextLink's $skip/$top when more rows follow."""
    rows = [(row, line.etag) for row, line in page]
    if more <= 0 or len(page) < take:
        return QueryResult(rows, total)
    next_skip = options.skip + len(page)
    next_top = options.top - len(page) if options.top is not None else more
    return QueryResult(rows, total, next_skip, next_top)


def parse_row_dates(row: Mapping[str, Any]) -> tuple[int, int, int]:
    """(entry, start, expiration) ordinals of a row as validation stored it."""
    return day_of(str(row["EntryDate"])), day_of(str(row["StartDate"])), day_of(str(row["ExpirationDate"]))
