"""Entity metadata of the emulated F&O loyalty data entities, as plain data.

Sources: Microsoft's dual-write mapping tables and the CDM entity definitions, summarised in
``docs/domain-notes.md`` §2-§3 (entity sets, keys, EDM types, nullability, enum values);
wire conventions from ``docs/protocol-notes.md`` §3.1. Everything the reference marks *inferred* (entity-type
names, table names, labels, mandatory fields, default values) is marked so here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "Microsoft.Dynamics.DataEntities"

#: F&O's "no date" value as the OData emulator renders it (docs/protocol-notes.md §5.2; inferred).
EMPTY_DATE = "1900-01-01T12:00:00Z"


@dataclass(frozen=True)
class EnumType:
    """An F&O enum exposed as an OData ``EnumType`` (members serialised as names, §3.1)."""

    name: str
    members: tuple[tuple[str, int], ...]

    @property
    def full_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.members)

    def value_of(self, member: str) -> int:
        return dict(self.members)[member]


# Member values exactly as the dual-write maps' enum value maps (docs/domain-notes.md §3).
TENDER_TYPE = EnumType(
    "RetailLoyaltyTenderTypeBase",
    (("AsCardTender", 0), ("AsContactTender", 1), ("NoTender", 2), ("Blocked", 3)),
)
DAY_MONTH_YEAR = EnumType("RetailDayMonthYear", (("Day", 0), ("Month", 1), ("Year", 2)))
REWARD_POINT_TYPE = EnumType("RetailLoyaltyRewardPointType", (("Quantity", 1), ("Amount", 2)))
NO_YES = EnumType("NoYes", (("No", 0), ("Yes", 1)))

ENUM_TYPES: tuple[EnumType, ...] = (TENDER_TYPE, DAY_MONTH_YEAR, REWARD_POINT_TYPE, NO_YES)


@dataclass(frozen=True)
class Property:
    """One structural property of an entity type.

    ``mandatory`` means F&O's validateWrite rejects a create without it (inferred for non-key
    fields); ``default`` is what F&O fills in on create when the property is omitted.
    """

    name: str
    edm_type: str
    nullable: bool = True
    enum: EnumType | None = None
    mandatory: bool = False
    default: Any = None
    label: str = ""
    #: An F&O date field exposed as DateTimeOffset at midnight UTC (docs/domain-notes.md §6).
    date_only: bool = False
    #: AX 2012 reference lengths (docs/domain-notes.md §6); documentation only, neither emitted nor enforced.
    max_length: int | None = None

    @property
    def type_name(self) -> str:
        return self.enum.full_name if self.enum else self.edm_type


def _string(name: str, *, nullable: bool = False, mandatory: bool = False, label: str = "",
            max_length: int | None = None, default: Any = None) -> Property:
    return Property(name, "Edm.String", nullable=nullable, mandatory=mandatory, label=label,
                    max_length=max_length, default=default)


def _enum(name: str, enum: EnumType, *, default: Any = None, mandatory: bool = False,
          label: str = "") -> Property:
    # Enum properties are nullable in $metadata (docs/domain-notes.md §6).
    return Property(name, enum.full_name, nullable=True, enum=enum, default=default,
                    mandatory=mandatory, label=label)


def _int(name: str, edm_type: str = "Edm.Int32", *, default: int = 0, label: str = "") -> Property:
    return Property(name, edm_type, nullable=False, default=default, label=label)


@dataclass(frozen=True)
class EntitySet:
    """An OData entity set together with its entity type and F&O write-error vocabulary."""

    name: str
    entity_type: str
    keys: tuple[str, ...]
    properties: tuple[Property, ...]
    company_specific: bool
    #: Data entity name used in "Write failed for table row of type '<X>'" (§3.4).
    data_entity: str
    #: Backing table and its label, used in Infolog texts (inferred).
    table: str
    table_label: str
    #: BusinessEventId the publisher uses for changes of this set (§4; custom events, inferred).
    business_event_id: str | None = None
    writable: bool = True
    _by_name: dict[str, Property] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({p.name: p for p in self.properties})

    @property
    def full_type_name(self) -> str:
        return f"{NAMESPACE}.{self.entity_type}"

    def prop(self, name: str) -> Property | None:
        return self._by_name.get(name)

    @property
    def property_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.properties)

    @property
    def key_properties(self) -> tuple[Property, ...]:
        return tuple(self._by_name[k] for k in self.keys)


def _data_area_id() -> Property:
    return _string("dataAreaId", nullable=False, label="Company", max_length=4)


RETAIL_LOYALTY_CARDS = EntitySet(
    name="RetailLoyaltyCards",
    entity_type="RetailLoyaltyCard",  # singular public entity name: inferred
    keys=("CardNumber",),
    company_specific=False,
    data_entity="RetailLoyaltyCardEntity",  # inferred from the CDM entity
    table="RetailLoyaltyCard",  # inferred
    table_label="Loyalty cards",  # inferred
    business_event_id="RetailLoyaltyCardChangedBusinessEvent",  # custom event: inferred
    properties=(
        _string("CardNumber", nullable=False, mandatory=True, label="Card number", max_length=30),
        # Default "As card tender" is documented (define-loyalty-cards.md).
        _enum("CardTenderType", TENDER_TYPE, default="AsCardTender", label="Card type"),
        _string("PartyNumber", label="Party number"),
        _string("ReplacementCardNumber", label="Replacement card number", max_length=30),
        _string("OmOperatingUnitNumber", label="Operating unit number"),
        Property("LoyaltyEnrollmentDate", "Edm.DateTimeOffset", nullable=False, default=EMPTY_DATE,
                 label="Enrollment date", date_only=True),
        Property("LoyaltyEnrollmentDateLocal", "Edm.DateTimeOffset", nullable=False,
                 default=EMPTY_DATE, label="Enrollment date (local)", date_only=True),
        # Seconds since midnight: inferred (docs/domain-notes.md §6).
        _int("LoyaltyEnrollmentTime", label="Enrollment time"),
        _int("LoyaltyEnrollmentTimeLocal", label="Enrollment time (local)"),
    ),
)

LOYALTY_LEVELS = EntitySet(
    name="LoyaltyLevels",
    entity_type="LoyaltyLevel",  # inferred
    keys=("dataAreaId", "LevelPhrase"),
    company_specific=True,
    data_entity="smmLoyaltyLevelEntity",  # inferred (docs/domain-notes.md §2)
    table="smmLoyaltyGroup",  # inferred (docs/domain-notes.md §2)
    table_label="Loyalty levels",  # inferred
    business_event_id="LoyaltyLevelChangedBusinessEvent",  # custom event: inferred
    properties=(
        _data_area_id(),
        _string("LevelPhrase", nullable=False, mandatory=True, label="Loyalty level"),
        _string("LevelDescription", label="Description"),
    ),
)

RETAIL_LOYALTY_REWARD_POINTS = EntitySet(
    name="RetailLoyaltyRewardPoints",
    entity_type="RetailLoyaltyRewardPoint",  # inferred
    keys=("RewardPointId",),
    company_specific=False,
    data_entity="RetailLoyaltyRewardPointEntity",  # inferred from the CDM entity
    table="RetailLoyaltyRewardPoint",  # inferred
    table_label="Reward points",  # inferred
    # A partner would add this custom event; no such event ships with Commerce (inferred).
    business_event_id="RetailLoyaltyRewardPointChangedBusinessEvent",
    properties=(
        _string("RewardPointId", nullable=False, mandatory=True, label="Reward point ID", max_length=64),
        # No member has the value 0, so F&O cannot default it: mandatory on create (inferred).
        _enum("RewardPointType", REWARD_POINT_TYPE, mandatory=True, label="Reward point type"),
        _string("RewardPointCurrency", label="Currency", max_length=3),
        _enum("Redeemable", NO_YES, default="No", label="Redeemable"),
        _int("RedeemRanking", label="Redeem ranking"),
        _int("ExpirationTimeValue", label="Expiration time value"),  # 0 = never expires
        _enum("ExpirationTimeUnit", DAY_MONTH_YEAR, default="Day", label="Expiration time unit"),
        _int("VestingTimeValue", label="Vesting time value"),
        _enum("VestingTimeUnit", DAY_MONTH_YEAR, default="Day", label="Vesting time unit"),
        _int("MaximumLoyaltyRewardPoints", "Edm.Int64", label="Maximum reward points"),
    ),
)

LEGAL_ENTITIES = EntitySet(
    name="LegalEntities",
    entity_type="LegalEntity",  # inferred
    keys=("LegalEntityId",),
    company_specific=False,
    data_entity="OMLegalEntity",  # inferred
    table="CompanyInfo",  # inferred
    table_label="Legal entities",
    business_event_id=None,
    writable=False,  # read-only here: companies come from the seed
    properties=(
        _string("LegalEntityId", nullable=False, mandatory=True, label="Company", max_length=4),
        _string("Name", label="Name"),
    ),
)

ENTITY_SETS: tuple[EntitySet, ...] = (
    RETAIL_LOYALTY_CARDS,
    LOYALTY_LEVELS,
    RETAIL_LOYALTY_REWARD_POINTS,
    LEGAL_ENTITIES,
)
ENTITY_SETS_BY_NAME: dict[str, EntitySet] = {s.name: s for s in ENTITY_SETS}


def entity_set(name: str) -> EntitySet | None:
    """Entity set by its exact (case-sensitive) public collection name, as F&O routes it."""
    return ENTITY_SETS_BY_NAME.get(name)
