"""Creating tables, columns, lookups and alternate keys through the metadata Web API (docs/protocol-notes.md §2.14).

Routes (``server.py`` wires them):

* ``POST EntityDefinitions`` (``EntityMetadata`` whose ``Attributes`` hold exactly one primary-name
  ``StringAttributeMetadata``) → 204 + ``OData-EntityId: …/EntityDefinitions(<MetadataId>)``;
* ``POST EntityDefinitions(LogicalName='<t>')/Attributes`` (typed attribute metadata) → 204;
* ``POST RelationshipDefinitions`` (``OneToManyRelationshipMetadata`` with its ``Lookup``) → 204;
* ``POST EntityDefinitions(LogicalName='<t>')/Keys`` (``EntityKeyMetadata``) → 204; the key is ``Pending``, then
  ``InProgress``, then ``Active``: one step per read of the table's ``Keys`` (``key_activation_polls`` reads in all;
  0: active at once), or at once through ``POST /_emulator/keys``. A key over rows that already share its values
  ends ``Failed``;
* ``GET EntityDefinitions(LogicalName='<t>')`` and ``…/Keys`` with ``$select``; ``…/Attributes`` lives in
  :mod:`.metadata`.

Every create needs ``MSCRM.SolutionUniqueName`` naming a solution of the ``solutions`` table. The real service
accepts a create without the header (the component then lands in the Default Solution only): the emulator refuses
it, so a client that forgets it fails a test (an emulator rule, not the service's). Once created, a table is a real
table of the store: rows are written, read, upserted by its *active* keys, batched and change-tracked like the
others. A key that is not ``Active`` yet is not in the table's key list, so addressing rows by it answers the
documented "The key in the request URI is not valid" 400 (inferred: §2.14 says only that upserts by the key fail
until it is active).

Inferred throughout (the docs show requests, not the refusals): the status and code of each refusal (400 with
``0x80040203`` InvalidArgument for a malformed definition, 404 ``0x80040217`` for an unknown table), the text of a
duplicate (``already exists``; §2.14: "400 or 409"), the entity set name (the logical name's plural: ``y`` →
``ies``; ``s``, ``x``, ``z``, ``ch``, ``sh`` → ``es``; else ``s``).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulators.common.server import EmulatorHTTPError

from . import errors
from .schema import SYSTEM_COLUMNS, Column, ColumnType, Lookup, Table
from .store import Store

SOLUTION_HEADER = "MSCRM.SolutionUniqueName"
CRM = "Microsoft.Dynamics.CRM."
PENDING, IN_PROGRESS, ACTIVE, FAILED = "Pending", "InProgress", "Active", "Failed"
MAX_KEYS, MAX_KEY_COLUMNS, MAX_KEY_BYTES = 10, 16, 900  # DOC (define-alternate-keys-entity.md)
# Attribute kinds a key may hold (DOC): Decimal, Integer, String, DateTime, Lookup, Picklist; bytes per part (inferred).
_KEY_BYTES: dict[str, int | None] = {"String": None, "Integer": 4, "Decimal": 17, "DateTime": 8, "Lookup": 16,
                                     "Picklist": 4}
ENTITY_PROPERTIES = ("LogicalName", "SchemaName", "EntitySetName", "PrimaryIdAttribute", "PrimaryNameAttribute",
                     "MetadataId", "OwnershipType", "ChangeTrackingEnabled", "IsCustomEntity", "ObjectTypeCode")
KEY_PROPERTIES = ("SchemaName", "LogicalName", "KeyAttributes", "EntityKeyIndexStatus", "MetadataId")
_NUMBER_RANGES: dict[str, tuple[float, float, int]] = {  # metadata kind -> (min, max, max precision), DOC
    "Integer": (-2_147_483_648, 2_147_483_647, 0),
    "BigInt": (-9_223_372_036_854_775_808, 9_223_372_036_854_775_807, 0),
    "Decimal": (-100_000_000_000, 100_000_000_000, 10),
    "Money": (-922_337_203_685_477, 922_337_203_685_477, 4),
}


def entity_set_name(logical_name: str) -> str:
    """The plural the platform derives for a new table's entity set (inferred; clients read it back)."""
    if logical_name.endswith("y") and logical_name[-2:-1] not in tuple("aeiou"):
        return logical_name[:-1] + "ies"
    if logical_name.endswith(("s", "x", "z", "ch", "sh")):
        return logical_name + "es"
    return logical_name + "s"


