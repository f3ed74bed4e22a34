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
# Loyalty transactions and card tiers (docs/domain-notes.md §8; enum names and members as a client generated from a
# real $metadata shows them, docs/protocol-notes.md §3.8).
ENTRY_TYPE = EnumType(
    "RetailLoyaltyRewardPointEntryType",
    (("Earn", 1), ("Redeem", 2), ("ReturnEarned", 3), ("Adjust", 4), ("Refund", 5)),
)
TRANSACTION_TYPE = EnumType(
    "RetailLoyaltyTransactionType",
    (("RetailTransaction", 1), ("SalesOrder", 2), ("LoyaltyAdjustment", 3), ("NonTransactionalActivity", 4)),
)
AFFILIATION_TYPE = EnumType("RetailAffiliationType", (("General", 0), ("Loyalty", 1)))

ENUM_TYPES: tuple[EnumType, ...] = (TENDER_TYPE, DAY_MONTH_YEAR, REWARD_POINT_TYPE, NO_YES, ENTRY_TYPE,
                                    TRANSACTION_TYPE, AFFILIATION_TYPE)

#: F&O's empty date in the loyalty tier and transaction entities (an open ``ValidTo``; by default the
#: ``ExpirationDate`` of never-expiring points): 1900-01-01 at midnight UTC, the instant of the business events'
#: empty date ``/Date(-2208988800000)/`` (docs/domain-notes.md §6). Inferred, like the never-expires value
#: (docs/domain-notes.md §11), which the emulator takes as a parameter.
EMPTY_DATE_MIDNIGHT = "1900-01-01T00:00:00Z"


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
    #: A key part that may hold the empty string (e.g. a transaction line's SalesOrderId; inferred).
    empty_allowed: bool = False

    @property
    def type_name(self) -> str:
        return self.enum.full_name if self.enum else self.edm_type


def _string(name: str, *, nullable: bool = False, mandatory: bool = False, label: str = "",
            max_length: int | None = None, default: Any = None, empty_allowed: bool = False) -> Property:
    return Property(name, "Edm.String", nullable=nullable, mandatory=mandatory, label=label,
                    max_length=max_length, default=default, empty_allowed=empty_allowed)


def _enum(name: str, enum: EnumType, *, default: Any = None, mandatory: bool = False,
          label: str = "") -> Property:
    # Enum properties are nullable in $metadata (docs/domain-notes.md §6).
    return Property(name, enum.full_name, nullable=True, enum=enum, default=default,
                    mandatory=mandatory, label=label)


def _int(name: str, edm_type: str = "Edm.Int32", *, default: int = 0, label: str = "") -> Property:
    return Property(name, edm_type, nullable=False, default=default, label=label)


def _decimal(name: str, *, label: str = "") -> Property:
    # Edm.Decimal fields are not nullable (as the generated client shows them, docs/protocol-notes.md §3.8); 0 when
    # omitted (inferred, as X++ real fields default to 0).
    return Property(name, "Edm.Decimal", nullable=False, default=0, label=label)


def _date(name: str, *, label: str = "", key: bool = False) -> Property:
    # F&O date fields exposed as DateTimeOffset at midnight UTC (docs/domain-notes.md §6); the empty date when
    # omitted (inferred). Key parts are mandatory like every key part.
    return Property(name, "Edm.DateTimeOffset", nullable=False, default=EMPTY_DATE_MIDNIGHT, label=label,
                    date_only=True, mandatory=key)


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

# -- card tiers and reward-point transactions (docs/protocol-notes.md §3.8) ---------------------------------------
# Collection names, keys, property names, EDM types and nullability are those of a client generated from a real
# $metadata (seen in public code), so they are inferred until a tenant's $metadata confirms them. None of the keys
# holds dataAreaId: the entities are shared across companies (inferred), so cross-company does not change a read.
# Entity-type names, data-entity names, table names and labels are inferred. None of them has a modified time.

LOYALTY_CARD_TIERS_V2 = EntitySet(
    name="LoyaltyCardTiersV2",
    entity_type="LoyaltyCardTierV2",  # inferred
    # All six are natural keys; a row with an empty LoyaltyTierId is program membership only (inferred).
    keys=("LoyaltyProgramName", "LoyaltyTierAffiliationName", "LoyaltyTierId", "LoyaltyCardNumber", "ValidFrom",
          "ValidTo"),
    company_specific=False,
    data_entity="RetailLoyaltyCardTierV2Entity",  # inferred
    table="RetailLoyaltyCardTier",  # inferred (docs/domain-notes.md §8)
    table_label="Loyalty card tiers",  # inferred
    business_event_id="LoyaltyCardTierChangedBusinessEvent",  # custom event: inferred
    properties=(
        _string("LoyaltyProgramName", nullable=False, mandatory=True, label="Loyalty program"),
        _string("LoyaltyTierAffiliationName", nullable=False, mandatory=True, label="Affiliation"),
        # A key part that may be empty: program membership without a tier (inferred), so not mandatory.
        _string("LoyaltyTierId", nullable=False, label="Tier", empty_allowed=True),
        _string("LoyaltyCardNumber", nullable=False, mandatory=True, label="Card number", max_length=30),
        _date("ValidFrom", label="Valid from", key=True),
        # The empty date is an open ValidTo (inferred), so it is not mandatory either.
        Property("ValidTo", "Edm.DateTimeOffset", nullable=False, default=EMPTY_DATE_MIDNIGHT, label="Valid to",
                 date_only=True),
        _enum("AffiliationType", AFFILIATION_TYPE, default="Loyalty", label="Affiliation type"),
    ),
)

