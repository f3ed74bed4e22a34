"""Table metadata of the Dataverse emulator, as data (docs/protocol-notes.md §5.1 "per-table metadata").

Only the entity-set names are documented (docs/domain-notes.md §2: "logical names, primary keys,
column types, lengths and alternate keys are not published"). Everything else below is
INFERRED from Dataverse naming conventions, the dual-write maps (docs/domain-notes.md) and the
F&O field types, and must be checked against a real environment's ``$metadata``:

* logical names / primary ids (``msdyn_loyaltycard`` / ``msdyn_loyaltycardid``): inferred;
* alternate keys (card number, reward point id, level phrase + company): inferred
  (docs/domain-notes.md §4 "Expected Dataverse alternate key");
* max lengths (card number 30, reward point id 64: AX 2012 EDT lengths; the rest guessed);
* choice values (806380000.. / 192350000..): from the dual-write value maps (docs/domain-notes.md §3);
* lookup navigation-property names and targets (``msdyn_company`` → ``cdm_companies``,
  ``msdyn_rewardpointcurrency`` → ``transactioncurrencies``): inferred.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ColumnType(StrEnum):
    """Attribute types the emulator validates (Edm type in the comment)."""

    STRING = "string"  # Edm.String
    CHOICE = "choice"  # Edm.Int32 restricted to a set of option values
    DATETIME = "datetime"  # Edm.DateTimeOffset
    INT32 = "int32"  # Edm.Int32 (whole number)
    INT64 = "int64"  # Edm.Int64 (big integer)
    BOOLEAN = "boolean"  # Edm.Boolean (two options)
    GUID = "guid"  # Edm.Guid (primary id, lookup values)
    DECIMAL = "decimal"  # Edm.Decimal (decimal number)
    MONEY = "money"  # Edm.Decimal (currency)
    DATE = "date"  # Edm.Date (DateTimeAttributeMetadata with Format DateOnly; read back as YYYY-MM-DD, inferred)


EDM_TYPE_NAMES: dict[ColumnType, str] = {
    ColumnType.STRING: "Edm.String",
    ColumnType.CHOICE: "Edm.Int32",
    ColumnType.DATETIME: "Edm.DateTimeOffset",
    ColumnType.INT32: "Edm.Int32",
    ColumnType.INT64: "Edm.Int64",
    ColumnType.BOOLEAN: "Edm.Boolean",
    ColumnType.GUID: "Edm.Guid",
    ColumnType.DECIMAL: "Edm.Decimal",
    ColumnType.MONEY: "Edm.Decimal",
    ColumnType.DATE: "Edm.Date",
}


@dataclass(frozen=True)
class Column:
    """A writable column. ``required`` = required on create (inferred, see module doc)."""

    name: str
    type: ColumnType
    max_length: int | None = None
    required: bool = False
    choices: tuple[int, ...] | None = None
    minimum: float | None = None  # numbers: MinValue / MaxValue of the column's metadata
    maximum: float | None = None
    precision: int | None = None  # decimal and money: digits after the point


@dataclass(frozen=True)
class Lookup:
    """A single-valued lookup: written with ``<navigation_property>@odata.bind`` (case-
    sensitive, §2.6) and read back as ``_<attribute>_value`` (a GUID)."""

    navigation_property: str
    target_set: str
    attribute: str = ""  # logical name of the lookup column; defaults to nav prop lower-cased

    @property
    def attribute_name(self) -> str:
        return self.attribute or self.navigation_property.lower()

    @property
    def value_property(self) -> str:
        return f"_{self.attribute_name}_value"


#: Server-managed columns present on every row (read-only; createdon/modifiedon as ISO UTC
#: strings, versionnumber = the row version behind ``@odata.etag``).
SYSTEM_COLUMNS: dict[str, ColumnType] = {
    "createdon": ColumnType.DATETIME,
    "modifiedon": ColumnType.DATETIME,
    "versionnumber": ColumnType.INT64,
}


@dataclass(frozen=True)
class Table:
    """One Dataverse table.

    ``alternate_keys`` lists each key as the property names used in a key URL: plain columns
    by name, lookup parts as ``_<attribute>_value`` (§2.5, "key that includes a lookup").
    """

    entity_set: str
    logical_name: str
    primary_id: str
    columns: Mapping[str, Column]
    lookups: Mapping[str, Lookup] = field(default_factory=dict)  # by navigation property
    alternate_keys: tuple[tuple[str, ...], ...] = ()
    change_tracking: bool = True  # ChangeTrackingEnabled (§2.11); inferred for the msdyn_ tables
    bulk_messages: bool = True  # Create/Update/UpsertMultiple available (inferred)
    seeded: bool = False  # reference table whose seed rows survive /_emulator/reset
    primary_name: str | None = None  # the IsPrimaryName column (app-owned tables; inferred for the others)

    @property
    def qualified_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical_name}"

    @property
    def lookup_by_value_property(self) -> dict[str, Lookup]:
        return {lookup.value_property: lookup for lookup in self.lookups.values()}

    def readable_properties(self) -> list[str]:
        """Every property a GET can return / ``$select``/``$filter``/``$orderby`` can name."""
        return [
            self.primary_id,
            *self.columns,
            *(lookup.value_property for lookup in self.lookups.values()),
            *SYSTEM_COLUMNS,
        ]

    def property_type(self, name: str) -> ColumnType | None:
        if name == self.primary_id or name in self.lookup_by_value_property:
            return ColumnType.GUID
        if name in self.columns:
            return self.columns[name].type
        return SYSTEM_COLUMNS.get(name)


def _columns(*columns: Column) -> dict[str, Column]:
    return {column.name: column for column in columns}


def _table_map(tables: Iterable[Table]) -> dict[str, Table]:
    return {table.entity_set: table for table in tables}


S, CH, DT, I32, I64, B = (
    ColumnType.STRING,
    ColumnType.CHOICE,
    ColumnType.DATETIME,
    ColumnType.INT32,
    ColumnType.INT64,
    ColumnType.BOOLEAN,
)

#: CardTenderType: AsCardTender/AsContactTender/NoTender/Blocked (docs/domain-notes.md §3).
CARD_TENDER_TYPES = (806380000, 806380001, 806380002, 806380003)
#: RetailDayMonthYear: Day/Month/Year (docs/domain-notes.md §3).
TIME_UNITS = (806380000, 806380001, 806380002)
#: RetailLoyaltyRewardPointType: Quantity/Amount (docs/domain-notes.md §3).
REWARD_POINT_TYPES = (192350000, 192350001)

LOYALTY_CARDS = Table(
    entity_set="msdyn_loyaltycards",
    logical_name="msdyn_loyaltycard",
    primary_id="msdyn_loyaltycardid",
    columns=_columns(
        Column("msdyn_cardnumber", S, max_length=30, required=True),
        Column("msdyn_cardtendertype", CH, choices=CARD_TENDER_TYPES),
        Column("msdyn_partynumber", S, max_length=40),
        Column("msdyn_replacementcardnumber", S, max_length=30),
        Column("msdyn_operatingunitnumber", S, max_length=20),
        Column("msdyn_enrollmentdate", DT),
        Column("msdyn_effectivedate", DT),
    ),
    alternate_keys=(("msdyn_cardnumber",),),
)

LOYALTY_LEVELS = Table(
    entity_set="msdyn_loyaltylevels",
    logical_name="msdyn_loyaltylevel",
    primary_id="msdyn_loyaltylevelid",
    columns=_columns(
        Column("msdyn_levelphrase", S, max_length=20, required=True),
        Column("msdyn_description", S, max_length=60),
    ),
    lookups={"msdyn_company": Lookup("msdyn_company", "cdm_companies")},
    alternate_keys=(("msdyn_levelphrase", "_msdyn_company_value"),),
)

LOYALTY_REWARD_POINTS = Table(
    entity_set="msdyn_loyaltyrewardpoints",
    logical_name="msdyn_loyaltyrewardpoint",
    primary_id="msdyn_loyaltyrewardpointid",
    columns=_columns(
        Column("msdyn_rewardpointid", S, max_length=64, required=True),
        Column("msdyn_expirationtimeunit", CH, choices=TIME_UNITS),
        Column("msdyn_expirationtimevalue", I32),
        Column("msdyn_vestingtimeunit", CH, choices=TIME_UNITS),
        Column("msdyn_vestingtimevalue", I32),
        Column("msdyn_redeemable", B),
        Column("msdyn_redeemranking", I32),
        Column("msdyn_rewardpointtype", CH, choices=REWARD_POINT_TYPES),
        Column("msdyn_maximumloyaltyrewardpoints", I64),
    ),
    lookups={"msdyn_rewardpointcurrency": Lookup("msdyn_rewardpointcurrency", "transactioncurrencies")},
    alternate_keys=(("msdyn_rewardpointid",),),
)

TRANSACTION_CURRENCIES = Table(
    entity_set="transactioncurrencies",
    logical_name="transactioncurrency",
    primary_id="transactioncurrencyid",
    columns=_columns(
        Column("isocurrencycode", S, max_length=5, required=True),
        Column("currencyname", S, max_length=100),
    ),
    alternate_keys=(("isocurrencycode",),),
    seeded=True,
    change_tracking=False,  # the emulator's choice: only the msdyn_ loyalty tables track changes
)

COMPANIES = Table(
    entity_set="cdm_companies",
    logical_name="cdm_company",
    primary_id="cdm_companyid",
    columns=_columns(
        Column("cdm_companycode", S, max_length=10, required=True),
        Column("cdm_name", S, max_length=100),
    ),
    alternate_keys=(("cdm_companycode",),),
    seeded=True,
    change_tracking=False,  # the emulator's choice: only the msdyn_ loyalty tables track changes
)

# Publishers and solutions (docs/protocol-notes.md §2.14 "Solution"): the system tables ``publisher`` and
# ``solution`` (entity sets ``publishers``, ``solutions``; a solution's publisher is the lookup ``publisherid``).
# Only the columns provisioning reads and writes; lengths inferred.
PUBLISHERS = Table(
    entity_set="publishers",
    logical_name="publisher",
    primary_id="publisherid",
    columns=_columns(
        Column("uniquename", S, max_length=256, required=True),
        Column("friendlyname", S, max_length=256, required=True),
        Column("customizationprefix", S, max_length=8, required=True),
        Column("customizationoptionvalueprefix", I32, minimum=10_000, maximum=99_999),
        Column("description", S, max_length=2000),
    ),
    alternate_keys=(("uniquename",),),
    seeded=True,
    change_tracking=False,
)

SOLUTIONS = Table(
    entity_set="solutions",
    logical_name="solution",
    primary_id="solutionid",
    columns=_columns(
        Column("uniquename", S, max_length=65, required=True),
        Column("friendlyname", S, max_length=256, required=True),
        Column("version", S, max_length=256, required=True),
        Column("description", S, max_length=2000),
    ),
    lookups={"publisherid": Lookup("publisherid", "publishers")},
    alternate_keys=(("uniquename",),),
    seeded=True,
    change_tracking=False,
)

#: All tables by entity-set name (app-owned tables are added at run time: :mod:`.customization`).
TABLES: dict[str, Table] = _table_map([LOYALTY_CARDS, LOYALTY_LEVELS, LOYALTY_REWARD_POINTS, TRANSACTION_CURRENCIES,
                                       COMPANIES, PUBLISHERS, SOLUTIONS])

#: The solution app-owned tables go into, and its publisher's customization prefix (the template files' ``lsync``).
DEFAULT_SOLUTIONS: tuple[tuple[str, str], ...] = (("LoyaltySync", "lsync"),)

#: Default seed rows (demo data; names are illustrative).
DEFAULT_CURRENCIES: tuple[tuple[str, str], ...] = (
    ("USD", "US Dollar"),
    ("EUR", "Euro"),
    ("GBP", "Pound Sterling"),
    ("CAD", "Canadian Dollar"),
    ("DKK", "Danish Krone"),
)
DEFAULT_COMPANIES: tuple[tuple[str, str], ...] = (
    ("USMF", "Contoso Entertainment System USA"),
    ("USRT", "Contoso Retail USA"),
    ("DEMF", "Contoso Entertainment System Germany"),
)
