"""Deterministic, realistic seed data for the Commerce emulator.

Value shapes follow ``docs/domain-notes.md`` §2, §3, §6 and §8 (enum members, anonymous vs linked
cards, replacement cards, Amount-only currencies, Int64 maxima above 2^31, dates at midnight with
the time of day in separate Int32 fields). Card-number, party-number and reward-point-id formats
are invented but Contoso-like (inferred).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

Row = dict[str, Any]

# Contoso demo company names (inferred from the standard demo data).
COMPANY_NAMES: dict[str, str] = {
    "usmf": "Contoso Entertainment System USA",
    "usrt": "Contoso Retail USA",
    "demf": "Contoso Entertainment System Germany",
    "usp2": "Contoso Orange Juice",
    "frrt": "Contoso Retail France",
    "gbsi": "Contoso Consulting UK",
}

# (operating unit number, UTC offset in hours) of the issuing channels (inferred).
OPERATING_UNITS: tuple[tuple[str, int], ...] = (
    ("052", -8), ("053", -8), ("054", -5), ("062", -6), ("064", -5), ("128", 1), ("136", 0),
)

# Descriptions stay within 53 characters: with " (USMF)" appended they fit the 60 of the
# F&O Description EDT and of msdyn_description (inferred).
LEVELS: tuple[tuple[str, str], ...] = (
    ("Bronze", "Entry level: 1 point per currency unit spent"),
    ("Silver", "Silver: 1.25 points per unit, free standard shipping"),
    ("Gold", "Gold: 1.5 points per unit, early sale access"),
    ("Platinum", "Platinum: 2 points per unit, priority service"),
    ("Diamond", "Invitation only: 3 points per unit, personal shopper"),
    ("Staff", "Employees of the company"),
    ("VIP", "Very important customers selected by store managers"),
    ("Student", "Verified students: 10% discount on selected items"),
    ("Family", "Family plan: pooled points for up to five cards"),
    ("Business", "Business customers buying on account"),
)

CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "CAD")
_WEIGHTED_TENDER_TYPES = ("AsCardTender",) * 14 + ("AsContactTender",) * 3 + ("NoTender",) * 2 + ("Blocked",)


@dataclass(frozen=True)
class SeedConfig:
    """Sizes and randomness of one seeded data set."""

    cards: int = 200
    reward_points: int = 20
    levels_per_company: int = 4
    companies: tuple[str, ...] = ("usmf", "usrt", "demf")
    seed: int = 42
    #: Reward-point transaction lines in all (-1: eight per card); see emulators.commerce.loyalty_seed.
    lines: int = -1
    #: The day the generated history runs up to, and the emulator clock's start (midnight UTC).
    as_of: str = "2026-12-01"
    #: ExpirationDate of never-expiring points (inferred, docs/domain-notes.md §11: set it to the app's setting).
    never_expires: str = "1900-01-01T00:00:00Z"
    #: ValidTo of an open-ended card tier (inferred: F&O's empty date).
    open_valid_to: str = "1900-01-01T00:00:00Z"

    @property
    def line_count(self) -> int:
        return self.cards * 8 if self.lines < 0 else self.lines


def company_name(company: str) -> str:
    return COMPANY_NAMES.get(company.lower(), f"Company {company.upper()}")


def iso_midnight(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def build_legal_entities(config: SeedConfig) -> list[Row]:
    # LegalEntityId in lower case like dataAreaId (inferred; compare case-insensitively).
    return [{"LegalEntityId": c.lower(), "Name": company_name(c)} for c in config.companies]


def build_levels(config: SeedConfig) -> list[Row]:
    rows: list[Row] = []
    for company in config.companies:
        for index in range(config.levels_per_company):
            if index < len(LEVELS):
                phrase, description = LEVELS[index]
            else:
                phrase, description = f"Tier{index + 1:02d}", f"Additional tier {index + 1}"
            rows.append({
                "dataAreaId": company.lower(),
                "LevelPhrase": phrase,
                "LevelDescription": f"{description} ({company.upper()})",
            })
    return rows


def card_number(index: int) -> str:
    """Card numbers sort in creation order: ``52100000001``, ``52100000002`` … (inferred format)."""
    return f"521{index:08d}"


def _enrollment(rng: random.Random) -> tuple[datetime, str, int]:
    start = datetime(2019, 1, 1, tzinfo=UTC)
    moment = start + timedelta(seconds=rng.randrange(0, 6 * 365 * 86400))
    unit, offset = rng.choice(OPERATING_UNITS)
    return moment, unit, offset


def build_cards(config: SeedConfig, rng: random.Random) -> list[Row]:
    count = config.cards
    party_pool = max(1, int(count * 0.7))
    rows: list[Row] = []
    for index in range(1, count + 1):
        moment, unit, offset = _enrollment(rng)
        local = moment + timedelta(hours=offset)
        anonymous = rng.random() < 0.15
        rows.append({
            "CardNumber": card_number(index),
            "CardTenderType": rng.choice(_WEIGHTED_TENDER_TYPES),
            "PartyNumber": "" if anonymous else f"{rng.randint(1, party_pool) + 1000:09d}",
            "ReplacementCardNumber": "",
            "OmOperatingUnitNumber": unit,
            "LoyaltyEnrollmentDate": iso_midnight(moment.date()),
            "LoyaltyEnrollmentDateLocal": iso_midnight(local.date()),
            "LoyaltyEnrollmentTime": moment.hour * 3600 + moment.minute * 60 + moment.second,
            "LoyaltyEnrollmentTimeLocal": local.hour * 3600 + local.minute * 60 + local.second,
        })
    _link_replacements(rows, rng)
    return rows


def _link_replacements(rows: list[Row], rng: random.Random) -> None:
    """About 3% of cards were replaced: old card → blocked, points at a later card of the same party."""
    for index, row in enumerate(rows[:-1]):
        if rng.random() < 0.03:
            replacement = rows[rng.randrange(index + 1, len(rows))]
            replacement["PartyNumber"] = row["PartyNumber"]
            row["ReplacementCardNumber"] = replacement["CardNumber"]
            row["CardTenderType"] = "Blocked"


def build_reward_points(config: SeedConfig, rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for index in range(1, config.reward_points + 1):
        amount = index % 3 == 0
        currency = CURRENCIES[(index // 3) % len(CURRENCIES)] if amount else None
        redeemable = rng.random() < 0.6
        expires = rng.random() < 0.7
        vests = rng.random() < 0.3
        if config.reward_points >= 10 and index % 10 == 0:
            maximum = rng.randint(2**31, 2**40)  # beyond Int32 (docs/domain-notes.md §6)
        else:
            maximum = rng.choice((0, 10_000, 50_000, 250_000, 1_000_000))
        rows.append({
            "RewardPointId": f"{currency}-{index:04d}" if currency else f"PTS-{index:04d}",
            "RewardPointType": "Amount" if amount else "Quantity",
            "RewardPointCurrency": currency,
            "Redeemable": "Yes" if redeemable else "No",
            "RedeemRanking": rng.randint(1, 5) if redeemable else 0,
            "ExpirationTimeValue": rng.choice((3, 6, 12, 24, 36)) if expires else 0,
            "ExpirationTimeUnit": rng.choice(("Month", "Month", "Year", "Day")),
            "VestingTimeValue": rng.choice((7, 14, 30)) if vests else 0,
            "VestingTimeUnit": "Day",
            "MaximumLoyaltyRewardPoints": maximum,
        })
    # The generated transaction lines need both kinds of redeemable points (emulators.commerce.loyalty_seed): the
    # first vests after 14 days and expires after 12 months, the second is available at once and never expires.
    if rows:
        rows[0].update(Redeemable="Yes", RedeemRanking=rows[0]["RedeemRanking"] or 1, ExpirationTimeValue=12,
                       ExpirationTimeUnit="Month", VestingTimeValue=14, VestingTimeUnit="Day")
    if len(rows) > 1:
        rows[1].update(Redeemable="Yes", RedeemRanking=rows[1]["RedeemRanking"] or 1, ExpirationTimeValue=0,
                       VestingTimeValue=0)
    return rows


def build_seed(config: SeedConfig) -> dict[str, list[Row]]:
    """All rows per entity-set name; the same config always yields the same rows."""
    rng = random.Random(config.seed)
    return {
        "LegalEntities": build_legal_entities(config),
        "LoyaltyLevels": build_levels(config),
        "RetailLoyaltyCards": build_cards(config, rng),
        "RetailLoyaltyRewardPoints": build_reward_points(config, rng),
    }
