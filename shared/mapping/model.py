"""Pydantic models of a template file in ``mappings/``.

A template file carries every row of one dual-write map (Microsoft's dual-write mapping tables,
``dual-write/includes/mapping-tables.md`` in MicrosoftDocs/dynamics-365-unified-operations-public, is
where the loyalty ones come from): the F&O field and its OData property, the Dataverse column, the
map type, value maps, lookups, keys and company scope. The models check the file's inner consistency
at start-up so a broken file fails before any record moves.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.balances.registry import FOLDS

Basis = Literal["documented", "inferred"]
_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
# Table Storage partition keys and Functions names must stay simple: the template name is both.


class Direction(StrEnum):
    """Which way a record moves."""

    TO_DATAVERSE = "fo_to_dataverse"
    TO_COMMERCE = "dataverse_to_fo"


class MapType(StrEnum):
    """Dual-write map-type symbols (docs/domain-notes.md §1; left = F&O, right = Dataverse)."""

    BOTH = "="
    BOTH_TRANSFORMED = "><"
    TO_DATAVERSE = ">"
    TO_COMMERCE = "<"
    TO_DATAVERSE_TRANSFORMED = ">>"
    TO_COMMERCE_TRANSFORMED = "<<"

    @property
    def transformed(self) -> bool:
        return self in (MapType.BOTH_TRANSFORMED, MapType.TO_DATAVERSE_TRANSFORMED, MapType.TO_COMMERCE_TRANSFORMED)

    def allows(self, direction: Direction) -> bool:
        if self in (MapType.BOTH, MapType.BOTH_TRANSFORMED):
            return True
        if direction is Direction.TO_DATAVERSE:
            return self in (MapType.TO_DATAVERSE, MapType.TO_DATAVERSE_TRANSFORMED)
        return self in (MapType.TO_COMMERCE, MapType.TO_COMMERCE_TRANSFORMED)


FoType = Literal["string", "int32", "int64", "decimal", "datetimeoffset", "enum", "derived"]
# ``date``: a date-only column (``DateOnly``) fed by an F&O date exposed as DateTimeOffset (docs/domain-notes.md §6).
DataverseType = Literal["string", "integer", "bigint", "decimal", "datetime", "date", "choice", "boolean", "lookup"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueMapEntry(_Strict):
    """One pair of a value map: the F&O value as the map writes it (lowerCamel) and the Dataverse value."""

    fo: str = Field(min_length=1)
    dataverse: int | bool
    fo_member: str | None = Field(default=None, description="OData member name, when not just fo with a capital")

    @property
    def member(self) -> str:
        """The enum member name F&O OData sends and expects (``AsCardTender``)."""
        return self.fo_member or self.fo[:1].upper() + self.fo[1:]


class ValueMap(_Strict):
    fo_enum: str = Field(min_length=1)
    entries: list[ValueMapEntry] = Field(min_length=1)
    basis: Basis = "documented"

    @model_validator(mode="after")
    def _unique_both_ways(self) -> ValueMap:
        fo = [e.fo.lower() for e in self.entries]
        dv = [e.dataverse for e in self.entries]
        if len(set(fo)) != len(fo):
            raise ValueError(f"value map {self.fo_enum}: an F&O value appears twice (compared case-insensitively)")
        if len(set(dv)) != len(dv):
            raise ValueError(f"value map {self.fo_enum}: a Dataverse value appears twice")
        return self


class LookupSpec(_Strict):
    """A Dataverse lookup set and read through a key column of the referenced table (dot notation)."""

    navigation_property: str = Field(min_length=1, description="single-valued navigation property, case-sensitive")
    entity_set: str = Field(min_length=1)
    primary_id: str = Field(min_length=1)
    match_column: str = Field(min_length=1)
    basis: Basis = "inferred"
    bind: Literal["guid", "key"] = Field(
        default="guid", description="bind by the row's GUID (resolved and cached), or by the referenced table's "
        "alternate key (match_column must be one: '/set(match_column=\'code\')', docs/protocol-notes.md §2.6), which "
        "costs no read")


class FieldRow(_Strict):
    """One row of a dual-write map."""

    fo_field: str = Field(min_length=1, description="F&O field as the map table writes it (upper case)")
    fo_property: str = Field(min_length=1, description="OData property of the F&O entity (PascalCase)")
    dataverse_column: str = Field(min_length=1, description="Dataverse column, or lookup.keyColumn")
    map_type: MapType
    fo_type: FoType
    dataverse_type: DataverseType
    nullable: bool = True
    value_map: str | None = None
    default: str | int | bool | None = None
    lookup: LookupSpec | None = None
    derive: str | None = Field(default=None, description="a derived column: the name of an entry of the template's "
                               "'derived' block, computed by the engine (no F&O field)")
    basis: Basis = "documented"
    note: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _derived_names(cls, data: object) -> object:
        """A derived row names no F&O field: its pseudo-property is ``@<derive>``, filled in here."""
        if isinstance(data, dict) and data.get("derive"):
            name = f"@{data['derive']}"
            data = {"fo_field": name, "fo_property": name, "fo_type": "derived", **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> FieldRow:
        if self.derive is not None and (self.fo_property != f"@{self.derive}" or self.map_type is not MapType.TO_DATAVERSE
                                        or self.fo_type != "derived" or self.lookup is not None):
            raise ValueError("a derived row ('derive') takes no F&O field, fo_type 'derived', map type '>' and no lookup")
        if self.derive is None and self.fo_type == "derived":
            raise ValueError("fo_type 'derived' needs 'derive' (the name of an entry of the template's 'derived' block)")
        if self.fo_field.upper() != self.fo_property.upper():
            raise ValueError(f"fo_field {self.fo_field!r} and fo_property {self.fo_property!r} must match case-insensitively")
        if self.map_type.transformed and self.value_map is None and self.default is None:
            raise ValueError(f"map type {self.map_type.value!r} needs a value_map or a default")
        if not self.map_type.transformed and self.value_map is not None:
            raise ValueError(f"map type {self.map_type.value!r} takes no value_map (use '><', '>>' or '<<')")
        if self.fo_type == "enum" and self.value_map is None:
            raise ValueError("an F&O enum needs a value_map: enums are never copied as raw names")
        dotted = "." in self.dataverse_column
        if dotted != (self.lookup is not None) or (self.lookup is None) != (self.dataverse_type != "lookup"):
            raise ValueError("a lookup row needs dot notation (column.keyColumn), dataverse_type 'lookup' and a lookup block")
        if self.lookup is not None:
            nav, _, match = self.dataverse_column.partition(".")
            if nav != self.lookup.navigation_property or match != self.lookup.match_column:
                raise ValueError(
                    f"dataverse_column {self.dataverse_column!r} does not agree with lookup "
                    f"{self.lookup.navigation_property}.{self.lookup.match_column}"
                )
        return self


_LOGICAL_NAME = r"^[a-z][a-z0-9_]{0,127}$"
# -- app-owned tables: the ``dataverse.table`` block (docs/protocol-notes.md §2.14) ---------------------------------
#
# A template whose Dataverse table no Microsoft solution provides declares it here, as data; ``python -m shared.cli
# provision`` creates what is missing (shared/provision.py). Names follow Dataverse's rules: a schema name starts
# with the publisher's customization prefix and ``_``; the logical name is the schema name in lower case (§2.14).

_SCHEMA_NAME = r"^[A-Za-z][A-Za-z0-9]{1,7}_[A-Za-z0-9_]{1,120}$"  # <prefix>_<Name>; prefixes are 2-8 characters
TableColumnType = Literal["string", "integer", "bigint", "decimal", "money", "datetime", "date", "boolean", "choice"]
# Which table column types a template field of each ``dataverse_type`` may write (a date-only column takes a date).
FIELD_COLUMN_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"string"}), "integer": frozenset({"integer"}), "bigint": frozenset({"bigint"}),
    "decimal": frozenset({"decimal", "money"}), "datetime": frozenset({"datetime", "date"}),
    "date": frozenset({"date"}), "choice": frozenset({"choice"}), "boolean": frozenset({"boolean"}),
}
# Column types an alternate key may hold (DOC, define-alternate-keys-entity.md): Decimal, Integer, String, DateTime,
# Lookup, Picklist. Bytes per key part, to check the 900-byte limit: strings as nvarchar (2 bytes a character), the
# rest their SQL sizes (inferred).
KEY_COLUMN_BYTES: dict[str, int | None] = {"string": None, "integer": 4, "decimal": 17, "datetime": 8, "date": 8,
                                           "choice": 4, "lookup": 16}
MAX_KEYS, MAX_KEY_COLUMNS, MAX_KEY_BYTES = 10, 16, 900
# Value ranges Dataverse accepts per column type (DOC, create-update-column-definitions-using-web-api.md).
_RANGES: dict[str, tuple[float, float, int]] = {  # type -> (min, max, max precision)
    "integer": (-2_147_483_648, 2_147_483_647, 0),
    "bigint": (-9_223_372_036_854_775_808, 9_223_372_036_854_775_807, 0),
    "decimal": (-100_000_000_000, 100_000_000_000, 10),
    "money": (-922_337_203_685_477, 922_337_203_685_477, 4),
}


def _prefix(schema_name: str) -> str:
    return schema_name.split("_", 1)[0]


class _Named(_Strict):
    schema_name: str = Field(pattern=_SCHEMA_NAME, description="<publisher prefix>_<Name>; case as Dataverse shows it")
    display_name: str = Field(min_length=1, max_length=100)
    description: str = ""

    @property
    def logical_name(self) -> str:
        """The logical name: the schema name in lower case (§2.14)."""
        return self.schema_name.lower()


class PrimaryNameColumn(_Named):
    """The table's primary-name column (a string; exactly one per table, §2.14)."""

    max_length: int = Field(default=100, ge=1, le=4000)
    required: bool = False


