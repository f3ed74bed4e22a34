"""Query options and paging of ``GET <set>`` (docs/protocol-notes.md §2.1, §2.8).

* Supported: ``$select $filter $orderby $top $count`` (+ the server's own ``$skiptoken``).
  ``$skip``, ``$search`` and ``$format`` are rejected with 400; other unknown ``$`` options
  (names are case-sensitive) too. ``$expand`` and ``$apply`` are real but not emulated yet
  (501). Change tracking (``Prefer: odata.track-changes``, ``$deltatoken``, tracking
  ``$skiptoken`` cookies) is answered by :mod:`emulators.dataverse.changetracking` before
  this module sees the query; a ``$deltatoken`` anywhere else is an unsupported option (400).
* Paging: rows are ordered by ``$orderby`` then the primary id; a page ends with an
  ``@odata.nextLink`` whose ``$skiptoken`` mimics the documented cookie
  ``<cookie pagenumber="2" pagingcookie="..." istracking="False" />`` (inner cookie double
  URL-encoded in the link). The inner cookie records the sort values of the first and last
  row of the page, so the next page resumes *after* the last row (keyset paging: rows
  inserted or deleted meanwhile do not shift the pages).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import quoteattr

from emulators.common.odata import (
    FilterPredicate,
    ODataQueryError,
    parse_filter,
    parse_orderby,
    sort_key,
)

from . import errors
from .indexes import Bounds, column_bounds
from .schema import ColumnType, Table
from .store import Store

#: ``@odata.count`` stops at 5,000 (§2.8).
COUNT_LIMIT = 5000
#: Maximum page size (§2.8).
MAX_PAGE_SIZE = 5000

_REJECTED_OPTIONS = ("$skip", "$search", "$format")
_NOT_EMULATED = {"$expand": "$expand", "$apply": "$apply"}
COLLECTION_OPTIONS = frozenset({"$select", "$filter", "$orderby", "$top", "$count", "$skiptoken"})
ENTITY_OPTIONS = frozenset({"$select"})

SortSpec = list[tuple[str, bool]]


@dataclass(frozen=True)
class CollectionQuery:
    select: tuple[str, ...] | None
    predicate: FilterPredicate | None
    orderby: SortSpec
    top: int | None
    count: bool
    skiptoken: str | None


def check_options(items: Iterable[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    """System query options by name; rejects unsupported, unknown and repeated ones."""
    options: dict[str, str] = {}
    for name, value in items:
        if not name.startswith("$"):
            continue  # parameter aliases and custom parameters are not options
        if name in _REJECTED_OPTIONS:
            # Text seen in public material for $skip (inferred for the other two).
            raise errors.bad_request(f"The query parameter {name} is not supported")
        if name in _NOT_EMULATED:
            raise errors.not_implemented(_NOT_EMULATED[name])
        if name not in allowed:
            raise errors.bad_request(f"The query parameter {name} is not supported")
        if name in options:
            raise errors.bad_request(
                f"Query option '{name}' was specified more than once, but it must be specified at most once."
            )
        options[name] = value
    return options


def _unknown_property(table: Table, name: str) -> Exception:
    return errors.bad_request(f"Could not find a property named '{name}' on type '{table.qualified_name}'.")


def parse_select(table: Table, text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    for name in names:
        if not name:
            raise errors.bad_request(f"Syntax error: '$select={text}' contains an empty item.")
        if table.property_type(name) is None:
            raise _unknown_property(table, name)
    return names


def parse_collection_query(table: Table, items: Iterable[tuple[str, str]]) -> CollectionQuery:
    options = check_options(items, COLLECTION_OPTIONS)
    select = parse_select(table, options["$select"]) if "$select" in options else None
    predicate: FilterPredicate | None = None
    orderby: SortSpec = []
    try:
        if "$filter" in options:
            dates = {name: "Edm.Date" for name in table.columns if table.property_type(name) is ColumnType.DATE}
            compiled = parse_filter(options["$filter"], allow_in=True, types=dates)
            assert isinstance(compiled, FilterPredicate)
            predicate = compiled
        if "$orderby" in options:
            orderby = parse_orderby(options["$orderby"])
    except ODataQueryError as exc:
        raise errors.bad_request(str(exc)) from exc
    referenced = [*(predicate.properties if predicate else ()), *(p for p, _ in orderby)]
    for name in referenced:
        if "/" in name:
            raise errors.not_implemented(f"Lookup traversal '{name}'")
        if table.property_type(name) is None:
            raise _unknown_property(table, name)
    top = _parse_top(options.get("$top"))
    count_text = options.get("$count", "false")
    if count_text not in ("true", "false"):
        raise errors.bad_request(
            f"'{count_text}' is not a valid count option. The $count query option requires 'true' or 'false'."
        )
    return CollectionQuery(select, predicate, orderby, top, count_text == "true", options.get("$skiptoken"))


def parse_entity_select(table: Table, items: Iterable[tuple[str, str]]) -> tuple[str, ...] | None:
    """``$select`` for single-row GET and ``return=representation`` writes."""
    options = check_options(items, ENTITY_OPTIONS)
    return parse_select(table, options["$select"]) if "$select" in options else None


def _parse_top(text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d+", text):
        raise errors.bad_request(
            f"Invalid value '{text}' for $top query option found. The $top query option requires a non-negative integer value."
        )
    return int(text)


# -- ordering and keyset paging ---------------------------------------------------------


def sort_spec(table: Table, orderby: Sequence[tuple[str, bool]]) -> SortSpec:
    """``$orderby`` plus the primary id as the final tie-breaker."""
    spec = list(orderby)
    if table.primary_id not in (name for name, _ in spec):
        spec.append((table.primary_id, False))
    return spec


def _row_key(row: Mapping[str, Any], spec: SortSpec) -> list[Any]:
    return [sort_key(row.get(name)) for name, _ in spec]


def order_rows(rows: list[dict[str, Any]], spec: SortSpec) -> list[dict[str, Any]]:
    for name, descending in reversed(spec):
        rows.sort(key=lambda row: sort_key(row.get(name)), reverse=descending)
    return rows


def rows_after(rows: Iterable[dict[str, Any]], spec: SortSpec, last: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows that sort strictly after the row whose sort values are ``last``."""
    last_key = [sort_key(last.get(name)) for name, _ in spec]
    result = []
    for row in rows:
        for (_, descending), mine, theirs in zip(spec, _row_key(row, spec), last_key, strict=True):
            if mine != theirs:
                if (mine > theirs) != descending:
                    result.append(row)
                break
    return result


