"""Validation of POST/PATCH bodies (docs/protocol-notes.md §2.3, §2.4, §2.6, §2.2, §5.1).

A body becomes a dict of validated changes keyed by stored property name: columns by name,
lookups bound with ``<navprop>@odata.bind`` as ``_<attr>_value`` GUIDs (``null`` clears the
lookup, inferred). Deserialisation errors (unknown property, wrong JSON type, undeclared
annotated property) and platform validation errors (max length, choice range) are raised as
the Dataverse error responses of :mod:`.errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import errors
from .references import resolve_bind
from .schema import EDM_TYPE_NAMES, SYSTEM_COLUMNS, Column, ColumnType, Table
from .store import Store

INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_IGNORED_INSTANCE_ANNOTATIONS = {"@odata.context", "@odata.etag", "@odata.id", "@odata.editLink"}


@dataclass
class Payload:
    """Validated changes from one request body."""

    values: dict[str, Any] = field(default_factory=dict)
    #: The primary id when the body sets it (allowed on create).
    row_id: str | None = None


def parse_payload(store: Store, table: Table, body: Any) -> Payload:
    """Validate a JSON body against ``table``; resolve ``@odata.bind`` references."""
    if not isinstance(body, dict):
        raise errors.bad_request("The request payload must be a JSON object describing an entity.", code=errors.PAYLOAD_ERROR)
    payload = Payload()
    for name, value in body.items():
        if name.startswith("@"):
            _check_instance_annotation(table, name, value)
            continue
        if "@" in name:
            prop, annotation = name.split("@", 1)
            if annotation == "odata.bind":
                _apply_bind(store, table, prop, value, payload)
            elif prop not in body and prop not in table.lookups and table.property_type(prop) is None:
                raise errors.undeclared_annotated_property(prop)
            continue  # other property annotations (formatted values, ...) are ignored
        if name in table.columns:
            payload.values[name] = validate_value(table, table.columns[name], value)
        elif name == table.primary_id:
            if not isinstance(value, str) or not _GUID_RE.fullmatch(value):
                raise errors.conversion_error(value, "Edm.Guid")
            payload.row_id = value.lower()
        elif name in SYSTEM_COLUMNS:
            continue  # server-managed; ignored on write (inferred)
        elif name in table.lookups:
            raise errors.not_implemented(f"Deep insert through '{name}'")
        else:
            raise errors.invalid_property(table, name)
    return payload


def _check_instance_annotation(table: Table, name: str, value: Any) -> None:
    if name == "@odata.type":
        expected = {table.qualified_name, f"#{table.qualified_name}"}
        if value not in expected:
            raise errors.bad_request(
                f"A type named '{value}' could not be resolved by the model. When a model is "
                f"available, each type name must resolve to a valid type.",
                code=errors.PAYLOAD_ERROR,
            )
    elif name not in _IGNORED_INSTANCE_ANNOTATIONS:
        raise errors.bad_request(f"The annotation '{name}' is not supported in a request payload.", code=errors.PAYLOAD_ERROR)


def _apply_bind(store: Store, table: Table, prop: str, value: Any, payload: Payload) -> None:
    """``<navprop>@odata.bind``: navigation property names are case-sensitive (§2.6)."""
    lookup = table.lookups.get(prop)
    if lookup is None:
        if prop in table.columns:
            raise errors.bad_request(
                f"The property '{prop}' is not a navigation property; only navigation "
                f"properties can be bound with '@odata.bind'.",
                code=errors.PAYLOAD_ERROR,
            )
        raise errors.undeclared_annotated_property(prop)
    if value is None:
        payload.values[lookup.value_property] = None
        return
    if not isinstance(value, str):
        raise errors.bad_request(
            f"The value of '{prop}@odata.bind' must be an entity reference URL string.",
            code=errors.PAYLOAD_ERROR,
        )
    payload.values[lookup.value_property] = resolve_bind(store, lookup, value)


def validate_value(table: Table, column: Column, value: Any) -> Any:
    """Check one column value; returns the value to store (datetimes normalised to
    ``YYYY-MM-DDTHH:MM:SSZ``; empty strings stored as null, inferred)."""
    if value is None:
        return None
    edm = EDM_TYPE_NAMES[column.type]
    kind = column.type
    if kind is ColumnType.STRING:
        if not isinstance(value, str):
            raise errors.conversion_error(value, edm)
        if column.max_length is not None and len(value) > column.max_length:
            raise errors.max_length_exceeded(table, column.name, column.max_length)
        return value if value != "" else None
    if kind in (ColumnType.CHOICE, ColumnType.INT32, ColumnType.INT64):
        if isinstance(value, str) and kind is ColumnType.INT64 and re.fullmatch(r"-?\d+", value):
            value = int(value)  # Edm.Int64 may travel as a string (IEEE754Compatible)
        if not isinstance(value, int) or isinstance(value, bool):
            raise errors.conversion_error(value, edm)
        low, high = INT64_RANGE if kind is ColumnType.INT64 else INT32_RANGE
        if not low <= value <= high:
            raise errors.conversion_error(value, edm)
        if kind is ColumnType.CHOICE and column.choices is not None and value not in column.choices:
            raise errors.choice_out_of_range(table, column.name, value, column.choices)
        _check_range(table, column, value)
        return value
    if kind in (ColumnType.DECIMAL, ColumnType.MONEY):
        if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value):
            value = float(value)  # Edm.Decimal may travel as a string (IEEE754Compatible)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise errors.conversion_error(value, edm)
        _check_range(table, column, value)
        # Stored rounded to the column's precision (inferred: the platform keeps that many digits).
        return round(float(value), column.precision if column.precision is not None else 2)
    if kind is ColumnType.DATE:
        if not isinstance(value, str):
            raise errors.conversion_error(value, edm)
        return normalise_date(value, edm)
    if kind is ColumnType.BOOLEAN:
        if not isinstance(value, bool):
            raise errors.conversion_error(value, edm)
        return value
    if kind is ColumnType.DATETIME:
        if not isinstance(value, str):
            raise errors.conversion_error(value, edm)
        return normalise_datetime(value, edm)
    raise errors.conversion_error(value, edm)  # pragma: no cover - GUID columns are not writable


def _check_range(table: Table, column: Column, value: float) -> None:
    """A number outside the column's MinValue..MaxValue (code 0x80044331 per §2.2; text inferred)."""
    low = column.minimum if column.minimum is not None else float("-inf")
    high = column.maximum if column.maximum is not None else float("inf")
    if not low <= value <= high:
        raise errors.value_out_of_range(table, column.name, value, column.minimum, column.maximum)


def normalise_date(text: str, edm: str = "Edm.Date") -> str:
    """A date-only column (``Format: DateOnly``) keeps the date: ``YYYY-MM-DD``; a date-time value gives its date
    as written, no time-zone shift (inferred: date-only values have no time zone)."""
    candidate = text.strip()[:10]
    try:
        return datetime.strptime(candidate, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError as exc:
        raise errors.conversion_error(text, edm) from exc


def normalise_datetime(text: str, edm: str = "Edm.DateTimeOffset") -> str:
    """ISO 8601 → UTC ``YYYY-MM-DDTHH:MM:SSZ`` (a date alone means midnight UTC, inferred)."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise errors.conversion_error(text, edm) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_required(table: Table, values: dict[str, Any], *, creating: bool) -> None:
    """Required columns must be set on create and may not be nulled on update (§2.4)."""
    for column in table.columns.values():
        if not column.required:
            continue
        if (creating and values.get(column.name) is None) or (
            not creating and column.name in values and values[column.name] is None
        ):
            raise errors.required_missing(table, column.name)