class ChoiceOption(_Strict):
    value: int
    label: str = Field(min_length=1)


class TableColumn(_Named):
    """One column of an app-owned table. ``max_length``: strings; ``precision``, ``min``, ``max``: numbers;
    ``options``: a choice's values and labels; ``true_label``/``false_label``: a boolean's."""

    type: TableColumnType
    required: bool = False
    max_length: int | None = Field(default=None, ge=1, le=4000)
    precision: int | None = Field(default=None, ge=0)
    min: float | None = None
    max: float | None = None
    options: list[ChoiceOption] = Field(default_factory=list)
    true_label: str = "Yes"
    false_label: str = "No"

    @model_validator(mode="after")
    def _by_type(self) -> TableColumn:
        where = f"column {self.schema_name}"
        if self.type == "string" and self.max_length is None:
            raise ValueError(f"{where}: a string column needs max_length")
        if self.type != "string" and self.max_length is not None:
            raise ValueError(f"{where}: max_length applies to string columns only")
        if self.type == "choice":
            values = [o.value for o in self.options]
            if not values:
                raise ValueError(f"{where}: a choice column needs options")
            if len(set(values)) != len(values):
                raise ValueError(f"{where}: an option value appears twice")
        elif self.options:
            raise ValueError(f"{where}: options apply to choice columns only")
        numeric = _RANGES.get(self.type)
        if numeric is None:
            if self.precision is not None or self.min is not None or self.max is not None:
                raise ValueError(f"{where}: precision, min and max apply to integer, bigint, decimal and money")
            return self
        low, high, max_precision = numeric
        if self.precision is not None and self.precision > max_precision:
            raise ValueError(f"{where}: precision {self.precision} is above {max_precision}, the most a {self.type} "
                             "column takes")
        if (self.min is not None and self.min < low) or (self.max is not None and self.max > high):
            raise ValueError(f"{where}: min and max must lie within {low:g}..{high:g} for a {self.type} column")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{where}: min is above max")
        return self

    @property
    def minimum(self) -> float:
        return self.min if self.min is not None else _RANGES[self.type][0]

    @property
    def maximum(self) -> float:
        return self.max if self.max is not None else _RANGES[self.type][1]

    @property
    def scale(self) -> int:
        """Digits after the decimal point: ``precision``, else 2 (Dataverse's default for decimal and money)."""
        return self.precision if self.precision is not None else (0 if self.type in ("integer", "bigint") else 2)


