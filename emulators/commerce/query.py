"""Collection queries of the F&O ``/data`` service (docs/protocol-notes.md §3.1, §3.2, §5.2).

``$filter`` (no ``in``/``has``; ``eq '*text*'`` wildcards; enum literals), ``$select``,
``$orderby``, ``$top``, ``$skip``, ``$count``, company scope (default company unless
``cross-company=true``) and server-driven paging with a ``$skip``/``$top`` nextLink.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from emulators.common.odata import ODataQueryError, _tokenize, parse_filter, parse_orderby, sort_rows
from emulators.common.server import EmulatorHTTPError

from . import errors
from .entities import EntitySet

Row = dict[str, Any]

#: F&O's maximum server page size (docs/protocol-notes.md §3.2).
MAX_PAGE_SIZE = 10_000
SUPPORTED_OPTIONS = frozenset(
    {"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$expand", "$format"}
)


@dataclass(frozen=True)
class QueryOptions:
    filter: Any = None  # a compiled predicate (emulators.common.odata.FilterPredicate)
    select: tuple[str, ...] | None = None
    orderby: tuple[tuple[str, bool], ...] = ()
    top: int | None = None
    skip: int = 0
    count: bool = False
    cross_company: bool = False


@dataclass(frozen=True)
class QueryResult:
    rows: list[tuple[Row, str]]
    count: int
    next_skip: int | None = None
    next_top: int | None = None


def _no_property(entity_set: EntitySet, name: str) -> EmulatorHTTPError:
    return errors.bad_request(
        f"Could not find a property named '{name}' on type '{entity_set.full_type_name}'.", query=True
    )


def _non_negative_int(name: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise errors.bad_request(f"Invalid value '{raw}' for {name} query option found. "
                                 f"The {name} query option requires a non-negative integer value.",
                                 query=True)
    return int(raw)


def is_cross_company(query: Mapping[str, str]) -> bool:
    return query.get("cross-company", "").strip().lower() == "true"


def parse_query_options(entity_set: EntitySet, items: Sequence[tuple[str, str]]) -> QueryOptions:
    """Validate and parse the query options of a collection GET (400 on anything malformed)."""
    options: dict[str, str] = {}
    for name, value in items:
        if name.startswith("$"):
            if name not in SUPPORTED_OPTIONS:
                raise errors.bad_request(f"The query parameter '{name}' is not supported.", query=True)
            if name in options:
                raise errors.bad_request(f"Query option '{name}' was specified more than once, "
                                         "but it must be specified at most once.", query=True)
            options[name] = value
    names = set(entity_set.property_names)
    predicate = None
    if options.get("$filter", "").strip():
        try:
            predicate = parse_filter(options["$filter"], allow_in=False, wildcard_eq=True,
                                     types={p.name: p.edm_type for p in entity_set.properties})
        except ODataQueryError as exc:
            raise errors.bad_request(str(exc), query=True) from None
        for prop in sorted(getattr(predicate, "properties", ())):
            if prop not in names:
                raise _no_property(entity_set, prop)
    select = None
    if options.get("$select", "").strip() and options["$select"].strip() != "*":
        select = tuple(part.strip() for part in options["$select"].split(","))
        for prop in select:
            if prop not in names:
                raise _no_property(entity_set, prop)
    orderby: tuple[tuple[str, bool], ...] = ()
    if options.get("$orderby", "").strip():
        try:
            orderby = tuple(parse_orderby(options["$orderby"]))
        except ODataQueryError as exc:
            raise errors.bad_request(str(exc), query=True) from None
        for prop, _ in orderby:
            if prop not in names:
                raise _no_property(entity_set, prop)
    if options.get("$expand", "").strip():
        # No navigation properties are modelled.
        raise _no_property(entity_set, options["$expand"].split(",")[0].split("(")[0].strip())
    count = options.get("$count", "false").strip().lower()
    if count not in ("true", "false"):
        raise errors.bad_request(f"'{options['$count']}' is not a valid count option.", query=True)
    fmt = options.get("$format", "json").strip().lower()
    if fmt not in ("json", "application/json") and not fmt.startswith("application/json;"):
        raise errors.bad_request(f"The format '{options['$format']}' is not supported.", query=True)
    if predicate is not None:
        _check_literal_types(entity_set, options["$filter"])
    return QueryOptions(
        filter=predicate,
        select=select,
        orderby=orderby,
        top=_non_negative_int("$top", options["$top"]) if "$top" in options else None,
        skip=_non_negative_int("$skip", options["$skip"]) if "$skip" in options else 0,
        count=count == "true",
    )


_OPERATOR_KINDS = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
                   "lt": "LessThan", "le": "LessThanOrEqual"}
_NUMERIC = ("Edm.Int32", "Edm.Int64", "Edm.Decimal")


def _literal_type(token: Any) -> str | None:
    """The EDM type of a literal token (None: null, or a kind that is not checked)."""
    if token.kind == "string":
        return "Edm.String"
    if token.kind == "datetime":
        return "Edm.DateTimeOffset"
    if token.kind == "number":
        return "Edm.Decimal" if "." in token.text or "e" in token.text.lower() else "Edm.Int32"
    if token.kind == "guid":
        return "Edm.Guid"
    return None


def _compatible(edm_type: str, literal: str) -> bool:
    if edm_type in _NUMERIC:
        return literal in _NUMERIC
    return literal == edm_type


def _check_literal_types(entity_set: EntitySet, text: str) -> None:
    """``<property> <op> <literal>`` must compare like types, as ODataLib checks: a DateTimeOffset with a bare
    ``2024-01-01T00:00:00Z``, not with a quoted string; a number with a number (docs/protocol-notes.md §3.1-§3.2:
    F&O's OData is ODataLib; the message is ODataLib's, inferred for F&O). Enum properties take enum literals or
    member-name strings and are not checked here."""
    try:
        tokens = _tokenize(text)
    except ODataQueryError:
        return  # the parser reported it already
    for i in range(len(tokens) - 2):
        left, op, right = tokens[i], tokens[i + 1], tokens[i + 2]
        if op.kind != "ident" or op.value not in _OPERATOR_KINDS:
            continue
        for prop_token, literal_token, flip in ((left, right, False), (right, left, True)):
            if prop_token.kind != "ident":
                continue
            prop = entity_set.prop(prop_token.value)
            literal = _literal_type(literal_token)
            if prop is None or prop.enum is not None or literal is None or _compatible(prop.edm_type, literal):
                continue
            types = (literal, prop.edm_type) if flip else (prop.edm_type, literal)
            raise errors.bad_request(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{types[0]}' and '{types[1]}' for operator kind '{_OPERATOR_KINDS[op.value]}'.", query=True)


def run_query(entity_set: EntitySet, rows: list[tuple[Row, str]], options: QueryOptions, *,
              default_company: str, cross_company: bool, page_size: int) -> QueryResult:
    """Apply company scope, filter, order, skip/top and one server page.

    ``rows`` are ``(row, etag)`` pairs in key order (read-only); the result rows are
    ``(row, etag)`` pairs too.
    """
    if entity_set.company_specific and not cross_company:
        company = default_company.casefold()
        rows = [p for p in rows if str(p[0].get("dataAreaId", "")).casefold() == company]
    in_key_order = not options.orderby or list(options.orderby) == [(k, False) for k in entity_set.keys]
    if options.filter is not None and in_key_order and options.top is not None and not options.count:
        # Keyset paging (``$orderby`` the key, ``key gt ...``, ``$top``) over a large set: the rows already
        # come in key order, so stop filtering once this page and one more row are found. Only an
        # emulator speed-up (the page, the nextLink and its ``$top`` are the same); without ``$count``
        # the total is not needed.
        wanted = options.skip + min(options.top, max(1, min(page_size, MAX_PAGE_SIZE))) + 1
        matched = list(itertools.islice((p for p in rows if options.filter(p[0])), wanted))
        rows = matched
        return _page(rows, options, page_size, total=None)
    if options.filter is not None:
        rows = [p for p in rows if options.filter(p[0])]
    if options.orderby and not in_key_order:
        etags = {id(row): etag for row, etag in rows}
        ordered = sort_rows([row for row, _ in rows], options.orderby)  # stable: key order breaks ties
        rows = [(row, etags[id(row)]) for row in ordered]  # type: ignore[misc]
    return _page(rows, options, page_size, total=len(rows))


def _page(rows: list[tuple[Row, str]], options: QueryOptions, page_size: int, *, total: int | None) -> QueryResult:
    """One server page of ``rows`` (filtered and ordered); ``total`` None: only known to be beyond the page."""
    window = rows[options.skip:]
    if options.top is not None:
        window = window[: options.top]
    size = max(1, min(page_size, MAX_PAGE_SIZE))
    page = window[:size]
    if len(window) <= size:
        return QueryResult(page, len(rows) if total is None else total)
    next_skip = options.skip + len(page)
    # nextLink $top: what is left of the client's $top, else of the result (inferred; §3.2 only
    # shows that observed nextLinks carry both $skip and $top).
    assert options.top is not None or total is not None
    next_top = options.top - len(page) if options.top is not None else (total or 0) - next_skip
    return QueryResult(page, len(rows) if total is None else total, next_skip, next_top)


def next_link(base: str, raw_query: str, skip: int, top: int) -> str:
    """``base?<other options as sent>&$skip=<skip>&$top=<top>``: other options kept verbatim."""
    kept = [part for part in raw_query.split("&")
            if part and unquote_plus(part.split("=", 1)[0]) not in ("$skip", "$top")]
    kept += [f"$skip={skip}", f"$top={top}"]
    return f"{base}?{'&'.join(kept)}"


def project(entity_set: EntitySet, row: Mapping[str, Any], etag: str,
            select: Sequence[str] | None = None) -> Row:
    """Wire shape of one row: ``@odata.etag`` then the (selected) properties in metadata order."""
    wanted = set(select) if select is not None else None
    body: Row = {"@odata.etag": etag}
    for prop in entity_set.properties:
        if wanted is None or prop.name in wanted:
            body[prop.name] = row.get(prop.name)
    return body
