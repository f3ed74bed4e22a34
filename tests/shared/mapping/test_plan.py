"""Every field row of the three maps, in each direction its map type allows, and value-map edges."""

from __future__ import annotations

from typing import Any

import pytest

from shared.mapping import MappingError, load_catalog
from shared.mapping.model import LookupSpec
from shared.mapping.plan import LookupValue
from tests.builders import card_row, level_row, reward_point_row

CATALOG = load_catalog()
CARDS = CATALOG.plan("loyalty_cards")
LEVELS = CATALOG.plan("loyalty_levels")
POINTS = CATALOG.plan("loyalty_reward_points")


def no_lookup(spec: LookupSpec, guid: str) -> str | None:
    raise AssertionError("no lookup expected")


# (plan, F&O row builder, F&O property, F&O value, Dataverse column, Dataverse value)
TO_DATAVERSE = [
    (CARDS, card_row, "CardNumber", "LC-1", "msdyn_cardnumber", "LC-1"),
    (CARDS, card_row, "CardTenderType", "AsCardTender", "msdyn_cardtendertype", 806380000),
    (CARDS, card_row, "CardTenderType", "AsContactTender", "msdyn_cardtendertype", 806380001),
    (CARDS, card_row, "CardTenderType", "NoTender", "msdyn_cardtendertype", 806380002),
    (CARDS, card_row, "CardTenderType", "Blocked", "msdyn_cardtendertype", 806380003),
    (CARDS, card_row, "PartyNumber", "004512", "msdyn_partynumber", "004512"),
    (CARDS, card_row, "ReplacementCardNumber", "LC-9", "msdyn_replacementcardnumber", "LC-9"),
    (CARDS, card_row, "OmOperatingUnitNumber", "052", "msdyn_operatingunitnumber", "052"),
    (CARDS, card_row, "LoyaltyEnrollmentDate", "2024-03-01T00:00:00Z", "msdyn_enrollmentdate", "2024-03-01T00:00:00Z"),
    (CARDS, card_row, "LoyaltyEnrollmentDateLocal", "2024-03-01T01:00:00+01:00", "msdyn_effectivedate",
     "2024-03-01T00:00:00Z"),
    (LEVELS, level_row, "LevelPhrase", "Platinum", "msdyn_levelphrase", "Platinum"),
    (LEVELS, level_row, "LevelDescription", "Top tier", "msdyn_description", "Top tier"),
    (POINTS, reward_point_row, "ExpirationTimeUnit", "Day", "msdyn_expirationtimeunit", 806380000),
    (POINTS, reward_point_row, "ExpirationTimeUnit", "Month", "msdyn_expirationtimeunit", 806380001),
    (POINTS, reward_point_row, "ExpirationTimeUnit", "Year", "msdyn_expirationtimeunit", 806380002),
    (POINTS, reward_point_row, "ExpirationTimeValue", 0, "msdyn_expirationtimevalue", 0),
    (POINTS, reward_point_row, "Redeemable", "Yes", "msdyn_redeemable", True),
    (POINTS, reward_point_row, "Redeemable", "No", "msdyn_redeemable", False),
    (POINTS, reward_point_row, "RedeemRanking", 3, "msdyn_redeemranking", 3),
    (POINTS, reward_point_row, "RewardPointId", "EUR-AMOUNT", "msdyn_rewardpointid", "EUR-AMOUNT"),
    (POINTS, reward_point_row, "RewardPointType", "Quantity", "msdyn_rewardpointtype", 192350000),
    (POINTS, reward_point_row, "RewardPointType", "Amount", "msdyn_rewardpointtype", 192350001),
    (POINTS, reward_point_row, "MaximumLoyaltyRewardPoints", 2**31 + 5, "msdyn_maximumloyaltyrewardpoints", 2**31 + 5),
    (POINTS, reward_point_row, "VestingTimeUnit", "Year", "msdyn_vestingtimeunit", 806380002),
    (POINTS, reward_point_row, "VestingTimeValue", 7, "msdyn_vestingtimevalue", 7),
]


@pytest.mark.parametrize(("plan", "build", "prop", "fo_value", "column", "dv_value"), TO_DATAVERSE,
                         ids=[f"{c[2]}={c[3]}" for c in TO_DATAVERSE])
def test_field_maps_from_commerce_to_dataverse(plan: Any, build: Any, prop: str, fo_value: Any, column: str,
                                               dv_value: Any) -> None:
    record = plan.to_dataverse(build(**{prop: fo_value}))
    assert record.columns[column] == dv_value


TO_COMMERCE = [c for c in TO_DATAVERSE if c[4] != "msdyn_replacementcardnumber" and c[2] != "LoyaltyEnrollmentDateLocal"]


@pytest.mark.parametrize(("plan", "build", "prop", "fo_value", "column", "dv_value"), TO_COMMERCE,
                         ids=[f"{c[4]}={c[5]}" for c in TO_COMMERCE])
