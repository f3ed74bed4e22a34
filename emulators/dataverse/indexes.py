"""Sorted indexes of the emulator's tables, and what a ``$filter`` says about one column.

Only a speed-up: a query answered through an index returns the same rows, pages and nextLinks as one that scans
the whole table, filters and sorts (``server.get_collection`` falls back to that scan whenever an index cannot
answer exactly). A million-row table otherwise costs a full copy, filter and sort per page, which made paging
through it, or reading it a key range at a time, quadratic.

* :class:`SortedIndex`: ``(sort_key(value), row id)`` entries of one string or GUID column, kept sorted as rows are
  written (:class:`~emulators.dataverse.store.Store` maintains them beside its alternate-key index), in the order
  ``$orderby`` sorts (strings case-insensitively, null first).
* :func:`column_bounds`: the interval of that column's values a ``$filter`` can match, from its top-level
  structure (``and`` intersects, ``or`` joins, comparisons of the column with a string or GUID literal bound it;
  anything else leaves it unbounded). Sound by construction: a row the filter matches always lies in the
  interval; the filter itself still decides each row.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from emulators.common.odata import ODataQueryError, _Token, _tokenize, sort_key

SortKey = tuple[int, int, Any]
_HIGH_ID = "\uffff"  # above every row id: (key, _HIGH_ID) sorts after every entry with that key


class SortedIndex:
    """One column's ``(sort_key(value), row id)`` entries, sorted."""

    def __init__(self, entries: list[tuple[SortKey, str]] | None = None) -> None:
        self.entries: list[tuple[SortKey, str]] = sorted(entries or [])

    def add(self, value: Any, row_id: str) -> None:
        bisect.insort(self.entries, (sort_key(value), row_id))

    def remove(self, value: Any, row_id: str) -> None:
        entry = (sort_key(value), row_id)
        position = bisect.bisect_left(self.entries, entry)
        if position < len(self.entries) and self.entries[position] == entry:
            del self.entries[position]

    def span(self, bounds: Bounds | None) -> tuple[int, int]:
        """The positions ``[start, stop)`` of the entries inside ``bounds`` (all of them for None)."""
        if bounds is None:
            return 0, len(self.entries)
        start, stop = 0, len(self.entries)
        if bounds.low is not None:
            probe = (bounds.low,) if bounds.low_inclusive else (bounds.low, _HIGH_ID)
            start = bisect.bisect_left(self.entries, probe)
        if bounds.high is not None:
            probe = (bounds.high, _HIGH_ID) if bounds.high_inclusive else (bounds.high,)
            stop = bisect.bisect_left(self.entries, probe)
        return start, max(start, stop)

    def ids(self, bounds: Bounds | None, *, descending: bool = False) -> Iterator[str]:
        """Row ids inside ``bounds``, in the column's order (reversed when ``descending``)."""
        start, stop = self.span(bounds)
        positions = range(stop - 1, start - 1, -1) if descending else range(start, stop)
        entries = self.entries
        for position in positions:
            yield entries[position][1]


@dataclass(frozen=True)
class Bounds:
    """An interval of sort keys; None: unbounded on that side."""

    low: SortKey | None = None
    low_inclusive: bool = True
    high: SortKey | None = None
    high_inclusive: bool = True

    def intersect(self, other: Bounds) -> Bounds:
        low, low_inclusive = self.low, self.low_inclusive
        if other.low is not None and (low is None or other.low > low or (other.low == low and not other.low_inclusive)):
            low, low_inclusive = other.low, other.low_inclusive
        high, high_inclusive = self.high, self.high_inclusive
        if other.high is not None and (high is None or other.high < high or
                                       (other.high == high and not other.high_inclusive)):
            high, high_inclusive = other.high, other.high_inclusive
        return Bounds(low, low_inclusive, high, high_inclusive)

    def hull(self, other: Bounds) -> Bounds:
        if self.low is None or other.low is None:
            low, low_inclusive = None, True
        elif self.low == other.low:
            low, low_inclusive = self.low, self.low_inclusive or other.low_inclusive
        else:
            low, low_inclusive = min((self.low, self.low_inclusive), (other.low, other.low_inclusive),
                                     key=lambda b: b[0])
        if self.high is None or other.high is None:
            high, high_inclusive = None, True
        elif self.high == other.high:
            high, high_inclusive = self.high, self.high_inclusive or other.high_inclusive
        else:
            high, high_inclusive = max((self.high, self.high_inclusive), (other.high, other.high_inclusive),
                                       key=lambda b: b[0])
        return Bounds(low, low_inclusive, high, high_inclusive)


UNBOUNDED = Bounds()
_FLIP = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq"}
_LITERALS = ("string", "guid")


def _comparison(tokens: list[_Token], column: str) -> Bounds:
    """The bounds one ``<column> <op> <literal>`` (or the literal first) sets; anything else: unbounded."""
    if len(tokens) != 3 or tokens[1].kind != "ident" or tokens[1].value not in _FLIP:
        return UNBOUNDED
    left, operator, right = tokens
    op = str(operator.value)
    if left.kind == "ident" and left.value == column and right.kind in _LITERALS:
        literal = right.value
    elif right.kind == "ident" and right.value == column and left.kind in _LITERALS:
        literal, op = left.value, _FLIP[op]
    else:
        return UNBOUNDED
    key = sort_key(str(literal))
    if op == "eq":
        return Bounds(key, True, key, True)
    if op in ("gt", "ge"):
        return Bounds(low=key, low_inclusive=op == "ge")
    return Bounds(high=key, high_inclusive=op == "le")


class _Parser:
    def __init__(self, tokens: list[_Token], column: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.column = column

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def keyword(self, word: str) -> bool:
        return self.tok.kind == "ident" and bool(self.tok.value == word)

    def parse_or(self) -> Bounds:
        bounds = self.parse_and()
        while self.keyword("or"):
            self.pos += 1
            bounds = bounds.hull(self.parse_and())
        return bounds

    def parse_and(self) -> Bounds:
        bounds = self.parse_not()
        while self.keyword("and"):
            self.pos += 1
            bounds = bounds.intersect(self.parse_not())
        return bounds

    def parse_not(self) -> Bounds:
        if self.keyword("not"):
            self.pos += 1
            self.parse_not()
            return UNBOUNDED
        return self.parse_primary()

    def parse_primary(self) -> Bounds:
        if self.tok.kind == "(":
            start = self.pos
            self.pos += 1
            bounds = self.parse_or()
            if self.tok.kind == ")":
                self.pos += 1
                if self.keyword("and") or self.keyword("or") or self.tok.kind in (")", "eof"):
                    return bounds
            # Not a parenthesised boolean (e.g. a function's arguments): read it as one operand sequence.
            self.pos = start
        depth = 0
        taken: list[_Token] = []
        while self.tok.kind != "eof":
            if depth == 0 and (self.tok.kind == ")" or self.keyword("and") or self.keyword("or")):
                break
            if self.tok.kind in ("(", "["):
                depth += 1
            elif self.tok.kind in (")", "]"):
                depth -= 1
            taken.append(self.tok)
            self.pos += 1
        return _comparison(taken, self.column)


def column_bounds(text: str, column: str) -> Bounds | None:
    """The interval of ``column``'s values a ``$filter`` (already validated) can match; None: unbounded."""
    try:
        tokens = _tokenize(text)
    except ODataQueryError:
        return None
    parser = _Parser(tokens, column)
    bounds = parser.parse_or()
    if parser.tok.kind != "eof":
        return None  # not understood to the end: no bounds
    return None if bounds == UNBOUNDED else bounds