def invalid(message: str) -> EmulatorHTTPError:
    return errors.dataverse_error(400, errors.INVALID_ARGUMENT, message)


def duplicate(what: str, name: str) -> EmulatorHTTPError:
    return errors.dataverse_error(400, errors.INVALID_ARGUMENT, f"A {what} with the name '{name}' already exists.")


def no_entity(logical_name: str) -> EmulatorHTTPError:
    return errors.dataverse_error(404, errors.OBJECT_DOES_NOT_EXIST,
                                  f"Could not find an entity with name '{logical_name}'.")


@dataclass
class AttributeDef:
    schema_name: str
    metadata_type: str  # StringAttributeMetadata, ...
    attribute_type: str  # String, ...
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    column: Column | None = None
    lookup: Lookup | None = None

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()


@dataclass
class KeyDef:
    schema_name: str
    attributes: tuple[str, ...]  # logical names
    status: str = PENDING
    reads: int = 0
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()


@dataclass
class EntityDef:
    """An app-owned table: its definition, from which the store's :class:`Table` is built."""

    schema_name: str
    entity_set: str
    primary_name: str
    ownership: str
    change_tracking: bool
    solution: str
    attributes: dict[str, AttributeDef] = field(default_factory=dict)
    keys: dict[str, KeyDef] = field(default_factory=dict)
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    @property
    def primary_id(self) -> str:
        return f"{self.logical_name}id"

    def table(self) -> Table:
        columns = {a.logical_name: a.column for a in self.attributes.values() if a.column is not None}
        lookups = {a.lookup.navigation_property: a.lookup for a in self.attributes.values() if a.lookup is not None}
        active = tuple(tuple(self.key_property(a) for a in key.attributes) for key in self.keys.values()
                       if key.status == ACTIVE)
        return Table(entity_set=self.entity_set, logical_name=self.logical_name, primary_id=self.primary_id,
                     columns=columns, lookups=lookups, alternate_keys=active, change_tracking=self.change_tracking,
                     primary_name=self.primary_name)

    def key_property(self, attribute: str) -> str:
        """A key part as a key URL names it: a column by name, a lookup as ``_<attribute>_value`` (§2.5)."""
        found = self.attributes.get(attribute)
        return found.lookup.value_property if found is not None and found.lookup is not None else attribute


