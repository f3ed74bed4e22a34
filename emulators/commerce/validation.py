"""Validation of POST / PATCH payloads against the entity metadata.

Payload rules: enums as member-name strings (docs/protocol-notes.md §3.1), defaults filled on create and
``dataAreaId`` = the default company when omitted (§3.3), validation failures reported as
Infolog errors in ``innererror`` (§3.4, §5.2). OData-level problems (unknown property, wrong
JSON type, null in a non-nullable property) use the ODataLib message texts (inferred for F&O).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from emulators.common.server import EmulatorHTTPError

from . import errors
from .entities import EntitySet, Property

Row = dict[str, Any]

INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)


def _unknown_property(entity_set: EntitySet, name: str) -> EmulatorHTTPError:
    return errors.bad_request(
        f"The property '{name}' does not exist on type '{entity_set.full_type_name}'. Make sure to "
        "only use property names that are defined by the type or mark the type as open type."
    )


def _type_error(prop: Property, value: Any) -> EmulatorHTTPError:
    return errors.bad_request(
        f"Cannot convert the literal '{value}' to the expected type '{prop.type_name}' "
        f"(property '{prop.name}')."
    )


def _null_error(prop: Property) -> EmulatorHTTPError:
    return errors.bad_request(
        f"A null value was found for the property named '{prop.name}', which has the expected type "
        f"'{prop.edm_type}[Nullable=False]'. The expected type '{prop.edm_type}[Nullable=False]' "
        "does not allow null values."
    )


def format_datetime(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _coerce(entity_set: EntitySet, prop: Property, value: Any, enum_errors: list[str]) -> Any:
    """Check one JSON value against the property's EDM type; returns the stored value."""
    if value is None:
        if not prop.nullable:
            raise _null_error(prop)
        return None  # a string's null is stored as "" (F&O has no null strings; store.py, inferred)
    if prop.enum is not None:
        if not isinstance(value, str):
            raise _type_error(prop, value)
        if value not in prop.enum.member_names:
            # Reported as an Infolog write error (the brief's choice; real text inferred).
            enum_errors.append(
                f"Value '{value}' is not a valid member of enum '{prop.enum.name}' for field "
                f"'{prop.name}'. Valid values: {', '.join(prop.enum.member_names)}."
            )
        return value
    if prop.edm_type == "Edm.String":
        if not isinstance(value, str):
            raise _type_error(prop, value)
        return value
    if prop.edm_type in ("Edm.Int32", "Edm.Int64"):
        low, high = INT32_RANGE if prop.edm_type == "Edm.Int32" else INT64_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(prop, value)
        return value
    if prop.edm_type == "Edm.DateTimeOffset":
        return _coerce_datetime(prop, value)
    if prop.edm_type == "Edm.Decimal":
        # A JSON number (IEEE754Compatible=false, so not a string); kept as sent, int or float.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(prop, value)
        return value
    raise _type_error(prop, value)  # pragma: no cover - no other types are declared


def _coerce_datetime(prop: Property, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(prop, value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _type_error(prop, value) from None
    if parsed.tzinfo is None:
        raise _type_error(prop, value)
    if prop.date_only:
        # F&O date fields keep only the date part (inferred; docs/domain-notes.md §6).
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT00:00:00Z")
    return format_datetime(parsed)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _properties_of(entity_set: EntitySet, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body's structural properties; instance annotations such as ``@odata.type`` are dropped."""
    result: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@"):
            continue
        if entity_set.prop(name) is None:
            raise _unknown_property(entity_set, name)
        result[name] = value
    return result


def validate_create(entity_set: EntitySet, body: Any, *, default_company: str,
                    companies: Collection[str]) -> Row:
    """A complete row for POST: types checked, defaults filled, mandatory fields present."""
    if not isinstance(body, Mapping):
        raise errors.bad_request("The request body must be a JSON object.")
    given = _properties_of(entity_set, body)
    infolog: list[str] = []
    row: Row = {}
    for prop in entity_set.properties:
        if prop.name in given:
            row[prop.name] = _coerce(entity_set, prop, given[prop.name], infolog)
        else:
            row[prop.name] = prop.default
    if entity_set.company_specific:
        company = row.get("dataAreaId") or default_company
        row["dataAreaId"] = str(company).lower()
        if row["dataAreaId"] not in {c.lower() for c in companies}:
            infolog.append(f"Company '{row['dataAreaId']}' does not exist.")  # text inferred
    for prop in entity_set.properties:
        required = prop.mandatory or (prop.name in entity_set.keys and not prop.empty_allowed)
        if required and _is_blank(row.get(prop.name)):
            infolog.append(f"Field '{prop.label or prop.name}' must be filled in.")
    if infolog:
        raise errors.write_failed(entity_set, infolog)
    return row


def validate_update(entity_set: EntitySet, body: Any, current: Mapping[str, Any]) -> Row:
    """The changed properties for PATCH; key fields may be repeated but not changed."""
    if not isinstance(body, Mapping):
        raise errors.bad_request("The request body must be a JSON object.")
    given = _properties_of(entity_set, body)
    infolog: list[str] = []
    changes: Row = {}
    for name, value in given.items():
        prop = entity_set.prop(name)
        assert prop is not None
        coerced = _coerce(entity_set, prop, value, infolog)
        if name in entity_set.keys:
            same = isinstance(coerced, str) and isinstance(current.get(name), str) and \
                coerced.casefold() == str(current.get(name)).casefold()
            if not same:
                infolog.append(f"The key field '{prop.label or name}' cannot be changed.")  # text inferred
            continue
        if prop.mandatory and _is_blank(coerced):
            infolog.append(f"Field '{prop.label or name}' must be filled in.")
        changes[name] = coerced
    if infolog:
        raise errors.write_failed(entity_set, infolog)
    return changes
