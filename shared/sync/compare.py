"""Both stores side by side, one key range at a time: what ``reconcile`` and a dry run read.

Commerce is read as a full scan reads it: in key ranges of ``SYNC_PAGE_SIZE`` keys in its key order
(``$orderby`` the key, ``key gt <last>``, ``$top``), one scope (a legal entity, or the whole set) at a time.
The Dataverse rows of the same range ``(after, through]`` are read with a ``$filter`` on the alternate key
columns (and the company lookup for a company-specific table), streamed page by page. Only the Commerce rows
of one range are held (at most ``SYNC_PAGE_SIZE``), never a table; the first range is open at the bottom and
the last at the top, so a Dataverse row outside every Commerce key is read too.

A Commerce row is compared with a Dataverse row as ``tests/e2e/stores.py`` does: the row mapped through the
template's plan, against the Dataverse columns with lookups read back as their codes. Keys and lookup codes
compare case-insensitively (both services match alternate keys and lookups so); numbers by value; date-times
as instants; an empty string is null (the plan writes "" as null).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.dataverse.client import LookupMissingError
from shared.mapping.plan import DataverseRecord, LookupValue
from shared.state.store import encode_key
from shared.sync.engine import OutboundSync
from shared.sync.scan.ranges import RangeReader, range_filter

MatchKey = tuple[str, ...]


def match_key(key: tuple[str, ...]) -> MatchKey:
    """A key as both services match it: case-insensitively."""
    return tuple(part.casefold() for part in key)


@dataclass(frozen=True)
class KeyRange:
    """Commerce's rows with keys in ``(after, through]`` (None: open), in key order."""

    after: tuple[Any, ...] | None
    through: tuple[Any, ...] | None
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class ColumnDiff:
    """One Dataverse column: what Commerce's row maps to, and what Dataverse holds (lookups as codes)."""

    column: str
    commerce: Any
    dataverse: Any

    def as_dict(self) -> dict[str, Any]:
        return {"column": self.column, "commerce": self.commerce, "dataverse": self.dataverse}


@dataclass
class Finding:
    """One record of a reconcile (``missing``, ``extra``, ``different``, ``unmappable``) or of a dry run
    (``create``, ``update``, ``delete``, ``park``), with the columns concerned."""

    template: str
    scope: str
    kind: str
    key: tuple[str, ...]
    columns: list[ColumnDiff] = field(default_factory=list)
    detail: str = ""
    repair: str = ""  # what --repair did, or is doing, about it

    @property
    def row_key(self) -> str:
        return encode_key(self.key) if self.key else ""

    def as_dict(self) -> dict[str, Any]:
        return {"template": self.template, "scope": self.scope, "kind": self.kind, "key": list(self.key),
                "row_key": self.row_key, "columns": [c.as_dict() for c in self.columns], "detail": self.detail,
                "repair": self.repair}


