"""A template compiled into a plan: the hot path runs closures, it never re-reads the JSON.

``Plan.to_dataverse`` turns one F&O OData row into the Dataverse columns the map allows in the
F&O -> Dataverse direction (``=``, ``><``, ``>``, ``>>``), with value maps applied and lookups left
as ``LookupValue`` for the writer to resolve. Rows that only flow Dataverse -> F&O (``<``, ``<<``)
are never produced here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.balances.registry import FOLDS
from shared.literals import DateLiteral, DateTimeOffsetLiteral
from shared.mapping.model import Direction, FieldRow, LookupSpec, Template, ValueMap

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


DATAVERSE_MIN_DATE = datetime(1753, 1, 1, tzinfo=UTC)
DATAVERSE_MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


class MappingError(ValueError):
    """A record cannot be mapped; ``field`` names the F&O property at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class LookupValue:
    """A lookup the writer must resolve to the referenced row (``nav@odata.bind``)."""

    spec: LookupSpec
    match_value: str


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a third of the mapping time
class DataverseRecord:
    """One F&O row mapped for Dataverse, with its key and a hash of the mapped content."""

    key: tuple[str, ...]
    company: str | None
    columns: dict[str, Any]
    content_hash: str


Converter = Callable[[Any], Any]


def _string(row: FieldRow) -> Converter:
    def convert(value: Any) -> Any:
        if value is None or value == "":
            # F&O has no NULL strings: "" means empty; Dataverse gets null (inferred).
            return None
        if not isinstance(value, str):
            raise MappingError(row.fo_property, f"expected a string, got {type(value).__name__} {value!r}")
        return value

    return convert


def _integer(row: FieldRow, bounds: tuple[int, int], target: str) -> Converter:
    low, high = bounds

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise MappingError(row.fo_property, f"expected an integer, got {type(value).__name__} {value!r}")
        if not low <= value <= high:
            raise MappingError(row.fo_property, f"{value} is outside the range of a Dataverse {target} ({low}..{high})")
        return value

    return convert


def _decimal(row: FieldRow) -> Converter:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MappingError(row.fo_property, f"expected a number, got {type(value).__name__} {value!r}")
        return value

    return convert


