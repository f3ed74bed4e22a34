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
  emulator's is card, then entry). Any other ``$orderby`` sorts every match (correct, slower): so a client scans
  this set by ``CardNumber`` ranges ordered by ``CardNumber``.
* A ``$filter`` on card-level properties only (``CardNumber``, ``CustomerAccount``, …) is tested once per card;
  skipped and counted lines are never rendered; a row is one compiled dict display per set of properties read.

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
#: Properties whose value is the card's, the same on all its lines (unless a write set a line's own).
CARD_LEVEL = frozenset({"CardNumber", "LoyaltyTransactionCompany", "CustomerAccount", "CustomerAccountCompany",
                        "LoyaltyProgramName", "LoyaltyTierLoyaltyProgramName", "LoyaltyTierId", "CardTenderType"})
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


#: Channels and operators of register transactions, picked by the transaction number (invented; inferred).
UNITS: tuple[str, ...] = ("052", "053", "054", "062", "064", "128", "136")
OPERATORS: tuple[str, ...] = ("000160", "000161", "000162", "000163", "000170")
RETAIL, SALES_ORDER, LOYALTY_ADJUSTMENT = (TRANSACTION_TYPES.index(n) for n in
                                           ("RetailTransaction", "SalesOrder", "LoyaltyAdjustment"))


class Line:
    """One transaction line. Amounts in hundredths; dates as ordinals (``exp_day`` 0 = never expires).

    The line's identity comes from ``txn`` and ``trans_type``: a register transaction's channel, register,
    transaction and receipt numbers, or an adjustment's id (invented formats, inferred); ``extra`` holds values an
    OData write or an admin post set otherwise.
    """

    __slots__ = ("card", "entry_day", "entry_time", "entry_type", "exp_day", "extra", "line_no", "qty", "rec_id",
                 "rec_version", "remaining", "reward", "start_day", "trans_type", "txn")

    def __init__(self, card: CardInfo, rec_id: int, entry_type: int, trans_type: int, txn: int, entry_day: int,
                 entry_time: int, qty: int, remaining: int, start_day: int, exp_day: int, reward: str) -> None:
        self.card = card
        self.rec_id = rec_id
        self.rec_version = 1
        self.entry_type = entry_type
        self.trans_type = trans_type
        self.txn = txn
        self.entry_day = entry_day
        self.entry_time = entry_time
        self.qty = qty
        self.remaining = remaining
        self.start_day = start_day
        self.exp_day = exp_day
        self.reward = reward
        self.line_no = 1
        #: Values an OData write or an admin post set that the slots do not derive (None: none).
        self.extra: Row | None = None

    def order_key(self) -> tuple[int, int, int]:
        return (self.entry_day, self.entry_time, self.rec_id)

    @property
    def etag(self) -> str:
        return make_etag(self.rec_version, self.rec_id)


def _identity(line: Line) -> tuple[str, str, str, str, str, str, str]:
    """(unit, terminal, transaction, sales order, adjustment, operator, receipt) of a line."""
    txn = line.txn
    if line.trans_type == RETAIL and txn:
        unit = UNITS[txn % 7]
        terminal = f"{unit}-{1 + (txn // 7) % 4}"
        return unit, terminal, f"{terminal}-{txn:08d}", "", "", OPERATORS[txn % 5], f"{unit}{txn:09d}"
    if line.trans_type == LOYALTY_ADJUSTMENT and txn:
        return "", "", "", "", f"LADJ-{txn:07d}", "", ""
    if line.trans_type == SALES_ORDER and txn:
        return UNITS[txn % 7], "", "", f"SO-{txn:08d}", "", "", ""
    return "", "", "", "", "", "", ""


_Ident = tuple[str, str, str, str, str, str, str]