Sink = Callable[[Finding], None]


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Sides:
    """Reads one template's scopes from both services a key range at a time and compares records."""

    def __init__(self, engine: OutboundSync, page_size: int | None = None) -> None:
        self.engine = engine
        self.plan = plan = engine.plan
        self.reader = (engine.reader_factory or RangeReader)(engine, page_size or engine.page_size)
        self.volatile = plan.volatile_columns  # written with a record, never compared (an aggregate's as-of date)
        dv = plan.template.dataverse
        self.entity_set = dv.entity_set
        self.primary_id = dv.primary_id
        self.company = dv.company
        self.lookups = {row.lookup.navigation_property: row.lookup for row in plan.template.fields if row.lookup}
        self.key_columns = {prop: column for column, prop in plan.dataverse_key_properties.items()}
        # Commerce's key order within a scope, as Dataverse columns: the range filter on the Dataverse side.
        self.order_columns = [self.key_columns[prop] for prop in self.reader.order]
        self.select = [self.primary_id, *(f"_{c.lower()}_value" if c in self.lookups else c for c in plan.dataverse_columns)]
        self.datetimes = frozenset(row.dataverse_column for row in plan.template.fields if row.dataverse_type == "datetime")
        self.folded = frozenset({*self.key_columns.values(), *self.lookups})

    # -- Commerce ----------------------------------------------------------------------------------------

    def ranges(self, company: str | None, on_total: Callable[[int], None] | None = None) -> Iterator[KeyRange]:
        """Commerce's rows of a scope, a key range at a time (keyset paging, as a scan plans its ranges)."""
        after: tuple[Any, ...] | None = None
        size = self.reader.page_size
        fold = getattr(self.engine, "folded_rows", None)
        while fold is not None:  # an aggregate: ranges of whole groups, their lines folded into records
            keys = [row for page in self.reader.read(company, after, None, top=size, keys_only=True) for row in page]
            through = tuple(keys[-1].get(p) for p in self.reader.order) if len(keys) >= size else None
            lines = (row for page in self.reader.read(company, after, through) for row in page)
            yield KeyRange(after, through, fold(lines))
            if through is None:
                return
            after = through
        while True:
            rows = [row for page in self.reader.read(company, after, None, top=size, on_total=on_total) for row in page]
            on_total = None  # $count once, on the first range
            through = tuple(rows[-1].get(p) for p in self.reader.order) if len(rows) >= size else None
            yield KeyRange(after, through, rows)
            if through is None:
                return
            after = through

    def commerce_row(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """One Commerce record by its full key, with its derived columns (None: Commerce does not have it)."""
        return self.engine.read(key)

    # -- Dataverse ---------------------------------------------------------------------------------------

    def dataverse_rows(self, company: str | None, after: tuple[Any, ...] | None,
                       through: tuple[Any, ...] | None) -> Iterator[dict[str, Any]]:
        """Dataverse's rows of a scope whose alternate key lies in ``(after, through]``, streamed."""
        clauses: list[str] = []
        if self.company is not None and company is not None:
            try:
                guid = self.engine.writer.company_guid(company)
            except LookupMissingError:
                return  # the company is not in Dataverse: no row can point at it
            clauses.append(f"_{self.company.navigation_property}_value eq {guid}")
        where = range_filter(self.order_columns, self._typed(after), self._typed(through))
        if where:
            clauses.append(f"({where})" if clauses else where)
        yield from self.engine.dataverse.iter_rows(self.entity_set, select=self.select,
                                                   filter=" and ".join(clauses) or None)

    def _typed(self, bound: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """An F&O range bound as Dataverse literals of the key columns (a date column's part as a bare date)."""
        if bound is None:
            return None
        return tuple(self.plan.dataverse_literal(column, value)
                     for column, value in zip(self.order_columns, bound, strict=True))

    def key_of(self, dv_row: Mapping[str, Any], company: str | None) -> tuple[str, ...] | None:
        """The F&O key of a Dataverse row of this scope; None when a key column is empty."""
        parts: list[str] = []
        for prop in self.plan.key_properties:
            if prop == "dataAreaId" and company is not None:
                parts.append(company)
                continue
            value = dv_row.get(self.key_columns.get(prop, ""))
            if not isinstance(value, str) or not value:
                return None
            parts.append(value)
        return tuple(parts)

    def columns_of(self, dv_row: Mapping[str, Any]) -> dict[str, Any]:
        """The plan's Dataverse columns of a row, lookups as their codes."""
        columns: dict[str, Any] = {}
        for column in self.plan.dataverse_columns:
            spec = self.lookups.get(column)
            if spec is None:
                columns[column] = dv_row.get(column)
                continue
            guid = dv_row.get(f"_{column.lower()}_value")
            columns[column] = (self.engine.dataverse.code_of(spec.entity_set, spec.primary_id, spec.match_column,
                                                             str(guid)) if guid else None)
        return columns

    # -- comparing -----------------------------------------------------------------------------------------

    def same(self, column: str, commerce: Any, dataverse: Any) -> bool:
        commerce = None if commerce == "" else commerce
        dataverse = None if dataverse == "" else dataverse
        if commerce is None or dataverse is None:
            return commerce is None and dataverse is None
        if isinstance(commerce, bool) or isinstance(dataverse, bool):
            return commerce is dataverse
        if column in self.folded and isinstance(commerce, str) and isinstance(dataverse, str):
            return commerce.casefold() == dataverse.casefold()
        a, b = _number(commerce), _number(dataverse)
        if a is not None and b is not None:
            return a == b
        if column in self.datetimes and isinstance(commerce, str) and isinstance(dataverse, str):
            x, y = _instant(commerce), _instant(dataverse)
            if x is not None and y is not None:
                return x == y
        return bool(commerce == dataverse)

    def differences(self, record: DataverseRecord, dataverse: Mapping[str, Any]) -> list[ColumnDiff]:
        """The columns in which Dataverse's row differs from the mapped Commerce record."""
        diffs: list[ColumnDiff] = []
        for column, value in record.columns.items():
            if column in self.volatile:
                continue
            expected = value.match_value if isinstance(value, LookupValue) else value
            if not self.same(column, expected, dataverse.get(column)):
                diffs.append(ColumnDiff(column, expected, dataverse.get(column)))
        return diffs
