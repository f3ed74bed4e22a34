"""Table metadata of the Dataverse emulator as the Web API serves it: a table's attributes.

``GET /api/data/v9.2/EntityDefinitions(LogicalName='<table>')/Attributes[?$select=LogicalName,...]``

docs/protocol-notes.md names ``EntityDefinitions`` (§2.11 ``ChangeTrackingEnabled``, §2.14, §5.1 "minimal
EntityDefinitions responses") but shows no response. The shape here is INFERRED from the metadata Web API as it is
commonly seen: ``{"@odata.context": "...$metadata#EntityDefinitions('<table>')/Attributes(<select>)", "value": [...]}``,
each attribute an object with ``@odata.type`` (``#Microsoft.Dynamics.CRM.<Kind>AttributeMetadata``),
``LogicalName``, ``SchemaName``, ``AttributeType`` and ``MetadataId`` (always returned, like a primary key). An
unknown table is a 404 with ``0x80040217`` (code from §2.2, text inferred). The attributes listed are the
emulator's own columns (``schema.py``, and those of app-owned tables created through :mod:`.customization`):
primary id, columns, lookup attributes and the system columns; a real table has many more (``statecode``,
``ownerid``, ...). A built-in table's SchemaName is given as its logical name (inferred: the real casing is not
published).
"""

from __future__ import annotations

import uuid
from typing import Any

from emulators.common.server import EmulatorHTTPError

from . import errors
from .customization import Customizations, parse_select
from .schema import SYSTEM_COLUMNS, ColumnType, Table

ATTRIBUTES_PATTERN = r"/api/data/v9\.2/EntityDefinitions\(LogicalName='(?P<logical_name>[^']*)'\)/Attributes"
ATTRIBUTE_PROPERTIES = ("LogicalName", "SchemaName", "AttributeType", "MetadataId")

_KINDS: dict[ColumnType, tuple[str, str]] = {  # (metadata type, AttributeType)
    ColumnType.STRING: ("StringAttributeMetadata", "String"),
    ColumnType.CHOICE: ("PicklistAttributeMetadata", "Picklist"),
    ColumnType.DATETIME: ("DateTimeAttributeMetadata", "DateTime"),
    ColumnType.DATE: ("DateTimeAttributeMetadata", "DateTime"),
    ColumnType.INT32: ("IntegerAttributeMetadata", "Integer"),
    ColumnType.INT64: ("BigIntAttributeMetadata", "BigInt"),
    ColumnType.BOOLEAN: ("BooleanAttributeMetadata", "Boolean"),
    ColumnType.GUID: ("UniqueIdentifierAttributeMetadata", "Uniqueidentifier"),
    ColumnType.DECIMAL: ("DecimalAttributeMetadata", "Decimal"),
    ColumnType.MONEY: ("MoneyAttributeMetadata", "Money"),
}
_LOOKUP = ("LookupAttributeMetadata", "Lookup")


def attributes(table: Table) -> list[tuple[str, tuple[str, str]]]:
    """``(logical name, (metadata type, AttributeType))`` of every attribute the emulator knows for ``table``."""
    found: list[tuple[str, tuple[str, str]]] = [(table.primary_id, _KINDS[ColumnType.GUID])]
    found += [(name, _KINDS[column.type]) for name, column in table.columns.items()]
    found += [(lookup.attribute_name, _LOOKUP) for lookup in table.lookups.values()]
    found += [(name, _KINDS[kind]) for name, kind in SYSTEM_COLUMNS.items()]
    return found


def attributes_body(api_url: str, logical_name: str, items: list[tuple[str, str]],
                    customizations: Customizations) -> dict[str, Any]:
    entity = customizations.entities.get(logical_name.lower())
    table = entity.table() if entity is not None else customizations.builtin(logical_name)
    if table is None:
        raise not_found(logical_name)
    select = parse_select(items, ATTRIBUTE_PROPERTIES, "AttributeMetadata")
    selected = f"({','.join(select)})" if select != ATTRIBUTE_PROPERTIES else ""
    value: list[dict[str, Any]] = []
    for name, (metadata_type, attribute_type) in attributes(table):
        schema_name = customizations.schema_name_of(table.logical_name, name)
        facts = {"LogicalName": name, "SchemaName": schema_name or (entity.schema_name + "Id" if entity and name ==
                                                                    table.primary_id else name),
                 "AttributeType": attribute_type}
        entry: dict[str, Any] = {"@odata.type": f"#Microsoft.Dynamics.CRM.{metadata_type}"}
        entry.update({k: v for k, v in facts.items() if k in select})
        entry["MetadataId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{table.logical_name}.{name}"))
        value.append(entry)
    return {"@odata.context": f"{api_url}$metadata#EntityDefinitions('{table.logical_name}')/Attributes{selected}",
            "value": value}


def not_found(logical_name: str) -> EmulatorHTTPError:
    return errors.dataverse_error(404, errors.OBJECT_DOES_NOT_EXIST,
                                  f"Could not find an entity with name '{logical_name}'.")