_CANONICAL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _datetime(row: FieldRow) -> Converter:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and len(value) == 20 and value[:4] >= "1753" and _CANONICAL_DATETIME.match(value):
            return value  # already UTC, whole seconds, in range: the common case, without parsing
        if not isinstance(value, str):
            raise MappingError(row.fo_property, f"expected an ISO 8601 date-time string, got {value!r}")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise MappingError(row.fo_property, f"{value!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        if not DATAVERSE_MIN_DATE <= parsed <= DATAVERSE_MAX_DATE:
            raise MappingError(row.fo_property, f"{value!r} is outside Dataverse's date range (1753-01-01 to 9999-12-31)")
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return convert


def _date(row: FieldRow) -> Converter:
    """An F&O date (a DateTimeOffset at midnight UTC, docs/domain-notes.md §6) for a date-only column: its UTC date,
    ``2024-01-01``. The empty date 1900-01-01 is kept as a date (it can be part of a key: an open ValidTo, inferred)."""
    as_datetime = _datetime(row)

    def convert(value: Any) -> Any:
        if isinstance(value, str) and len(value) == 10 and _CANONICAL_DATE.match(value):
            return value  # already a date (a key read back from state)
        instant = as_datetime(value)
        return None if instant is None else instant[:10]

    return convert


_CANONICAL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WCF_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
EMPTY_DATE = "1900-01-01"  # F&O's "no date" (docs/domain-notes.md §6)


def _from_wcf(value: str) -> str:
    """A data event's ``/Date(<ms>)/`` (docs/protocol-notes.md §4.4) as an ISO instant in UTC; other text unchanged."""
    match = _WCF_DATE.match(value)
    if match is None:
        return value
    return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _boolean(row: FieldRow) -> Converter:
    def convert(value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        raise MappingError(row.fo_property, f"expected true or false, got {type(value).__name__} {value!r}")

    return convert


def _value_map(row: FieldRow, value_map: ValueMap) -> Converter:
    # Value maps write F&O members in lowerCamel; OData sends PascalCase: matched case-insensitively (inferred).
    table = {entry.fo.lower(): entry.dataverse for entry in value_map.entries}
    accepted = ", ".join(entry.fo for entry in value_map.entries)

    def convert(value: Any) -> Any:
        if not isinstance(value, str) or value.lower() not in table:
            # An unknown or empty enum value has no mapping: an error, never a silent default (inferred).
            raise MappingError(row.fo_property, f"{value!r} is not in value map {value_map.fo_enum} ({accepted})")
        return table[value.lower()]

    return convert


def _lookup(row: FieldRow, spec: LookupSpec) -> Converter:
    def convert(value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise MappingError(row.fo_property, f"expected a code string for lookup {spec.navigation_property}, got {value!r}")
        return LookupValue(spec, value)

    return convert


def _converter(template: Template, row: FieldRow) -> Converter:
    if row.value_map is not None:
        base = _value_map(row, template.value_maps[row.value_map])
    elif row.lookup is not None:
        base = _lookup(row, row.lookup)
    elif row.dataverse_type == "string":
        base = _string(row)
    elif row.dataverse_type == "integer":
        base = _integer(row, INT32, "whole number")
    elif row.dataverse_type == "bigint":
        base = _integer(row, INT64, "big integer")
    elif row.dataverse_type == "datetime":
        base = _datetime(row)
    elif row.dataverse_type == "date":
        base = _date(row)
    elif row.dataverse_type == "boolean":
        base = _boolean(row)
    elif row.dataverse_type == "decimal":
        base = _decimal(row)
    else:  # pragma: no cover - the model rules out other combinations
        raise ValueError(f"{template.name}: no converter for {row.fo_type} -> {row.dataverse_type}")
    if row.default is None and row.nullable:
        return base
    default = row.default

    def convert(value: Any) -> Any:
        if (value is None or value == "") and default is not None:
            value = default
        result = base(value)
        if result is None and not row.nullable:
            raise MappingError(row.fo_property, "is required but empty")
        return result

    return convert


def _identity(value: Any) -> Any:
    return value


def _reverse_value_map(row: FieldRow, value_map: ValueMap) -> Converter:
    table = {entry.dataverse: entry.member for entry in value_map.entries}
    accepted = ", ".join(str(entry.dataverse) for entry in value_map.entries)

    def convert(value: Any) -> Any:
        if isinstance(value, bool) != isinstance(next(iter(table)), bool) or value not in table:
            raise MappingError(row.dataverse_column, f"{value!r} is not in value map {value_map.fo_enum} ({accepted})")
        return table[value]

    return convert


def _image_normalizer(template: Template, row: FieldRow) -> Converter:
    """One comparable form per value: "" is None, dates in UTC seconds, enum members as the map spells them."""
    members = ({e.member.lower(): e.member for e in template.value_maps[row.value_map].entries}
               if row.value_map is not None else None)
    as_datetime = _datetime(row) if row.fo_type == "datetimeoffset" else None

    def normalize(value: Any) -> Any:
        if value is None or value == "":
            return None
        if members is not None and isinstance(value, str):
            return members.get(value.lower(), value)
        if as_datetime is not None and isinstance(value, str):
            try:
                return as_datetime(value)
            except MappingError:
                return value
        return value

    return normalize


def image_hash(image: Mapping[str, Any]) -> str:
    blob = json.dumps(sorted(image.items()), separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def content_hash(columns: Mapping[str, Any], company: str | None) -> str:
    """A stable hash of mapped content, columns in the plan's (fixed) order. Lookups hash by their code,
    so GUIDs never matter; ``repr`` keeps types apart (1 vs "1" vs True). A template that adds or
    reorders columns changes every hash once, which rewrites its records once."""
    values = [("@lookup", v.match_value) if isinstance(v, LookupValue) else v for v in columns.values()]
    return hashlib.blake2b(repr((company, values)).encode("utf-8"), digest_size=16).hexdigest()


COMPANY_COLUMN = "@company"  # the company binding, as a pseudo-column of the column digests


def column_digests(columns: Mapping[str, Any], company: str | None) -> str:
    """A 48-bit digest per column (plan order) and one for the company: which columns a later write must
    send. A column whose value changed but whose digest did not (odds 1 in 2^48) would not be sent."""
    values = [("@lookup", v.match_value) if isinstance(v, LookupValue) else v for v in columns.values()]
    return "".join(hashlib.blake2b(repr(v).encode("utf-8"), digest_size=6).hexdigest() for v in [*values, company])


def changed_columns(columns: Mapping[str, Any], company: str | None, previous: str) -> frozenset[str] | None:
    """The columns (and ``COMPANY_COLUMN``) whose digest differs from ``previous``; None when ``previous``
    cannot tell (none kept, or the template's columns changed): then every column is sent."""
    current = column_digests(columns, company)
    if len(previous) != len(current):
        return None
    names = [*columns, COMPANY_COLUMN]
    return frozenset(name for n, name in enumerate(names) if current[12 * n:12 * n + 12] != previous[12 * n:12 * n + 12])


class Plan:
    """The compiled form of one template."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self.name = template.name
        self.key_properties: tuple[str, ...] = tuple(template.commerce.key)
        self.company_specific = template.commerce.company_specific
        rows = template.rows_for(Direction.TO_DATAVERSE)
        self._to_dataverse: list[tuple[str, str, Converter]] = [
            (row.fo_property, row.lookup.navigation_property if row.lookup else row.dataverse_column, _converter(template, row))
            for row in rows
        ]
        self.select_properties: tuple[str, ...] = tuple(
            dict.fromkeys([*self.key_properties, *(prop for prop, _, _ in self._to_dataverse if not prop.startswith("@"))])
        )
        # Derived columns (``derive``): computed by the engine into the row as ``@<name>`` before it is mapped.
        self.derived = dict(template.derived)
        self.dataverse_columns: tuple[str, ...] = tuple(column for _, column, _ in self._to_dataverse)
        # An aggregate template reads its fold's source lines, and leaves the fold's volatile outputs (the as-of
        # date) out of the content hash: they are written with a changed record, but never make one changed.
        self.aggregate = template.aggregate
        self._hashed: frozenset[str] | None = None
        if template.aggregate is not None:
            fold = FOLDS[template.aggregate.fold]
            pooling = template.aggregate.pooling
            extra = (pooling.tender_property, pooling.customer_property) if pooling else ()
            self.select_properties = tuple(dict.fromkeys([*fold.source_properties, *extra]))
            self._hashed = frozenset(column for prop, column, _ in self._to_dataverse if prop not in fold.volatile)
        self.volatile_columns: frozenset[str] = (frozenset(self.dataverse_columns) - self._hashed
                                                 if self._hashed is not None else frozenset())
        self._lookup_specs: dict[str, LookupSpec] = {}
        self._to_commerce: list[tuple[str, str, Converter]] = []
        for row in template.rows_for(Direction.TO_COMMERCE):
            if row.lookup is not None:
                marker = f"@lookup:{row.lookup.navigation_property}"
                self._lookup_specs[marker] = row.lookup
                self._to_commerce.append((row.fo_property, marker, _identity))
            elif row.value_map is not None:
                self._to_commerce.append((row.fo_property, row.dataverse_column,
                                          _reverse_value_map(row, template.value_maps[row.value_map])))
            else:
                self._to_commerce.append((row.fo_property, row.dataverse_column, _identity))
        self._image: list[tuple[str, Converter]] = [
            (row.fo_property, _image_normalizer(template, row)) for row in template.rows_for(Direction.TO_COMMERCE)
        ]
        # A key field that also feeds a lookup (the card number) is keyed by its plain column.
        key_rows = {row.fo_property: row for row in template.fields if row.lookup is None}
        key_columns = {prop: row.dataverse_column for prop, row in key_rows.items()}
        self.alternate_key_columns: tuple[str, ...] = tuple(template.dataverse.alternate_key)
        self.dataverse_key_properties = {key_columns[p]: p for p in self.key_properties if p in key_columns}
        # Date and date-time key parts (LoyaltyCardTiersV2's ValidFrom/ValidTo): canonical in the key tuple (a date,
        # or a UTC instant in whole seconds), bare literals in F&O and Dataverse URLs (docs/protocol-notes.md §2.5, §3.1).
        self._key_converters: dict[str, Converter] = {}
        for prop in self.key_properties:
            key_row = key_rows.get(prop)
            if key_row is not None and key_row.fo_type == "datetimeoffset":
                self._key_converters[prop] = _date(key_row) if key_row.dataverse_type == "date" else _datetime(key_row)
        self.date_key_properties = frozenset(self._key_converters)
        self.dataverse_date_columns = frozenset(
            column for column, prop in self.dataverse_key_properties.items() if prop in self._key_converters
            and key_rows[prop].dataverse_type == "date")
        self.dataverse_datetime_columns = frozenset(
            column for column, prop in self.dataverse_key_properties.items() if prop in self._key_converters
            and key_rows[prop].dataverse_type == "datetime")

    def key_of(self, fo_row: Mapping[str, Any]) -> tuple[str, ...]:
        """The F&O key in ``commerce.key`` order; ``dataAreaId`` lower-cased (F&O stores it so, inferred); a date key
        part as its UTC date (``2024-01-01``), a date-time one as its UTC instant (``2024-01-01T10:00:00Z``)."""
        parts: list[str] = []
        for prop in self.key_properties:
            value = fo_row.get(prop)
            if value is None or value == "":
                raise MappingError(prop, "key field is missing or empty")
            if not isinstance(value, str):
                raise MappingError(prop, f"key field must be a string, got {value!r}")
            convert = self._key_converters.get(prop)
            if convert is not None:
                value = convert(_from_wcf(value))
            parts.append(value.lower() if prop == "dataAreaId" else value)
        return tuple(parts)

    def fo_literal(self, prop: str, value: Any) -> Any:
        """A key value as an F&O URL or ``$filter`` takes it: date key parts bare (``DateTimeOffsetLiteral``), the
        rest unchanged (quoted as strings)."""
        if prop in self._key_converters and isinstance(value, str):
            return DateTimeOffsetLiteral(value)
        return value

    def dataverse_literal(self, column: str, value: Any) -> Any:
        """A key column's value as a Dataverse key URL or ``$filter`` takes it: a date-only column as a bare date, a
        date-time one as a bare DateTimeOffset; F&O's instant is cut to its date for a date column."""
        if isinstance(value, str) and column in self.dataverse_date_columns:
            return DateLiteral(value[:10])
        if isinstance(value, str) and column in self.dataverse_datetime_columns:
            return DateTimeOffsetLiteral(value)
        return value

    def company_of(self, key: tuple[str, ...]) -> str | None:
        if not self.company_specific:
            return None
        return key[self.key_properties.index("dataAreaId")]

    def to_dataverse(self, fo_row: Mapping[str, Any]) -> DataverseRecord:
        key = self.key_of(fo_row)
        get = fo_row.get
        columns = {column: convert(get(prop)) for prop, column, convert in self._to_dataverse}
        company = self.company_of(key)
        hashed = columns if self._hashed is None else {c: v for c, v in columns.items() if c in self._hashed}
        return DataverseRecord(key=key, company=company, columns=columns, content_hash=content_hash(hashed, company))

    def from_dataverse(self, dv_row: Mapping[str, Any],
                       lookup_code: Callable[[LookupSpec, str], str | None]) -> dict[str, Any]:
        """A Dataverse row as F&O properties, for the rows the map lets flow Dataverse -> F&O.

        ``>``/``>>`` rows (``msdyn_replacementcardnumber``) never appear; value maps run backwards;
        a lookup is read from ``_<nav in lower case: the attribute's logical name>_value`` and turned back into
        its code by ``lookup_code``.
        Columns the row does not carry are left out.
        """
        result: dict[str, Any] = {}
        for prop, column, convert in self._to_commerce:
            if column.startswith("@lookup:"):
                spec = self._lookup_specs[column]
                lookup_column = f"_{spec.navigation_property.lower()}_value"
                if lookup_column in dv_row:
                    guid = dv_row[lookup_column]
                    result[prop] = lookup_code(spec, str(guid)) if guid else None
            elif column in dv_row:  # only the columns the row carries ($select)
                value = dv_row[column]
                result[prop] = None if value is None else convert(value)
        return result

    # -- the shared image: what both sides hold of the fields that flow to Commerce ---------------

    def image_from_commerce(self, fo_row: Mapping[str, Any]) -> dict[str, Any]:
        """The F&O-side values of every field the map lets flow Dataverse -> F&O, normalised."""
        return {prop: normalize(fo_row.get(prop)) for prop, normalize in self._image}

    def image_from_dataverse(self, dv_row: Mapping[str, Any],
                             lookup_code: Callable[[LookupSpec, str], str | None]) -> dict[str, Any]:
        """The same image computed from a Dataverse row (value maps run backwards, lookups by code)."""
        values = self.from_dataverse(dv_row, lookup_code)
        return {prop: normalize(values.get(prop)) for prop, normalize in self._image}

    def key_as_dict(self, key: tuple[str, ...]) -> dict[str, str]:
        """The key by property, ready for an F&O URL (date parts are ``DateTimeOffsetLiteral``: still strings)."""
        return {prop: self.fo_literal(prop, part) for prop, part in zip(self.key_properties, key, strict=True)}
