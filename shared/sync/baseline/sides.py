"""Both stores of an inbound baseline, one key range at a time.

A range is ``(after, through]`` over the template's F&O key, in the order of its key properties (for a
company-specific template ``dataAreaId`` is one of them: the baseline runs over the whole table, as change
tracking does). Per range:

* **Dataverse** rows are read with a normal query (no change tracking): ``$filter`` on the alternate-key columns
  for the range (the company lookup as the GUIDs of the companies whose code lies in the range), ``$orderby`` the
  key columns, paged with ``Prefer: odata.maxpagesize``. The first range also reads the rows whose key columns
  are null (no range comparison matches null), so no row is left out.
* **Commerce** rows are read as a scan plans its ranges: ``key gt <after>``, ``$orderby`` the key, ``$top``: the
  keyset-paging form F&O serves from its key index. They are only a cache of what Commerce holds: a Dataverse row
  whose Commerce row is not in it, unless it is known to be absent (``compare.CommerceCache``), is looked up with
  the others of its page in one query (``or`` of key equalities, F&O has no ``in``), never with one GET per row.

Collation (inferred, both services are SQL Server underneath and both document case-insensitive string
comparison): the range bounds are applied by each service with its own collation. Rows are matched in Python
case-insensitively (``casefold``), as both services match alternate keys. If the two collations order some keys
differently (accents, punctuation), each key is still inside at least one range of each service: any sequence of
bounds covers every key, and a key seen twice is compared twice, which is idempotent. A Dataverse key whose
Commerce row fell into another range is found by the lookup above.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from shared.commerce.client import CommerceClient
from shared.dataverse.client import ODATA_HEADERS, DataverseClient
from shared.http.urls import literal
from shared.mapping.plan import MappingError, Plan
from shared.sync.scan.ranges import range_filter

# One page of Dataverse (docs/protocol-notes.md §2.8: at most 5,000 rows) bounds a range on that side.
MAX_RANGE = 5000
# Longest ``$filter`` of a lookup by keys (an ``or`` chain): F&O's URL limit is not documented; IIS's default query
# string limit is 2,048 characters (inferred), and the encoded filter grows by about a half.
MAX_LOOKUP_FILTER = 1200
Key = tuple[Any, ...]
MatchKey = tuple[str, ...]
# A filter in disjunctive normal form: a list of terms, each a list of atoms (column, operator, rendered value)
# that must all hold. ``[]`` is false, ``[[]]`` true.
Atom = tuple[str, str, str]
Dnf = list[list[Atom]]
TRUE: Dnf = [[]]


def match_key(key: Sequence[Any]) -> MatchKey:
    """A key as both services match it: strings case-insensitively."""
    return tuple(part.casefold() if isinstance(part, str) else str(part) for part in key)


def _and(left: Dnf, right: Dnf) -> Dnf:
    terms: Dnf = []
    for a in left:
        for b in right:
            term = list(dict.fromkeys([*a, *b]))
            equal: dict[str, str] = {}
            if any(op == "eq" and equal.setdefault(column, value) != value for column, op, value in term):
                continue  # one column equal to two values: never true
            terms.append(term)
    return terms


def _render(dnf: Dnf) -> str | None:
    """The ``$filter`` text; None for true. The caller handles false (``[]``)."""
    if dnf == TRUE:
        return None
    terms = [" and ".join(f"{c} {op} {v}" for c, op, v in term) for term in dnf]
    if len(terms) == 1:
        return terms[0]
    return " or ".join(f"({t})" if len(term) > 1 else t for t, term in zip(terms, dnf, strict=True))


_OPS: dict[str, Callable[[str, str], bool]] = {"eq": lambda a, b: a == b, "gt": lambda a, b: a > b,
                                                "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b,
                                                "le": lambda a, b: a <= b}


class BaselineSides:
    """Reads one template's rows from both services a key range at a time (see the module docstring)."""

    def __init__(self, plan: Plan, commerce: CommerceClient, dataverse: DataverseClient, page_size: int,
                 select: list[str]) -> None:
        self.plan = plan
        self.commerce = commerce
        self.dataverse = dataverse
        self.page_size = max(1, min(page_size, MAX_RANGE))
        template = plan.template
        self.entity_set = template.commerce.entity_set
        self.dv_entity_set = template.dataverse.entity_set
        self.company = template.dataverse.company if plan.company_specific else None
        self.order = list(plan.key_properties)  # F&O's key order, dataAreaId included: one run for the table
        columns = {prop: column for column, prop in plan.dataverse_key_properties.items()}
        # The Dataverse column of each key property; dataAreaId of a company-specific table is the company lookup.
        self.columns: dict[str, str] = {p: columns[p] for p in self.order if p in columns}
        self.company_value = f"_{self.company.navigation_property.lower()}_value" if self.company is not None else ""
        self.dv_order = [self.columns[p] for p in self.order if p in self.columns]
        self.select = select  # the Dataverse columns a comparison needs (the shared image's)
        self._companies: list[tuple[str, str]] | None = None  # (code casefolded, GUID), for a company-specific table

    # -- keys ------------------------------------------------------------------------------------------

    def commerce_key(self, row: Mapping[str, Any]) -> Key:
        return tuple(row.get(p) for p in self.order)

    def dataverse_key(self, row: Mapping[str, Any]) -> Key:
        """A Dataverse row's key in the range order (only for a table without company: planning reads it)."""
        return tuple(row.get(self.columns[p]) for p in self.order)

    def smaller(self, after: Key | None, fo_through: Key | None, dv_through: Key | None) -> Key | None:
        """The bound of the next range: the nearer of the two sides' ``through`` (None: that side has fewer than a
        range's worth of rows left). Only a bound beyond ``after`` counts, so planning moves on whatever the two
        collations disagree on; None (no bound left): the range is the open-ended last one."""
        candidates = [k for k in (fo_through, dv_through)
                      if k is not None and (after is None or match_key(k) > match_key(after))]
        return min(candidates, key=match_key) if candidates else None

    # -- Commerce --------------------------------------------------------------------------------------

    def commerce_page(self, after: Key | None, *, keys_only: bool,
                      on_total: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], Key | None]:
        """Up to a range's worth of Commerce rows after ``after`` in key order; the last one's key, or None when
        there were fewer (the rest of the key space)."""
        select = self.order if keys_only else list(self.plan.select_properties)
        rows: list[dict[str, Any]] = []
        for page in self.commerce.iter_pages(self.entity_set, select=select, order_by=self.order,
                                             where=range_filter(self.order, after, None), top=self.page_size, on_total=on_total):
            rows.extend(page)
        through = self.commerce_key(rows[-1]) if len(rows) >= self.page_size else None
        return rows, through

    def commerce_by_keys(self, keys: Sequence[Key]) -> dict[MatchKey, dict[str, Any]]:
        """The Commerce rows of these F&O keys (in ``plan.key_properties`` order), by match key: a few queries with an
        ``or`` chain of key equalities, matched here (case-insensitively, as a read by key matches; ``eq`` with
        ``*`` is a wildcard in F&O, so more rows may come back)."""
        wanted = {match_key(key): key for key in keys}
        found: dict[MatchKey, dict[str, Any]] = {}
        props = self.plan.key_properties
        clauses = [" and ".join(f"{p} eq {literal(v)}" for p, v in zip(props, key, strict=True))
                   for key in wanted.values()]
        chunk: list[str] = []
        size = 0

        def flush() -> None:
            where = " or ".join(f"({c})" if len(props) > 1 else c for c in chunk)
            for page in self.commerce.iter_pages(self.entity_set, select=list(self.plan.select_properties), where=where):
                for row in page:
                    try:
                        mk = match_key(self.plan.key_of(row))
                    except MappingError:
                        continue
                    if mk in wanted:
                        found[mk] = row

        for clause in clauses:
            if chunk and size + len(clause) + 6 > MAX_LOOKUP_FILTER:
                flush()
                chunk, size = [], 0
            chunk.append(clause)
            size += len(clause) + 6
        if chunk:
            flush()
        return found

    # -- Dataverse -------------------------------------------------------------------------------------

    def forget_companies(self) -> None:
        """Read the companies again when next needed (each run and each queued range: a process outlives runs)."""
        self._companies = None

    def companies(self) -> list[tuple[str, str]]:
        """Every company row in Dataverse: (code casefolded, GUID), read once per run or range task."""
        if self._companies is None:
            spec = self.company
            assert spec is not None
            rows = self.dataverse.iter_rows(spec.entity_set, select=[spec.primary_id, spec.match_column])
            self._companies = sorted((str(r[spec.match_column]).casefold(), str(r[spec.primary_id]).lower())
                                     for r in rows if r.get(spec.match_column))
        return self._companies

    def _compare(self, prop: str, op: str, value: Any) -> Dnf:
        if prop == "dataAreaId" and self.company is not None:
            wanted = str(value).casefold()
            return [[(self.company_value, "eq", guid)] for code, guid in self.companies() if _OPS[op](code, wanted)]
        return [[(self.columns[prop], op, literal(value))]]

    def _beyond(self, key: Key, strict: str, last: str) -> Dnf:
        terms: Dnf = []
        for n in range(len(self.order)):
            term = TRUE
            for i in range(n):
                term = _and(term, self._compare(self.order[i], "eq", key[i]))
            term = _and(term, self._compare(self.order[n], last if n == len(self.order) - 1 else strict, key[n]))
            terms.extend(term)
        return terms

    def dataverse_filter(self, after: Key | None, through: Key | None) -> Dnf:
        """The range's rows in Dataverse terms (see ``_render``); ``[]``: no Dataverse row can be in it."""
        dnf = TRUE
        if after is not None:
            dnf = _and(dnf, self._beyond(after, "gt", "gt"))
        if through is not None:
            dnf = _and(dnf, self._beyond(through, "lt", "le"))
        return dnf

    def null_keys_filter(self) -> str:
        """Rows with a null key column (or no company): no range comparison matches them."""
        columns = [*self.dv_order, *([self.company_value] if self.company is not None else [])]
        return " or ".join(f"{c} eq null" for c in columns)

    def dataverse_pages(self, after: Key | None, through: Key | None, *,
                        first: bool) -> Iterator[list[dict[str, Any]]]:
        """The Dataverse rows of ``(after, through]``, a page at a time; the first range adds the rows no range
        can hold (a null key column)."""
        dnf = self.dataverse_filter(after, through)
        filters: list[str | None] = [] if dnf == [] else [_render(dnf)]
        if first and filters != [None]:
            filters.append(self.null_keys_filter())
        headers = {**ODATA_HEADERS, "Prefer": f"odata.maxpagesize={self.dataverse.page_size}"}
        for where in filters:
            params = {"$select": ",".join(self.select)}
            if where:
                params["$filter"] = where
            if self.dv_order:
                params["$orderby"] = ",".join(self.dv_order)
            yield from self.dataverse.core.iter_pages(self.dv_entity_set, params=params, headers=headers)

    def dataverse_through(self, after: Key | None) -> Key | None:
        """The key of the ``page_size``-th Dataverse row after ``after`` (one page, keys only); None when there are
        fewer, or when the table has a company lookup (its GUIDs do not sort like company codes: such a table is
        planned from Commerce's keys alone)."""
        if self.company is not None:
            return None
        params = {"$select": ",".join(self.dv_order), "$orderby": ",".join(self.dv_order), "$top": str(self.page_size)}
        dnf = TRUE if after is None else self._beyond(after, "gt", "gt")
        where = _render(dnf)
        if where:
            params["$filter"] = where
        # No odata.maxpagesize: Dataverse ignores $top when it is sent (docs/protocol-notes.md §2.8).
        body = self.dataverse.core.get_json(self.dv_entity_set, params=params, headers=ODATA_HEADERS)
        rows = body.get("value") or []
        if len(rows) < self.page_size:
            return None
        key = self.dataverse_key(rows[-1])
        return key if all(isinstance(part, str) and part for part in key) else None  # nulls sort first: no bound