class TableLookup(_Named):
    """A lookup column created with its one-to-many relationship (``RelationshipDefinitions``, §2.14). Its schema
    name is the navigation property ``@odata.bind`` names, case-sensitive (§2.6)."""

    relationship_schema_name: str = Field(pattern=_SCHEMA_NAME)
    referenced_entity: str = Field(pattern=_LOGICAL_NAME, description="logical name of the table looked up")
    referenced_attribute: str = Field(pattern=_LOGICAL_NAME, description="its primary id")
    required: bool = False
    on_delete: Literal["RemoveLink", "Cascade", "Restrict"] = Field(
        default="RemoveLink", description="what deleting the referenced row does to these rows (CascadeConfiguration)")


class TableKey(_Named):
    """An alternate key: the logical names of its columns (a lookup by its logical name)."""

    columns: list[str] = Field(min_length=1, max_length=MAX_KEY_COLUMNS)


class TableSpec(_Named):
    """An app-owned Dataverse table, created by ``python -m shared.cli provision`` (docs/protocol-notes.md §2.14)."""

    display_collection_name: str = Field(min_length=1, max_length=100)
    ownership: Literal["OrganizationOwned", "UserOwned"] = "OrganizationOwned"
    has_notes: bool = False
    has_activities: bool = False
    change_tracking: bool = True
    primary_name: PrimaryNameColumn
    columns: list[TableColumn] = Field(default_factory=list)
    lookups: list[TableLookup] = Field(default_factory=list)
    keys: list[TableKey] = Field(default_factory=list, max_length=MAX_KEYS)

    @property
    def prefix(self) -> str:
        """The publisher's customization prefix every schema name here starts with."""
        return _prefix(self.schema_name)

    @property
    def primary_id(self) -> str:
        """The primary id column Dataverse adds: ``<logical name>id``."""
        return f"{self.logical_name}id"

    def column_types(self) -> dict[str, str]:
        """Logical name -> type of every column declared here (the primary name a string, lookups ``lookup``)."""
        types = {self.primary_name.logical_name: "string"}
        types |= {c.logical_name: c.type for c in self.columns}
        types |= {lk.logical_name: "lookup" for lk in self.lookups}
        return types

    def column(self, logical_name: str) -> TableColumn | None:
        return next((c for c in self.columns if c.logical_name == logical_name), None)

    def lookup(self, navigation_property: str) -> TableLookup | None:
        return next((lk for lk in self.lookups if lk.schema_name == navigation_property), None)

    @model_validator(mode="after")
    def _consistent(self) -> TableSpec:
        named: list[tuple[str, str]] = [("table", self.schema_name), ("primary_name", self.primary_name.schema_name)]
        named += [("column", c.schema_name) for c in self.columns]
        named += [("lookup", lk.schema_name) for lk in self.lookups]
        named += [("relationship", lk.relationship_schema_name) for lk in self.lookups]
        named += [("key", k.schema_name) for k in self.keys]
        for what, name in named:
            if _prefix(name).lower() != self.prefix.lower():
                raise ValueError(f"{what} {name}: schema names start with the table's publisher prefix "
                                 f"'{self.prefix}_' (one publisher per table)")
        seen: set[str] = {self.primary_id}
        for what, name in named[1:]:
            if what in ("relationship", "key"):
                continue
            if name.lower() in seen:
                raise ValueError(f"{what} {name}: the logical name {name.lower()!r} is taken (logical names are the "
                                 "schema names in lower case and must be unique in a table)")
            seen.add(name.lower())
        for what in ("relationship", "key"):
            names = [n.lower() for w, n in named if w == what]
            if len(set(names)) != len(names):
                raise ValueError(f"a {what} schema name appears twice")
        types = self.column_types()
        for key in self.keys:
            size = 0
            for part in key.columns:
                kind = types.get(part)
                if kind is None:
                    raise ValueError(f"key {key.schema_name}: {part!r} is no column of the table (name columns by "
                                     f"logical name: {', '.join(sorted(types))})")
                if kind not in KEY_COLUMN_BYTES:
                    raise ValueError(f"key {key.schema_name}: column {part} is a {kind}; a key takes decimal, integer, "
                                     "string, date/time, lookup or choice columns")
                per = KEY_COLUMN_BYTES[kind]
                column = self.column(part)
                length = (column.max_length if column is not None else self.primary_name.max_length) or 0
                size += per if per is not None else 2 * length
            if len(set(key.columns)) != len(key.columns):
                raise ValueError(f"key {key.schema_name}: a column appears twice")
            if size > MAX_KEY_BYTES:
                raise ValueError(f"key {key.schema_name}: its columns take {size} bytes, above the {MAX_KEY_BYTES} a "
                                 "key may (strings count 2 bytes a character: shorten max_length)")
        column_sets = [frozenset(k.columns) for k in self.keys]
        if len(set(column_sets)) != len(column_sets):
            raise ValueError("two keys have the same columns")
        return self