RETAIL_LOYALTY_TIERS = EntitySet(
    name="RetailLoyaltyTiers",
    entity_type="RetailLoyaltyTier",  # inferred
    keys=("LoyaltyName", "TierId"),
    company_specific=False,
    data_entity="RetailLoyaltyTierEntity",  # inferred
    table="RetailLoyaltyTier",  # inferred
    table_label="Loyalty tiers",  # inferred
    business_event_id="RetailLoyaltyTierChangedBusinessEvent",  # custom event: inferred
    properties=(
        _string("LoyaltyName", nullable=False, mandatory=True, label="Loyalty program"),
        _string("TierId", nullable=False, mandatory=True, label="Tier"),
        # A validation-period id (inferred); the generated client shows no Description property.
        _string("ValidDateInterval", label="Validation period"),
        # A higher level is a higher tier (inferred, docs/domain-notes.md §11).
        _decimal("TierLevel", label="Tier level"),
    ),
)

RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS = EntitySet(
    name="RetailLoyaltyCardRewardPointTransactions",
    entity_type="RetailLoyaltyCardRewardPointTransaction",  # inferred
    keys=("LoyaltyTransactionLineNumber", "OperatingUnitNumber", "Terminal", "TransactionNumber",
          "LoyaltyTransactionCompany", "SalesOrderId", "AdjustmentId", "CardNumber"),
    company_specific=False,
    data_entity="RetailLoyaltyCardRewardPointTransactionEntity",  # the CDM entity (docs/protocol-notes.md §3.6)
    table="RetailLoyaltyCardRewardPointTrans",  # inferred
    table_label="Loyalty transactions",  # the CDM entity's label
    # A custom event (inferred); with it, the virtual table mserp_retailloyaltycardrewardpointtransactionentity
    # (inferred name, docs/protocol-notes.md §4.4) gets data events when lines change.
    business_event_id="RetailLoyaltyCardRewardPointTransactionChangedBusinessEvent",
    properties=(
        # Key parts: every string may be empty except the card number (a sales-transaction line has no sales order
        # or adjustment id, an adjustment no terminal or transaction; inferred).
        _decimal("LoyaltyTransactionLineNumber", label="Line number"),
        _string("OperatingUnitNumber", nullable=False, label="Operating unit number", empty_allowed=True),
        _string("Terminal", nullable=False, label="Register number", empty_allowed=True),
        _string("TransactionNumber", nullable=False, label="Transaction number", empty_allowed=True),
        _string("LoyaltyTransactionCompany", nullable=False, mandatory=True, label="Company", max_length=4),
        _string("SalesOrderId", nullable=False, label="Sales order", empty_allowed=True),
        _string("AdjustmentId", nullable=False, label="Adjustment", empty_allowed=True),
        _string("CardNumber", nullable=False, mandatory=True, label="Card number", max_length=30),
        _string("LoyaltyTierLoyaltyProgramName", label="Tier loyalty program"),
        _string("LoyaltyOtherActivityTypeName", label="Other activity type"),
        _enum("EntryType", ENTRY_TYPE, mandatory=True, label="Entry type"),
        _string("CustomerAccount", label="Customer account"),
        _decimal("SalesLineLineNum", label="Sales order line number"),
        # Signed: negative for Redeem, ReturnEarned and negative Adjust lines (docs/protocol-notes.md §3.8).
        _decimal("RewardPointAmountQty", label="Reward points"),
        # Never-expiring points carry the emulator's never-expires value (a parameter; inferred).
        _date("ExpirationDate", label="Expiration date"),
        _date("StartDate", label="Start date"),  # vesting: the points are available from this date (inferred)
        _enum("LoyaltyTransactionType", TRANSACTION_TYPE, label="Transaction type"),
        _int("EntryTime", label="Entry time"),  # seconds since midnight (inferred, docs/domain-notes.md §6)
        _string("NonTransactionalActivityId", label="Non-transactional activity"),
        _string("CustomerAccountCompany", label="Customer account company", max_length=4),
        # Lowered on earlier earn lines when points are redeemed or returned (inferred, docs/protocol-notes.md §3.8).
        _decimal("Remaining", label="Remaining"),
        _string("LoyaltyProgramName", label="Loyalty program"),
        _string("OperatorId", label="Operator"),
        _enum("CardTenderType", TENDER_TYPE, default="AsCardTender", label="Card type"),
        _decimal("RetailTransactionSalesTransLineNum", label="Transaction line number"),
        _string("ReceiptId", label="Receipt number"),
        _string("RewardPointId", label="Reward point ID", max_length=64),
        _date("EntryDate", label="Entry date"),
        _string("LoyaltyTierId", label="Tier"),
    ),
)

ENTITY_SETS: tuple[EntitySet, ...] = (
    RETAIL_LOYALTY_CARDS,
    LOYALTY_LEVELS,
    RETAIL_LOYALTY_REWARD_POINTS,
    LEGAL_ENTITIES,
    LOYALTY_CARD_TIERS_V2,
    RETAIL_LOYALTY_TIERS,
    RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS,
)
ENTITY_SETS_BY_NAME: dict[str, EntitySet] = {s.name: s for s in ENTITY_SETS}


def entity_set(name: str) -> EntitySet | None:
    """Entity set by its exact (case-sensitive) public collection name, as F&O routes it."""
    return ENTITY_SETS_BY_NAME.get(name)