def _label(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    labels = value.get("LocalizedLabels") if isinstance(value, dict) else None
    if not isinstance(labels, list) or not labels or not all(
            isinstance(lb, dict) and isinstance(lb.get("Label"), str) and isinstance(lb.get("LanguageCode"), int)
            for lb in labels):
        raise invalid(f"{name} must be a Microsoft.Dynamics.CRM.Label with at least one LocalizedLabel "
                      "(Label, LanguageCode).")
    return str(labels[0]["Label"])


def _type(body: Any, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(body, dict):
        raise invalid(f"The {what} must be a JSON object.")
    value = str(body.get("@odata.type", "")).lstrip("#")
    kind = value[len(CRM):] if value.startswith(CRM) else ""
    if kind not in allowed:
        raise errors.bad_request(f"The {what} needs '@odata.type' set to one of "
                                 f"{', '.join(CRM + a for a in allowed)}; got '{value or '(none)'}'.",
                                 code=errors.PAYLOAD_ERROR)
    return kind


def _schema_name(body: dict[str, Any], what: str) -> str:
    name = body.get("SchemaName")
    if not isinstance(name, str) or "_" not in name.strip("_") or not name.replace("_", "").isalnum():
        raise invalid(f"The {what} needs a SchemaName of letters, digits and '_' that starts with the publisher's "
                      f"customization prefix and '_' (got {name!r}).")
    return name


def _required_level(body: dict[str, Any]) -> bool:
    level = body.get("RequiredLevel")
    if level is None:
        return False
    value = level.get("Value") if isinstance(level, dict) else None
    if value not in ("None", "Recommended", "ApplicationRequired", "SystemRequired"):
        raise invalid("RequiredLevel must be {\"Value\": \"None\" | \"Recommended\" | \"ApplicationRequired\"}.")
    return value in ("ApplicationRequired", "SystemRequired")


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid(f"{name} must be a number.")
    return float(value)


class Customizations:
    """The app-owned tables of one emulator, their keys' index states, and the relationships made."""

    def __init__(self, store: Store, *, key_activation_polls: int = 2) -> None:
        self.store = store
        self.key_activation_polls = max(0, key_activation_polls)
        self.entities: dict[str, EntityDef] = {}  # by logical name
        self.relationships: dict[str, dict[str, Any]] = {}  # by lower-cased schema name
        self.lock = threading.RLock()

    # -- lookups -----------------------------------------------------------------------------------------------------
    def builtin(self, logical_name: str) -> Table | None:
        return next((t for t in self.store.tables.values() if t.logical_name == logical_name.lower()
                     and t.logical_name not in self.entities), None)

    def entity(self, logical_name: str) -> EntityDef:
        found = self.entities.get(logical_name.lower())
        if found is None:
            if self.builtin(logical_name) is not None:
                raise errors.not_implemented(f"Changing the definition of the built-in table '{logical_name}'")
            raise no_entity(logical_name)
        return found

    def exists(self, logical_name: str) -> bool:
        return logical_name.lower() in self.entities or self.builtin(logical_name) is not None

    def solution(self, header: str | None) -> str:
        """The solution a create names; 400 without the header or for a solution that does not exist."""
        name = (header or "").strip()
        if not name:
            raise invalid(f"Send the header {SOLUTION_HEADER} with the unique name of the solution the component "
                          "goes into (emulator rule: the service would add it to the Default Solution only).")
        if self.store.find_by_key("solutions", {"uniquename": name}) is None:
            raise invalid(f"The solution '{name}' named by {SOLUTION_HEADER} does not exist.")  # inferred
        return name

    def _sync(self, entity: EntityDef) -> None:
        self.store.define_table(entity.table())

    # -- creates -----------------------------------------------------------------------------------------------------
    def create_entity(self, body: Any, solution: str) -> EntityDef:
        _type(body, ("EntityMetadata",), "table definition")
        schema = _schema_name(body, "table")
        _label(body, "DisplayName")
        _label(body, "DisplayCollectionName")
        ownership = body.get("OwnershipType")
        if ownership not in ("UserOwned", "OrganizationOwned"):
            raise invalid("OwnershipType must be 'UserOwned' or 'OrganizationOwned'.")
        if body.get("IsActivity", False) is not False:
            raise errors.not_implemented("Activity tables (IsActivity: true)")
        for flag in ("HasActivities", "HasNotes", "ChangeTrackingEnabled"):
            if flag in body and not isinstance(body[flag], bool):
                raise invalid(f"{flag} must be true or false.")
        attributes = body.get("Attributes")
        if not isinstance(attributes, list):
            attributes = []
        primary = [a for a in attributes if isinstance(a, dict) and a.get("IsPrimaryName") is True]
        if not primary:
            # DOC (create-update-entity-definitions-using-web-api.md): "The entity must include the definition for
            # the primary name attribute".
            raise invalid("The entity must include the definition for the primary name attribute: one "
                          "StringAttributeMetadata in Attributes with IsPrimaryName true.")
        if len(primary) > 1:
            raise invalid(f"A table has exactly one primary name attribute; Attributes holds {len(primary)} with "
                          "IsPrimaryName true.")
        if len(attributes) > 1:
            raise invalid("Attributes of a new table holds only its primary name attribute; add the other columns "
                          "with POST EntityDefinitions(LogicalName='<table>')/Attributes.")
        if _type(primary[0], ("StringAttributeMetadata",), "primary name attribute") != "StringAttributeMetadata":
            raise invalid("The primary name attribute must be a StringAttributeMetadata.")
        with self.lock, self.store.lock:
            logical = schema.lower()
            if self.exists(logical):
                raise duplicate("table", schema)
            entity_set = entity_set_name(logical)
            if self.store.table(entity_set) is not None:
                raise duplicate("table", schema)
            name_attr = self._attribute(primary[0], primary=True)
            entity = EntityDef(schema_name=schema, entity_set=entity_set, primary_name=name_attr.logical_name,
                               ownership=str(ownership), change_tracking=bool(body.get("ChangeTrackingEnabled", True)),
                               solution=solution)
            if name_attr.logical_name == entity.primary_id:
                raise duplicate("column", name_attr.schema_name)
            entity.attributes[name_attr.logical_name] = name_attr
            self.entities[logical] = entity
            self._sync(entity)
            return entity

    def create_attribute(self, logical_name: str, body: Any) -> tuple[EntityDef, AttributeDef]:
        kinds = ("StringAttributeMetadata", "IntegerAttributeMetadata", "BigIntAttributeMetadata",
                 "DecimalAttributeMetadata", "MoneyAttributeMetadata", "DateTimeAttributeMetadata",
                 "BooleanAttributeMetadata", "PicklistAttributeMetadata", "LookupAttributeMetadata")
        kind = _type(body, kinds, "column definition")
        if kind == "LookupAttributeMetadata":
            raise invalid("A lookup column is created with its relationship: POST RelationshipDefinitions with a "
                          "OneToManyRelationshipMetadata and its Lookup.")
        if body.get("IsPrimaryName") is True:
            raise invalid("A table has one primary name attribute, defined when the table is created.")
        with self.lock, self.store.lock:
            entity = self.entity(logical_name)
            attribute = self._attribute(body, primary=False)
            self._add(entity, attribute)
            return entity, attribute

    def _add(self, entity: EntityDef, attribute: AttributeDef) -> None:
        if attribute.logical_name in entity.attributes or attribute.logical_name in (entity.primary_id,
                                                                                     *SYSTEM_COLUMNS):
            raise duplicate("column", attribute.schema_name)
        entity.attributes[attribute.logical_name] = attribute
        self._sync(entity)

    def _attribute(self, body: dict[str, Any], *, primary: bool) -> AttributeDef:
        kind = str(body.get("@odata.type", "")).lstrip("#")[len(CRM):]  # checked by the caller
        schema = _schema_name(body, "column")
        _label(body, "DisplayName")
        required = _required_level(body)
        name = schema.lower()
        base = kind.removesuffix("AttributeMetadata")
        if base == "String":
            length = body.get("MaxLength")
            if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 4000:
                raise invalid(f"{schema}: a StringAttributeMetadata needs MaxLength between 1 and 4000.")
            fmt = body.get("FormatName")
            if fmt is not None and not (isinstance(fmt, dict) and isinstance(fmt.get("Value"), str)):
                raise invalid(f"{schema}: FormatName must be {{\"Value\": \"Text\"}}.")
            return AttributeDef(schema, kind, "String", column=Column(name, ColumnType.STRING, max_length=length,
                                                                      required=required))
        if base in _NUMBER_RANGES:
            low, high, max_precision = _NUMBER_RANGES[base]
            minimum, maximum = _number(body, "MinValue", low), _number(body, "MaxValue", high)
            if not low <= minimum <= maximum <= high:
                raise invalid(f"{schema}: MinValue and MaxValue must lie within {low:g}..{high:g}, MinValue first.")
            precision = body.get("Precision", 0 if max_precision == 0 else 2)
            if not isinstance(precision, int) or isinstance(precision, bool) or not 0 <= precision <= max_precision:
                raise invalid(f"{schema}: Precision must be between 0 and {max_precision}.")
            column_type = {"Integer": ColumnType.INT32, "BigInt": ColumnType.INT64, "Decimal": ColumnType.DECIMAL,
                           "Money": ColumnType.MONEY}[base]
            return AttributeDef(schema, kind, base, column=Column(
                name, column_type, required=required, minimum=minimum, maximum=maximum,
                precision=precision if column_type in (ColumnType.DECIMAL, ColumnType.MONEY) else None))
        if base == "DateTime":
            fmt = body.get("Format", "DateAndTime")
            if fmt not in ("DateOnly", "DateAndTime"):
                raise invalid(f"{schema}: Format must be 'DateOnly' or 'DateAndTime'.")
            column_type = ColumnType.DATE if fmt == "DateOnly" else ColumnType.DATETIME
            return AttributeDef(schema, kind, "DateTime", column=Column(name, column_type, required=required))
        if base == "Boolean":
            options = body.get("OptionSet")
            if not isinstance(options, dict) or not all(
                    isinstance(options.get(o), dict) and options[o].get("Value") == v
                    for o, v in (("TrueOption", 1), ("FalseOption", 0))):
                raise invalid(f"{schema}: a BooleanAttributeMetadata needs an OptionSet with TrueOption (Value 1) and "
                              "FalseOption (Value 0).")
            return AttributeDef(schema, kind, "Boolean", column=Column(name, ColumnType.BOOLEAN, required=required))
        if base == "Picklist":
            if "GlobalOptionSet@odata.bind" in body:
                raise errors.not_implemented("A choice column bound to a global choice")
            options = body.get("OptionSet")
            values = [o.get("Value") for o in options.get("Options", [])] if isinstance(options, dict) else []
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or \
                    len(set(values)) != len(values):
                raise invalid(f"{schema}: a PicklistAttributeMetadata needs an OptionSet whose Options have distinct "
                              "integer Values.")
            return AttributeDef(schema, kind, "Picklist", column=Column(name, ColumnType.CHOICE, required=required,
                                                                        choices=tuple(values)))
        raise invalid(f"{schema}: {kind} cannot be created here.")  # pragma: no cover - _type admits no other kind

    def create_relationship(self, body: Any) -> tuple[EntityDef, AttributeDef]:
        _type(body, ("OneToManyRelationshipMetadata",), "relationship definition")
        schema = _schema_name(body, "relationship")
        referenced, attribute, referencing = (body.get(n) for n in ("ReferencedEntity", "ReferencedAttribute",
                                                                    "ReferencingEntity"))
        if not all(isinstance(v, str) and v for v in (referenced, attribute, referencing)):
            raise invalid("A OneToManyRelationshipMetadata needs ReferencedEntity, ReferencedAttribute and "
                          "ReferencingEntity.")
        lookup_body = body.get("Lookup")
        if _type(lookup_body, ("LookupAttributeMetadata",), "Lookup of the relationship") != "LookupAttributeMetadata":
            raise invalid("Lookup must be a LookupAttributeMetadata.")  # pragma: no cover
        nav = _schema_name(lookup_body, "lookup column")
        _label(lookup_body, "DisplayName")
        _required_level(lookup_body)  # a required lookup is not enforced on write here (inferred rule, not modelled)
        with self.lock, self.store.lock:
            target = self.builtin(str(referenced)) or (self.entities[str(referenced).lower()].table()
                                                       if str(referenced).lower() in self.entities else None)
            if target is None:
                raise no_entity(str(referenced))
            if str(attribute).lower() != target.primary_id:
                raise invalid(f"ReferencedAttribute '{attribute}' must be the primary id of '{target.logical_name}' "
                              f"({target.primary_id}).")
            if schema.lower() in self.relationships:
                raise duplicate("relationship", schema)
            entity = self.entity(str(referencing))
            lookup = Lookup(nav, target.entity_set, nav.lower())
            attr = AttributeDef(nav, "LookupAttributeMetadata", "Lookup", lookup=lookup)
            self._add(entity, attr)
            self.relationships[schema.lower()] = {
                "SchemaName": schema, "ReferencedEntity": target.logical_name, "ReferencedAttribute": target.primary_id,
                "ReferencingEntity": entity.logical_name, "ReferencingAttribute": attr.logical_name,
                "MetadataId": str(uuid.uuid4())}
            return entity, attr

    def create_key(self, logical_name: str, body: Any) -> tuple[EntityDef, KeyDef]:
        _type(body, ("EntityKeyMetadata",), "key definition")
        schema = _schema_name(body, "key")
        _label(body, "DisplayName")
        parts = body.get("KeyAttributes")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
            raise invalid("KeyAttributes must list the logical names of the key's columns.")
        with self.lock, self.store.lock:
            entity = self.entity(logical_name)
            if schema.lower() in entity.keys:
                raise duplicate("key", schema)
            if len(entity.keys) >= MAX_KEYS:
                raise invalid(f"A table has at most {MAX_KEYS} alternate keys.")
            if len(parts) > MAX_KEY_COLUMNS:
                raise invalid(f"A key has at most {MAX_KEY_COLUMNS} columns.")
            size = 0
            for part in parts:
                attr = entity.attributes.get(part)
                if attr is None or part != part.lower():
                    raise invalid(f"The key attribute '{part}' is not an attribute of '{entity.logical_name}' (name "
                                  "columns by logical name).")
                per = _KEY_BYTES.get(attr.attribute_type, 0)
                if attr.attribute_type not in _KEY_BYTES:
                    raise invalid(f"The key attribute '{part}' is a {attr.attribute_type}; a key holds Decimal, Integer, "
                                  "String, DateTime, Lookup or Picklist columns.")
                size += per if per is not None else 2 * (attr.column.max_length or 0 if attr.column else 0)
            if size > MAX_KEY_BYTES:
                raise invalid(f"The key's columns take {size} bytes; a key may take {MAX_KEY_BYTES}.")
            if len(set(parts)) != len(parts):
                raise invalid("A key attribute appears twice.")
            key = KeyDef(schema, tuple(parts), status=PENDING if self.key_activation_polls else ACTIVE)
            entity.keys[key.logical_name] = key
            if key.status == ACTIVE:
                self._activate(entity, key)
            return entity, key

    # -- key index states ----------------------------------------------------------------------------------------------
    def _activate(self, entity: EntityDef, key: KeyDef) -> None:
        names = tuple(entity.key_property(a) for a in key.attributes)
        key.status = FAILED if self.store.has_duplicates(entity.entity_set, names) else ACTIVE
        self._sync(entity)

    def read_keys(self, entity: EntityDef) -> list[KeyDef]:
        """A read of the table's keys: each key still building moves one step (Pending → InProgress → Active)."""
        with self.lock, self.store.lock:
            for key in entity.keys.values():
                if key.status not in (PENDING, IN_PROGRESS):
                    continue
                key.reads += 1
                if key.reads >= self.key_activation_polls:
                    self._activate(entity, key)
                elif key.reads * 2 >= self.key_activation_polls:
                    key.status = IN_PROGRESS
            return list(entity.keys.values())

    def set_key_status(self, logical_name: str, key_name: str | None, status: str) -> list[str]:
        """Admin: set one key's (or every key's of the table) index state now; Active runs the index build."""
        if status not in (PENDING, IN_PROGRESS, ACTIVE, FAILED):
            raise errors.bad_request(f"status must be {PENDING}, {IN_PROGRESS}, {ACTIVE} or {FAILED}")
        with self.lock, self.store.lock:
            entity = self.entity(logical_name)
            keys = [k for k in entity.keys.values() if key_name is None or k.logical_name == key_name.lower()]
            if not keys:
                raise errors.bad_request(f"'{logical_name}' has no key '{key_name}'")
            for key in keys:
                if status == ACTIVE:
                    self._activate(entity, key)
                else:
                    key.status, key.reads = status, 0
                    self._sync(entity)
            return [k.schema_name for k in keys]

    def reset(self) -> None:
        """Forget every app-owned table (admin)."""
        with self.lock, self.store.lock:
            for entity in self.entities.values():
                self.store.drop_table(entity.entity_set)
            self.entities.clear()
            self.relationships.clear()

    # -- reads ---------------------------------------------------------------------------------------------------------
    def entity_body(self, logical_name: str, select: tuple[str, ...]) -> dict[str, Any]:
        entity = self.entities.get(logical_name.lower())
        table = entity.table() if entity is not None else self.builtin(logical_name)
        if table is None:
            raise no_entity(logical_name)
        values: dict[str, Any] = {
            "LogicalName": table.logical_name, "SchemaName": entity.schema_name if entity else table.logical_name,
            "EntitySetName": table.entity_set, "PrimaryIdAttribute": table.primary_id,
            "PrimaryNameAttribute": table.primary_name, "OwnershipType": entity.ownership if entity else
            "OrganizationOwned", "ChangeTrackingEnabled": table.change_tracking, "IsCustomEntity": entity is not None,
            "ObjectTypeCode": None,
            "MetadataId": entity.metadata_id if entity else str(uuid.uuid5(uuid.NAMESPACE_URL, table.logical_name))}
        body = {name: values[name] for name in select}
        body["MetadataId"] = values["MetadataId"]
        return body

    def keys_body(self, logical_name: str, select: tuple[str, ...]) -> list[dict[str, Any]]:
        entity = self.entities.get(logical_name.lower())
        if entity is None:
            table = self.builtin(logical_name)
            if table is None:
                raise no_entity(logical_name)
            keys = [KeyDef(f"{table.logical_name}_key{i}", tuple(p.removeprefix("_").removesuffix("_value")
                                                                   for p in parts), status=ACTIVE,
                           metadata_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{table.logical_name}.key{i}")))
                    for i, parts in enumerate(table.alternate_keys)]
        else:
            keys = self.read_keys(entity)
        result = []
        for key in keys:
            values: dict[str, Any] = {"SchemaName": key.schema_name, "LogicalName": key.logical_name,
                                      "KeyAttributes": list(key.attributes), "EntityKeyIndexStatus": key.status,
                                      "MetadataId": key.metadata_id}
            entry = {"@odata.type": f"#{CRM}EntityKeyMetadata", **{n: values[n] for n in select}}
            entry["MetadataId"] = key.metadata_id
            result.append(entry)
        return result

    def schema_name_of(self, logical_name: str, attribute: str) -> str | None:
        entity = self.entities.get(logical_name.lower())
        if entity is None:
            return None
        found = entity.attributes.get(attribute)
        return found.schema_name if found is not None else None


def parse_select(items: list[tuple[str, str]], allowed: tuple[str, ...], type_name: str) -> tuple[str, ...]:
    """``$select`` over the metadata properties served (all when absent); other query options are refused."""
    select = allowed
    for name, value in items:
        if name != "$select":
            raise errors.bad_request(f"The query parameter '{name}' is not supported by the Dataverse emulator's "
                                     "metadata routes.")
        select = tuple(part.strip() for part in value.split(",") if part.strip())
        for prop in select:
            if prop not in allowed:
                raise errors.bad_request(f"Could not find a property named '{prop}' on type '{CRM}{type_name}'.")
    return select