def table_problems(template_fields: list[FieldRow], dataverse: DataverseSide, value_maps: dict[str, ValueMap],
                   table: TableSpec) -> list[str]:
    """Where a template's ``fields`` and ``dataverse`` block disagree with the table it declares: every column the
    template writes must be declared, with a type that takes the value; the upsert key must be one of its keys."""
    problems: list[str] = []
    if dataverse.logical_name != table.logical_name:
        problems.append(f"dataverse.logical_name {dataverse.logical_name!r} must be the table's logical name "
                        f"{table.logical_name!r} (its schema name in lower case)")
    if dataverse.primary_id != table.primary_id:
        problems.append(f"dataverse.primary_id {dataverse.primary_id!r} must be {table.primary_id!r} (Dataverse "
                        "names the primary id <logical name>id)")
    types = table.column_types()
    for i, row in enumerate(template_fields):
        where = f"fields[{i}] ({row.fo_field})"
        if row.lookup is not None:
            lookup = table.lookup(row.lookup.navigation_property)
            if lookup is None:
                close = [lk.schema_name for lk in table.lookups
                         if lk.schema_name.lower() == row.lookup.navigation_property.lower()]
                hint = f" (the case differs: {close[0]!r}; navigation properties are case-sensitive)" if close else ""
                problems.append(f"{where}: the lookup {row.lookup.navigation_property!r} is not in "
                                f"dataverse.table.lookups{hint}")
            elif lookup.referenced_attribute != row.lookup.primary_id:
                problems.append(f"{where}: lookup.primary_id {row.lookup.primary_id!r} is not the referenced "
                                f"attribute {lookup.referenced_attribute!r} of the table's lookup {lookup.schema_name}")
            continue
        kind = types.get(row.dataverse_column)
        if kind is None:
            problems.append(f"{where}: column {row.dataverse_column!r} is not declared in dataverse.table (add it to "
                            "columns; logical names are the schema names in lower case)")
            continue
        allowed = FIELD_COLUMN_TYPES.get(row.dataverse_type, frozenset({row.dataverse_type}))
        if kind not in allowed:
            problems.append(f"{where}: dataverse_type {row.dataverse_type!r} cannot be written to the table's "
                            f"{kind} column {row.dataverse_column}")
            continue
        column = table.column(row.dataverse_column)
        if column is not None and column.type == "choice" and row.value_map in value_maps:
            wanted = {e.dataverse for e in value_maps[row.value_map].entries if isinstance(e.dataverse, int)}
            missing = sorted(wanted - {o.value for o in column.options})
            if missing:
                problems.append(f"{where}: value map {row.value_map} writes {missing}, not among the options of "
                                f"column {column.schema_name}")
    if dataverse.company is not None and table.lookup(dataverse.company.navigation_property) is None:
        problems.append(f"dataverse.company: the lookup {dataverse.company.navigation_property!r} is not in "
                        "dataverse.table.lookups")
    key = frozenset(part if part in types else part.lower() for part in dataverse.alternate_key)
    if table.keys and key not in {frozenset(k.columns) for k in table.keys}:
        problems.append(f"dataverse.alternate_key {dataverse.alternate_key} is none of the keys of dataverse.table "
                        f"({'; '.join(', '.join(k.columns) for k in table.keys)}): upserts address rows by it")
    elif not table.keys:
        problems.append("dataverse.table declares no keys: upserts address rows by dataverse.alternate_key, which "
                        "must be one of them")
    return problems


