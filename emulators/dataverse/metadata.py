"""Table metadata of the Dataverse emulator as the Web API serves it: a table's attributes.

``GET /api/data/v9.2/EntityDefinitions(LogicalName='<table>')/Attributes[?$select=LogicalName,...]``

docs/protocol-notes.md names ``EntityDefinitions`` (§2.11 ``ChangeTrackingEnabled``, §5.1 "minimal EntityDefinitions
responses") but shows no response. The shape here is INFERRED from the metadata Web API as it is commonly
seen: ``{"@odata.context": "...$metadata#EntityDefinitions('<table>')/Attributes(<select>)", "value": [...]}``,
each attribute an object with ``@odata.type`` (``#Microsoft.Dynamics.CRM.<Kind>AttributeMetadata``),
``LogicalName``, ``AttributeType`` and ``MetadataId`` (always returned, like a primary key). An unknown table
is a 404 with ``0x80040217`` (code from §2.2, text inferred). The attributes listed are the emulator's own
columns (``schema.py``): primary id, columns, lookup attributes and the system columns; a real table has
many more (``statecode``, ``ownerid``, ...).
"""

from __future__ import annotations

import uuid
from typing import Any

from emulators.common.server import EmulatorHTTPError

from . import errors
from .schema import SYSTEM_COLUMNS, TABLES, ColumnType, Table

ATTRIBUTES_PATTERN = r"/api/data/v9\.2/EntityDefinitions\(LogicalName='(?P<logical_name>[^']*)'\)/Attributes"
ATTRIBUTE_PROPERTIES = ("LogicalName", "AttributeType", "MetadataId")

_KINDS: dict[ColumnType, tuple[str, str]] = {  # (metadata type, AttributeType)
    ColumnType.STRING: ("StringAttributeMetadata", "String"),
    ColumnType.CHOICE: ("PicklistAttributeMetadata", "Picklist"),
    ColumnType.DATETIME: ("DateTimeAttributeMetadata", "DateTime"),
    ColumnType.INT32: ("IntegerAttributeMetadata", "Integer"),
    ColumnType.INT64: ("BigIntAttributeMetadata", "BigInt"),
    ColumnType.BOOLEAN: ("BooleanAttributeMetadata", "Boolean"),
    ColumnType.GUID: ("UniqueIdentifierAttributeMetadata", "Uniqueidentifier"),
}
_LOOKUP = ("LookupAttributeMetadata", "Lookup")


def table_by_logical_name(logical_name: str) -> Table | None:
    """Logical names are lower case in Dataverse; matched case-insensitively here (inferred)."""
    return next((t for t in TABLES.values() if t.logical_name == logical_name.lower()), None)


def attributes(table: Table) -> list[tuple[str, tuple[str, str]]]:
    """``(logical name, (metadata type, AttributeType))`` of every attribute the emulator knows for ``table``."""
    found: list[tuple[str, tuple[str, str]]] = [(table.primary_id, _KINDS[ColumnType.GUID])]
    found += [(name, _KINDS[column.type]) for name, column in table.columns.items()]
    found += [(lookup.attribute_name, _LOOKUP) for lookup in table.lookups.values()]
    found += [(name, _KINDS[kind]) for name, kind in SYSTEM_COLUMNS.items()]
    return found


def parse_select(items: list[tuple[str, str]]) -> tuple[str, ...]:
    """``$select`` over the attribute properties the emulator serves; other options are refused."""
    select: tuple[str, ...] = ATTRIBUTE_PROPERTIES
    for name, value in items:
        if name != "$select":
            raise errors.bad_request(f"The query parameter '{name}' is not supported by the Dataverse emulator's "
                                     "EntityDefinitions route.")
        select = tuple(part.strip() for part in value.split(",") if part.strip())
        for prop in select:
            if prop not in ATTRIBUTE_PROPERTIES:
                raise errors.bad_request(
                    f"Could not find a property named '{prop}' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.")
    return select


def attributes_body(api_url: str, logical_name: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    table = table_by_logical_name(logical_name)
    if table is None:
        raise not_found(logical_name)
    select = parse_select(items)
    selected = f"({','.join(select)})" if select != ATTRIBUTE_PROPERTIES else ""
    value: list[dict[str, Any]] = []
    for name, (metadata_type, attribute_type) in attributes(table):
        entry: dict[str, Any] = {"@odata.type": f"#Microsoft.Dynamics.CRM.{metadata_type}"}
        if "LogicalName" in select:
            entry["LogicalName"] = name
        if "AttributeType" in select:
            entry["AttributeType"] = attribute_type
        entry["MetadataId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{table.logical_name}.{name}"))
        value.append(entry)
    return {"@odata.context": f"{api_url}$metadata#EntityDefinitions('{table.logical_name}')/Attributes{selected}",
            "value": value}


def not_found(logical_name: str) -> EmulatorHTTPError:
    return errors.dataverse_error(404, errors.OBJECT_DOES_NOT_EXIST,
                                  f"Could not find an entity with name '{logical_name}'.")