#: How a line renders each property (Python expressions over ``ln``, its identity ``i`` and the never-expires value
#: ``nv``), in the entity's order. Compiled into one dict display per set of properties read: rendering is the hot
#: path of every read (a million lines per balance build).
_EXPR: dict[str, str] = {
    "LoyaltyTransactionLineNumber": "ln.line_no",
    "OperatingUnitNumber": "i[0]",
    "Terminal": "i[1]",
    "TransactionNumber": "i[2]",
    "LoyaltyTransactionCompany": "ln.card.company",
    "SalesOrderId": "i[3]",
    "AdjustmentId": "i[4]",
    "CardNumber": "ln.card.card_number",
    "LoyaltyTierLoyaltyProgramName": "(ln.card.program if ln.card.tier else '')",
    "LoyaltyOtherActivityTypeName": "''",
    "EntryType": "ENTRY_TYPES[ln.entry_type]",
    "CustomerAccount": "ln.card.customer",
    "SalesLineLineNum": "(ln.line_no if i[3] else 0)",
    "RewardPointAmountQty": "(ln.qty // 100 if ln.qty % 100 == 0 else ln.qty / 100)",
    "ExpirationDate": "(iso_day(ln.exp_day) if ln.exp_day else nv)",
    "StartDate": "iso_day(ln.start_day)",
    "LoyaltyTransactionType": "TRANSACTION_TYPES[ln.trans_type]",
    "EntryTime": "ln.entry_time",
    "NonTransactionalActivityId": "''",
    "CustomerAccountCompany": "(ln.card.company if ln.card.customer else '')",
    "Remaining": "(ln.remaining // 100 if ln.remaining % 100 == 0 else ln.remaining / 100)",
    "LoyaltyProgramName": "ln.card.program",
    "OperatorId": "i[5]",
    "CardTenderType": "ln.card.tender",
    "RetailTransactionSalesTransLineNum": "(ln.line_no if i[1] else 0)",
    "ReceiptId": "i[6]",
    "RewardPointId": "ln.reward",
    "EntryDate": "iso_day(ln.entry_day)",
    "LoyaltyTierId": "ln.card.tier",
}
assert list(_EXPR) == list(LINES_SET.property_names), "one expression per property, in the entity's order"
_RENDERERS: dict[tuple[str, ...], Callable[[Line, str], Row]] = {}
#: Sort keys read from a line's slots, equal to what sort_rows compares on the rendered values (strings case-folded;
#: ExpirationDate is not here: a never-expiring line sorts as the never-expires text says).
_LINE_SORT: dict[str, Callable[[Line], Any]] = {
    "CardNumber": lambda ln: ln.card.key,
    "RewardPointId": lambda ln: ln.reward.casefold(),
    "EntryDate": lambda ln: ln.entry_day,
    "EntryTime": lambda ln: ln.entry_time,
    "StartDate": lambda ln: ln.start_day,
    "LoyaltyTransactionLineNumber": lambda ln: ln.line_no,
    "RewardPointAmountQty": lambda ln: ln.qty,
    "Remaining": lambda ln: ln.remaining,
    "EntryType": lambda ln: ENTRY_TYPES[ln.entry_type].casefold(),
}


def renderer(fields: Sequence[str]) -> Callable[[Line, str], Row]:
    """``render(line, never_expires)`` -> ``{"@odata.etag": …, <fields>…}``, compiled once per tuple of fields
    (names are the entity's properties, checked by the query parser before they get here)."""
    key = tuple(fields)
    found = _RENDERERS.get(key)
    if found is not None:
        return found
    unknown = [name for name in key if name not in _EXPR]
    if unknown:
        raise KeyError(f"not a property of {LINES_SET.name}: {unknown}")
    ident = "    i = _identity(ln)\n" if any("i[" in _EXPR[name] for name in key) else ""
    items = ", ".join(f"{name!r}: {_EXPR[name]}" for name in key)
    source = (f"def render(ln, nv):\n{ident}"
              f"    row = {{'@odata.etag': make_etag(ln.rec_version, ln.rec_id), {items}}}\n"
              "    if ln.extra:\n"
              "        row.update({k: v for k, v in ln.extra.items() if k in row})\n"
              "    return row\n")
    namespace: dict[str, Any] = {"_identity": _identity, "make_etag": make_etag, "iso_day": iso_day,
                                 "ENTRY_TYPES": ENTRY_TYPES, "TRANSACTION_TYPES": TRANSACTION_TYPES}
    exec(compile(source, f"<render {LINES_SET.name}>", "exec"), namespace)
    render: Callable[[Line, str], Row] = namespace["render"]
    _RENDERERS[key] = render
    return render


_RENDER_ALL = renderer(LINES_SET.property_names)


def render_line(line: Line, never_expires: str) -> Row:
    """The OData row of a line as a read sends it: ``@odata.etag``, then every property in the entity's order."""
    return _RENDER_ALL(line, never_expires)


