"""The current-tier rule (docs/domain-notes.md §11, inferred), rule by rule: which of a card's tier rows is current."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from shared.mapping.catalog import load_catalog
from shared.mapping.derive import current_tier_flags, level_key
from tests.builders import card_tier_row

SPEC = load_catalog().get("loyalty_card_tiers").derived["current_tier"]  # type: ignore[union-attr]
LEVELS = {level_key("CRM", "SILVER"): Decimal(1), level_key("CRM", "GOLD"): Decimal(2),
          level_key("CRM", "PLATINUM"): Decimal(3), level_key("VIP", "GOLD"): Decimal(1)}
TODAY = date(2026, 6, 15)


def flags(*rows: dict[str, Any], today: date = TODAY) -> list[bool]:
    return current_tier_flags(list(rows), SPEC, LEVELS, today)


def tier(tier_id: str, valid_from: str = "2024-01-01", valid_to: str = "1900-01-01", **more: Any) -> dict[str, Any]:
    return card_tier_row(LoyaltyTierId=tier_id, ValidFrom=f"{valid_from}T00:00:00Z", ValidTo=f"{valid_to}T00:00:00Z",
                         **more)


def test_a_cards_only_row_valid_today_is_its_current_tier() -> None:
    assert flags(tier("GOLD")) == [True]


def test_among_rows_valid_today_the_highest_tier_level_is_current() -> None:
    assert flags(tier("SILVER"), tier("PLATINUM"), tier("GOLD")) == [False, True, False]


def test_a_row_that_starts_after_today_is_not_current_and_does_not_compete() -> None:
    assert flags(tier("GOLD"), tier("PLATINUM", valid_from="2026-06-16")) == [True, False]


def test_a_row_that_ended_before_today_is_not_current() -> None:
    assert flags(tier("PLATINUM", valid_to="2026-06-14"), tier("SILVER")) == [False, True]


def test_both_boundaries_are_inclusive() -> None:
    assert flags(tier("GOLD", valid_from="2026-06-15", valid_to="2026-06-15")) == [True]


def test_the_empty_date_as_valid_to_means_open_ended() -> None:
    assert flags(tier("GOLD", valid_from="2020-01-01", valid_to="1900-01-01"), today=date(2999, 1, 1)) == [True]


def test_each_program_of_a_card_has_its_own_current_tier() -> None:
    crm, vip = tier("GOLD"), tier("GOLD", LoyaltyProgramName="VIP", LoyaltyTierAffiliationName="VIP")
    assert flags(crm, tier("SILVER"), vip) == [True, False, True]


def test_each_card_has_its_own_current_tier() -> None:
    assert flags(tier("GOLD"), tier("SILVER", LoyaltyCardNumber="LC-000999")) == [True, True]


def test_a_card_with_no_row_valid_today_has_no_current_tier() -> None:
    assert flags(tier("GOLD", valid_to="2025-12-31"), tier("PLATINUM", valid_from="2027-01-01")) == [False, False]


def test_a_row_without_tier_id_is_program_membership_and_never_current() -> None:
    assert flags(card_tier_row(LoyaltyTierId="")) == [False]


def test_a_tier_the_levels_do_not_list_ranks_below_every_listed_tier() -> None:
    assert flags(tier("DIAMOND"), tier("SILVER")) == [False, True]
    assert flags(tier("DIAMOND")) == [True]


def test_equal_levels_the_later_valid_from_wins_whatever_the_order_read() -> None:
    old, new = tier("GOLD", valid_from="2024-01-01"), tier("GOLD", valid_from="2026-01-01")
    assert flags(old, new) == [False, True]
    assert flags(new, old) == [True, False]


def test_program_and_tier_ids_match_the_levels_case_insensitively() -> None:
    assert flags(tier("gold", LoyaltyProgramName="crm"), tier("SILVER")) == [True, False]