def test_field_maps_from_dataverse_to_commerce(plan: Any, build: Any, prop: str, fo_value: Any, column: str,
                                               dv_value: Any) -> None:
    assert plan.from_dataverse({column: dv_value}, no_lookup)[prop] == fo_value


def test_enum_members_match_case_insensitively() -> None:
    assert CARDS.to_dataverse(card_row(CardTenderType="asCardTender")).columns["msdyn_cardtendertype"] == 806380000


def test_the_currency_lookup_is_carried_by_iso_code() -> None:
    value = POINTS.to_dataverse(reward_point_row(RewardPointCurrency="EUR")).columns["msdyn_rewardpointcurrency"]
    assert isinstance(value, LookupValue)
    assert (value.spec.entity_set, value.spec.match_column, value.match_value) == (
        "transactioncurrencies", "isocurrencycode", "EUR")


def test_quantity_points_without_currency_map_to_an_empty_lookup() -> None:
    record = POINTS.to_dataverse(reward_point_row(RewardPointType="Quantity", RewardPointCurrency=""))
    assert record.columns["msdyn_rewardpointcurrency"] is None


# Optional string and lookup fields F&O returns as "" when empty (F&O has no null strings, docs/protocol-notes.md §3.3).
EMPTY_STRINGS = [
    (CARDS, card_row, "PartyNumber", "msdyn_partynumber"),
    (CARDS, card_row, "ReplacementCardNumber", "msdyn_replacementcardnumber"),
    (CARDS, card_row, "OmOperatingUnitNumber", "msdyn_operatingunitnumber"),
    (LEVELS, level_row, "LevelDescription", "msdyn_description"),
    (POINTS, reward_point_row, "RewardPointCurrency", "msdyn_rewardpointcurrency"),
]


@pytest.mark.parametrize(("plan", "build", "prop", "column"), EMPTY_STRINGS, ids=[c[2] for c in EMPTY_STRINGS])
def test_an_empty_string_from_commerce_is_null_in_dataverse_and_hashes_as_null(plan: Any, build: Any, prop: str,
                                                                              column: str) -> None:
    empty, null = plan.to_dataverse(build(**{prop: ""})), plan.to_dataverse(build(**{prop: None}))
    assert empty.columns[column] is None and empty.content_hash == null.content_hash


def test_the_currency_lookup_reads_back_as_its_code() -> None:
    row = {"_msdyn_rewardpointcurrency_value": "6f1c0000-0000-0000-0000-000000000001"}
    assert POINTS.from_dataverse(row, lambda spec, guid: "GBP")["RewardPointCurrency"] == "GBP"


def test_replacement_card_number_never_flows_back_to_commerce() -> None:
    assert "ReplacementCardNumber" not in CARDS.from_dataverse({"msdyn_replacementcardnumber": "X"}, no_lookup)


def test_unmapped_commerce_properties_are_not_written() -> None:
    record = CARDS.to_dataverse(card_row())
    assert not any("time" in column for column in record.columns)


@pytest.mark.parametrize("value", ["Platinum", "", None, 3])
def test_an_unknown_enum_value_is_an_error_not_a_default(value: Any) -> None:
    with pytest.raises(MappingError, match="CardTenderType: .* is not in value map RetailLoyaltyTenderTypeBase"):
        CARDS.to_dataverse(card_row(CardTenderType=value))


def test_an_unknown_dataverse_choice_value_is_an_error() -> None:
    with pytest.raises(MappingError, match="msdyn_rewardpointtype"):
        POINTS.from_dataverse({"msdyn_rewardpointtype": 0}, no_lookup)


def test_an_int32_beyond_range_is_an_error() -> None:
    with pytest.raises(MappingError, match="RedeemRanking: 2147483648 is outside the range"):
        POINTS.to_dataverse(reward_point_row(RedeemRanking=2**31))


def test_a_string_where_a_number_belongs_is_an_error() -> None:
    with pytest.raises(MappingError, match="VestingTimeValue: expected an integer"):
        POINTS.to_dataverse(reward_point_row(VestingTimeValue="7"))


def test_a_malformed_date_is_an_error() -> None:
    with pytest.raises(MappingError, match="LoyaltyEnrollmentDate: '31/12/2024' is not an ISO 8601"):
        CARDS.to_dataverse(card_row(LoyaltyEnrollmentDate="31/12/2024"))


def test_a_missing_key_is_an_error() -> None:
    with pytest.raises(MappingError, match="CardNumber: key field is missing"):
        CARDS.to_dataverse(card_row(CardNumber=""))


def test_level_keys_carry_the_company_in_lower_case() -> None:
    record = LEVELS.to_dataverse(level_row(dataAreaId="USRT"))
    assert (record.key, record.company) == (("usrt", "Gold"), "usrt")


def test_the_content_hash_changes_with_mapped_content_only() -> None:
    base = CARDS.to_dataverse(card_row()).content_hash
    assert CARDS.to_dataverse(card_row(LoyaltyEnrollmentTime=1)).content_hash == base
    assert CARDS.to_dataverse(card_row(PartyNumber="000001")).content_hash != base