class CommerceSide(_Strict):
    entity_set: str = Field(min_length=1)
    data_entity: str | None = None
    key: list[str] = Field(min_length=1)
    company_specific: bool
    filter: str | None = Field(default=None, min_length=1,
                               description="an OData $filter clause every read of the set adds (a source filter, as "
                                           "dual-write maps have): rows it leaves out are not synced")


class CompanySpec(_Strict):
    """How a company-specific table points at its company (``cdm_company``; docs/domain-notes.md §4, inferred)."""

    navigation_property: str = Field(min_length=1)
    entity_set: str = Field(min_length=1)
    primary_id: str = Field(min_length=1)
    match_column: str = Field(min_length=1)
    basis: Basis = "inferred"


class DataverseSide(_Strict):
    entity_set: str = Field(min_length=1)
    logical_name: str = Field(min_length=1)
    primary_id: str = Field(min_length=1)
    alternate_key: list[str] = Field(min_length=1)
    company: CompanySpec | None = None
    table: TableSpec | None = Field(default=None, description="an app-owned table: created by provision (§2.14)")



class DataEventSpec(_Strict):
    """How the template's entity appears as F&O data events, delivered through Dataverse (docs/protocol-notes.md §4.4): the
    virtual table they name (``mserp_<data entity>``, lower case) and its ``mserp_`` columns that carry the F&O key.
    The names follow the documented naming rule but are inferred: check them in the tenant's Data event catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    comment: str = Field(default="", alias="$comment")
    virtual_table: str = Field(pattern=_LOGICAL_NAME)
    key_columns: dict[str, str] = Field(min_length=1, description="F&O key property -> virtual-table column")
    basis: Basis = "inferred"

    @model_validator(mode="after")
    def _columns(self) -> DataEventSpec:
        seen: set[str] = set()
        for prop, column in self.key_columns.items():
            if re.match(_LOGICAL_NAME, column) is None:
                raise ValueError(f"key_columns[{prop!r}]: {column!r} is not a logical name (lower case letters, "
                                 "digits and '_')")
            if column in seen:
                raise ValueError(f"key_columns: column {column!r} carries two key properties")
            seen.add(column)
        return self


class PoolingRule(_Strict):
    """Which lines make every card of their customer change ("As contact tender" pools the customer's points,
    docs/domain-notes.md §11; that such a redemption consumes lines of the customer's other cards is inferred)."""

    tender_property: str = Field(default="CardTenderType", min_length=1)
    pooled_values: list[str] = Field(default_factory=lambda: ["AsContactTender"], min_length=1)
    customer_property: str = Field(default="CustomerAccount", min_length=1)
    basis: Basis = "inferred"


class AggregateSpec(_Strict):
    """The ``aggregate`` block of an aggregate template: source lines grouped and folded into one record a group.

    The group key is ``commerce.key`` (the records' key); ``range_key`` (its first part) orders scans and splits them
    into key ranges; ``watermark_property`` with ``overlap_minutes`` selects the recent lines of an incremental pass."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    comment: str = Field(default="", alias="$comment")
    source_entity_set: str = Field(min_length=1)
    group_key: list[str] = Field(min_length=1)
    fold: str = Field(min_length=1, description="a registered fold (shared.balances.registry)")
    range_key: str = Field(min_length=1)
    watermark_property: str = Field(min_length=1, description="a date (or date-time) set on each new line")
    watermark_time_property: str | None = Field(default=None, description="its time of day in seconds, when the "
                                                "date carries none (F&O: EntryTime)")
    line_key: list[str] = Field(default_factory=list, description="the source entity's key: which lines an "
                                "incremental pass read before (empty: every property it reads)")
    overlap_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60,
                                 description="lines are not committed in watermark order: re-read this far back")
    incremental_schedule: str = Field(default="0 */5 * * * *",
                                      description="NCRONTAB of the incremental pass (recent lines, due cards)")
    pooling: PoolingRule | None = None

    @field_validator("incremental_schedule")
    @classmethod
    def _ncrontab(cls, value: str) -> str:
        if len(value.split()) != 6:
            raise ValueError("incremental_schedule must be an NCRONTAB expression with 6 fields")
        return value


class TierLevels(_Strict):
    """Where a tier's level is read: an F&O entity set of tiers (``RetailLoyaltyTiers``, docs/protocol-notes.md §3.8)."""

    entity_set: str = Field(min_length=1)
    program: str = Field(min_length=1, description="its program property (LoyaltyName)")
    tier: str = Field(min_length=1, description="its tier id property (TierId)")
    level: str = Field(min_length=1, description="its level property (TierLevel: a higher level is a higher tier)")


class CurrentTierSpec(_Strict):
    """The ``current_tier`` rule (docs/domain-notes.md §11, inferred): within each group of rows (a card in a program),
    among the rows valid today (``valid_from`` <= today <= ``valid_to``, the empty date 1900-01-01 as ``valid_to``
    meaning open), the one whose tier has the highest level is the current one (``shared.mapping.derive``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    comment: str = Field(default="", alias="$comment")
    rule: Literal["current_tier"]
    group_by: list[str] = Field(min_length=1)
    program: str = Field(min_length=1, description="the row's program property, which the levels are keyed by")
    tier: str = Field(min_length=1)
    valid_from: str = Field(min_length=1)
    valid_to: str = Field(min_length=1)
    levels: TierLevels
    basis: Basis = "inferred"


class Template(_Strict):
    """One template file: a dual-write map plus what this app needs to run it. ``kind`` ``rows`` (the default)
    syncs the rows of an entity set; ``aggregate`` folds groups of source lines into one record each."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    comment: str = Field(default="", alias="$comment")
    name: str
    display_name: str
    description: str = ""
    source: str = ""
    commerce: CommerceSide
    dataverse: DataverseSide
    schedule: str = Field(description="NCRONTAB (6 fields) of the Commerce -> Dataverse timer")
    reverse_schedule: str = Field(default="30 */5 * * * *",
                                  description="NCRONTAB of the Dataverse -> Commerce timer (change tracking)")
    value_maps: dict[str, ValueMap] = Field(default_factory=dict)
    fields: list[FieldRow] = Field(min_length=1)
    data_event: DataEventSpec | None = Field(default=None, description="F&O data events of the entity (no code in F&O)")
    kind: Literal["rows", "aggregate"] = "rows"
    aggregate: AggregateSpec | None = None
    derived: dict[str, CurrentTierSpec] = Field(default_factory=dict,
                                                description="derived columns: each a named rule the engine applies")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("name must be lower case letters, digits and '_' (it names functions and partitions)")
        return value

    @field_validator("schedule", "reverse_schedule")
    @classmethod
    def _ncrontab(cls, value: str) -> str:
        if len(value.split()) != 6:
            raise ValueError("schedule must be an NCRONTAB expression with 6 fields (second minute hour day month weekday)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Template:
        for i, row in enumerate(self.fields):
            if row.value_map is not None and row.value_map not in self.value_maps:
                raise ValueError(f"fields[{i}] ({row.fo_field}): value_map {row.value_map!r} is not defined in value_maps")
        for attr in ("fo_property", "dataverse_column"):
            seen: set[str] = set()
            # One F&O field may feed two columns one way (a key column and a lookup by the same code); a field that
            # flows back to F&O must come from one column only.
            rows = self.rows_for(Direction.TO_COMMERCE) if attr == "fo_property" else self.fields
            for row in rows:
                name = getattr(row, attr).lower()
                if name in seen:
                    raise ValueError(f"{attr} {getattr(row, attr)!r} is mapped twice")
                seen.add(name)
        by_fo = {row.fo_property: row for row in self.fields if row.lookup is None}
        by_fo |= {row.fo_property: row for row in self.fields if row.fo_property not in by_fo}
        company = self.dataverse.company
        if self.commerce.company_specific != (company is not None):
            raise ValueError("commerce.company_specific and dataverse.company must go together")
        if self.commerce.company_specific and "dataAreaId" not in self.commerce.key:
            raise ValueError("a company-specific entity's key must include dataAreaId")
        for part in self.commerce.key:
            if part == "dataAreaId" and self.commerce.company_specific:
                continue
            key_row = by_fo.get(part)
            if key_row is None:
                raise ValueError(f"commerce key part {part!r} is not a mapped fo_property")
            if self.one_way and key_row.map_type is not MapType.TO_DATAVERSE:
                raise ValueError(f"key field {part!r} must be mapped '>' (no field of this template flows to F&O)")
            if not self.one_way and key_row.map_type is not MapType.BOTH:
                raise ValueError(f"key field {part!r} must be mapped '=' (keys are bidirectional, DIPV1004)")
        by_dv = {row.dataverse_column for row in self.fields}
        for column in self.dataverse.alternate_key:
            if company is not None and column == company.navigation_property:
                continue
            if column not in by_dv:
                raise ValueError(f"dataverse alternate key column {column!r} is not a mapped dataverse_column")
        if company is not None and company.navigation_property not in self.dataverse.alternate_key:
            raise ValueError("the company lookup must be part of the Dataverse alternate key")
        self._check_aggregate()
        if self.dataverse.table is not None:
            problems = table_problems(self.fields, self.dataverse, self.value_maps, self.dataverse.table)
            if problems:
                raise ValueError("dataverse.table: " + "; ".join(problems))
        if self.data_event is not None:
            named, key = set(self.data_event.key_columns), set(self.commerce.key)
            if named != key:
                problems = [f"missing {', '.join(sorted(key - named))}" if key - named else "",
                            f"{', '.join(sorted(named - key))} not in commerce.key" if named - key else ""]
                raise ValueError("data_event.key_columns must name exactly the commerce key properties "
                                 f"({', '.join(self.commerce.key)}): {'; '.join(p for p in problems if p)}")
        self._check_derived()
        return self

    def _check_aggregate(self) -> None:
        spec = self.aggregate
        if (self.kind == "aggregate") != (spec is not None):
            raise ValueError("kind 'aggregate' and the aggregate block go together (kind 'rows' takes no aggregate)")
        if spec is None:
            return
        fold = FOLDS.get(spec.fold)
        if fold is None:
            raise ValueError(f"aggregate.fold {spec.fold!r} is not a registered fold ({', '.join(sorted(FOLDS))})")
        if spec.source_entity_set != self.commerce.entity_set:
            raise ValueError("aggregate.source_entity_set must be commerce.entity_set (the set the lines are read from)")
        if spec.group_key != self.commerce.key:
            raise ValueError("aggregate.group_key must be commerce.key (one record per group, keyed by it)")
        if spec.range_key != spec.group_key[0]:
            raise ValueError("aggregate.range_key must be the first part of group_key (scans order by it)")
        if self.commerce.company_specific:
            raise ValueError("an aggregate template cannot be company-specific")
        for row in self.fields:
            if row.fo_property not in fold.outputs:
                raise ValueError(f"fields ({row.fo_field}): {row.fo_property!r} is no output of fold {spec.fold} "
                                 f"({', '.join(fold.outputs)})")
            if not row.map_type.allows(Direction.TO_DATAVERSE) or row.map_type.allows(Direction.TO_COMMERCE):
                raise ValueError(f"fields ({row.fo_field}): an aggregate is one-way, Commerce -> Dataverse: map it "
                                 "'>' or '>>'")

    def _check_derived(self) -> None:
        used = {row.derive for row in self.fields if row.derive is not None}
        for name in sorted(used - set(self.derived)):
            raise ValueError(f"a field derives {name!r}, which the 'derived' block does not define")
        for name in sorted(set(self.derived) - used):
            raise ValueError(f"derived.{name} is defined but no field writes it (add a row with \"derive\": {name!r})")
        mapped = {row.fo_property for row in self.fields if row.derive is None}
        if len({tuple(spec.group_by) for spec in self.derived.values()}) > 1:
            raise ValueError("every entry of 'derived' must have the same group_by (a callback re-reads one group)")
        for name, spec in self.derived.items():
            order = [p for p in self.commerce.key if p != "dataAreaId"]
            if order[:len(spec.group_by)] != spec.group_by:
                raise ValueError(f"derived.{name}.group_by {spec.group_by} must be the first parts of commerce.key "
                                 f"({', '.join(order)}): a scan reads in key order, so each group's rows come together")
            for what in ("program", "tier", "valid_from", "valid_to"):
                prop = getattr(spec, what)
                if prop not in mapped:
                    raise ValueError(f"derived.{name}.{what}: {prop!r} is not a mapped fo_property")

    @property
    def one_way(self) -> bool:
        """True when no field flows Dataverse -> F&O: the reverse direction has nothing to do for this template."""
        return not self.rows_for(Direction.TO_COMMERCE)

    def rows_for(self, direction: Direction) -> list[FieldRow]:
        return [row for row in self.fields if row.map_type.allows(direction)]