@dataclass(frozen=True)
class PagingCookie:
    page_number: int
    last: dict[str, Any]


def _encode_value(table: Table, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if table.property_type(name) is ColumnType.GUID:
        return "{" + str(value).upper() + "}"  # as in the documented cookie
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _decode_value(table: Table, name: str, text: str | None) -> Any:
    if text is None:
        return None
    kind = table.property_type(name)
    if kind is ColumnType.GUID:
        return text.strip("{}").lower()
    if kind in (ColumnType.INT32, ColumnType.INT64, ColumnType.CHOICE):
        return int(text)
    if kind is ColumnType.BOOLEAN:
        return text == "1"
    if kind in (ColumnType.DECIMAL, ColumnType.MONEY):
        return float(text)
    return text


def _percent_encode_lower(text: str) -> str:
    """.NET-style encoding with lower-case hex (``%3ccookie%20page%3d...``)."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(text, safe=""))


def encode_skiptoken(
    table: Table,
    spec: SortSpec,
    first_row: Mapping[str, Any],
    last_row: Mapping[str, Any],
    next_page: int,
) -> str:
    """The ``$skiptoken`` value, URL-encoded, ready to append to a nextLink."""
    inner = ET.Element("cookie", {"page": str(next_page - 1)})
    for name, _ in spec:
        attributes = {}
        for attr, row in (("last", last_row), ("first", first_row)):
            encoded = _encode_value(table, name, row.get(name))
            if encoded is not None:
                attributes[attr] = encoded
        ET.SubElement(inner, name, attributes)
    inner_text = ET.tostring(inner, encoding="unicode", short_empty_elements=True)
    outer = (
        f"<cookie pagenumber={quoteattr(str(next_page))} "
        f'pagingcookie={quoteattr(_percent_encode_lower(inner_text))} istracking="False" />'
    )
    return quote(outer, safe="=/")


def decode_skiptoken(table: Table, spec: SortSpec, text: str) -> PagingCookie:
    """Parse a ``$skiptoken`` (already URL-decoded once by the query-string parser)."""
    invalid = errors.bad_request("The $skiptoken value is not a valid paging cookie.")
    try:
        outer = ET.fromstring(text)
        page_number = int(outer.attrib["pagenumber"])
        inner = ET.fromstring(unquote(outer.attrib["pagingcookie"]))
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise invalid from exc
    elements = {child.tag: child for child in inner}
    if [name for name, _ in spec] != [child.tag for child in inner]:
        raise invalid
    try:
        last = {name: _decode_value(table, name, elements[name].get("last")) for name, _ in spec}
    except ValueError as exc:
        raise invalid from exc
    return PagingCookie(page_number, last)


def strip_skiptoken(raw_query: str) -> str:
    """The raw query string without any ``$skiptoken`` parameter (other parts verbatim)."""
    kept = [part for part in raw_query.split("&") if part and unquote(part.split("=", 1)[0]) != "$skiptoken"]
    return "&".join(kept)


# -- answering a collection query ---------------------------------------------------------


def _after(row: Mapping[str, Any], spec: SortSpec, last_key: list[Any]) -> bool:
    """Whether ``row`` sorts strictly after the row whose sort keys are ``last_key``."""
    for (name, descending), theirs in zip(spec, last_key, strict=True):
        mine = sort_key(row.get(name))
        if mine != theirs:
            return bool((mine > theirs) != descending)
    return False


def select_rows(store: Store, table: Table, query: CollectionQuery, spec: SortSpec,
                last: Mapping[str, Any] | None, *, want: int) -> tuple[list[dict[str, Any]], int]:
    """The rows of a collection query from the page a cookie's ``last`` sort values point after (copies, ordered by
    ``spec``): at least ``want`` of them when there are that many, and the total the filter matches (only counted
    for ``$count``; else 0). The same rows a scan of the whole table gives; when ``$orderby``'s first column is a
    string or GUID column, its sorted index (:mod:`.indexes`) narrows the scan to the interval the filter and the
    cookie allow, in order, and stops once ``want`` rows and every row tied with the last one are in."""
    first, descending = spec[0]
    indexed = table.property_type(first) in (ColumnType.STRING, ColumnType.GUID) and not query.count
    last_key = [sort_key(last.get(name)) for name, _ in spec] if last is not None else None
    predicate = query.predicate
    with store.lock:
        if not indexed:
            rows = [row for row in store.stored_rows(table.entity_set) if predicate is None or predicate(row)]
            total = len(rows)
            if last_key is not None:
                rows = [row for row in rows if _after(row, spec, last_key)]
            return order_rows([dict(row) for row in rows], spec), total
        bounds = column_bounds(predicate.text, first) if predicate is not None else None
        if last_key is not None:  # resume at the cookie's row: the first column cannot go back
            cookie = Bounds(high=last_key[0]) if descending else Bounds(low=last_key[0])
            bounds = cookie if bounds is None else bounds.intersect(cookie)
        index = store.sorted_index(table.entity_set, first)
        matched: list[dict[str, Any]] = []
        for row_id in index.ids(bounds, descending=descending):
            row = store.stored(table.entity_set, row_id)
            if len(matched) >= want and sort_key(row.get(first)) != sort_key(matched[-1].get(first)):
                break  # every later row sorts after all of these: the page is complete
            if predicate is not None and not predicate(row):
                continue
            if last_key is not None and not _after(row, spec, last_key):
                continue
            matched.append(row)
        return order_rows([dict(row) for row in matched], spec), 0