def render_fields(line: Line, fields: Sequence[str], never_expires: str) -> Row:
    """``@odata.etag`` and the named properties only (a read with $select)."""
    return renderer(fields)(line, never_expires)


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

    def reserve_rec_ids(self, next_free: int) -> None:
        """After a bulk build that numbered lines itself: the next RecId handed out."""
        self._next_rec_id = max(self._next_rec_id, next_free)

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
    def render(self, line: Line, fields: Sequence[str] | None = None) -> Row:
        """The line's properties (all, or ``fields``), without ``@odata.etag``."""
        row = render_line(line, self.never_expires) if fields is None else \
            render_fields(line, fields, self.never_expires)
        del row["@odata.etag"]
        return row

    def render_read(self, line: Line, fields: Sequence[str] | None = None) -> Row:
        """The line as a collection read sends it: ``@odata.etag`` first, then the properties."""
        if fields is None:
            return render_line(line, self.never_expires)
        return render_fields(line, fields, self.never_expires)

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
        ordered_fields = None if fields is None else [n for n in LINES_SET.property_names if n in fields]
        orderby = list(options.orderby)
        card_major = not orderby or orderby[0] == ("CardNumber", False)
        rest = orderby[1:] if card_major else orderby
        size = max(1, min(page_size, MAX_PAGE_SIZE))

        low = days[0][0] if days is not None and len(days) == 1 else None
        high = days[0][1] if days is not None and len(days) == 1 else None

        def lines_of(card: CardInfo) -> Iterable[Line]:
            if days is None:
                return card.lines
            if len(days) == 1:  # the common case (EntryDate ge ...): plain comparisons
                return [ln for ln in card.lines
                        if (low is None or ln.entry_day >= low) and (high is None or ln.entry_day <= high)]
            return [ln for ln in card.lines
                    if any((lo is None or ln.entry_day >= lo) and (hi is None or ln.entry_day <= hi) for lo, hi in days)]

        # A filter on card-level properties only holds for all of a card's lines or none: test it once per card
        # (unless a write gave some line values of its own).
        per_card = predicate is not None and set(getattr(predicate, "properties", ())) <= CARD_LEVEL

        cheap_sort = all(prop in _LINE_SORT for prop, _ in rest)

        def matches() -> Iterator[tuple[Row | None, Line]]:
            """Matching lines in order, each with its row when the filter had to render it (else None: rendered
            only if it lands on the page, so skipped and counted lines cost no rendering)."""
            render = self.render_read
            for card in self._selected_cards(card_bounds):
                lines = lines_of(card)
                if not lines:
                    continue
                pairs: Iterable[tuple[Row | None, Line]]
                if predicate is None:
                    pairs = ((None, ln) for ln in lines)
                elif per_card and not any(ln.extra for ln in lines):
                    if not predicate(render(next(iter(lines)), ordered_fields)):
                        continue
                    pairs = ((None, ln) for ln in lines)
                else:
                    pairs = ((row, ln) for row, ln in ((render(ln, ordered_fields), ln) for ln in lines)
                             if predicate(row))
                if rest and cheap_sort and not any(ln.extra for ln in lines):
                    # Sorted by the lines' own values: no rendering for the sort (as sort_rows orders them).
                    listed = list(pairs)
                    for prop, descending in reversed(rest):
                        value = _LINE_SORT[prop]
                        listed.sort(key=lambda pair, value=value: value(pair[1]), reverse=descending)  # type: ignore[misc]
                    yield from listed
                elif rest:
                    rendered = [(row if row is not None else render(ln, ordered_fields), ln) for row, ln in pairs]
                    yield from _sorted_pairs(rendered, rest)
                else:
                    yield from pairs

        def rendered(pairs: Iterable[tuple[Row | None, Line]]) -> list[tuple[Row, Line]]:
            return [(row if row is not None else self.render_read(ln, ordered_fields), ln) for row, ln in pairs]

        if predicate is None and days is None and card_major and not rest and not options.count:
            return self._unfiltered_page(options, size, ordered_fields)
        if not card_major:
            found = rendered(matches())
            return _page_of(_sorted_pairs(found, rest), options, size, self.render, len(found))
        stream = matches()
        skipped = sum(1 for _ in itertools.islice(stream, options.skip))
        window = options.top if options.top is not None else None
        take = size if window is None else min(size, window)
        page = rendered(itertools.islice(stream, take))
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
                page.append((self.render_read(line, fields), line))
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
    rows = [(row, row["@odata.etag"]) for row, _ in page]  # rendered as a read sends it
    if more <= 0 or len(page) < take:
        return QueryResult(rows, total)
    next_skip = options.skip + len(page)
    next_top = options.top - len(page) if options.top is not None else more
    return QueryResult(rows, total, next_skip, next_top)


def parse_row_dates(row: Mapping[str, Any]) -> tuple[int, int, int]:
    """(entry, start, expiration) ordinals of a row as validation stored it."""
    return day_of(str(row["EntryDate"])), day_of(str(row["StartDate"])), day_of(str(row["ExpirationDate"]))
