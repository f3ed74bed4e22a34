"""Loyalty activity on the Commerce emulator: what earns, redemptions, returns and adjustments do to transaction lines
(docs/domain-notes.md §8, §11; docs/protocol-notes.md §3.8), through the admin API's client."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.commerce.loyalty_activity import CommerceLoyaltyAdmin, LoyaltyActivityRefused
from emulators.commerce.server import CommerceEmulator, start_commerce
from tests.builders import card_row, reward_point_row
from tests.emulators.commerce.receiver import Receiver, serving

AUTH = {"Authorization": "Bearer test-token"}
LINES = "RetailLoyaltyCardRewardPointTransactions"
POINTS = "TEST-PTS"  # Quantity, redeemable, vests after 14 days, expires 12 months after the earn


@pytest.fixture(scope="module")
def emu() -> Iterator[CommerceEmulator]:
    server = start_commerce(cards=30, reward_points=6, levels_per_company=1, seed=5, lines=300,
                            publisher_options={"timeout": 2.0, "retries": 1, "retry_wait": 0.02})
    response = requests.post(f"{server.url}/data/RetailLoyaltyRewardPoints", headers=AUTH, timeout=10, json=reward_point_row(
        RewardPointId=POINTS, RewardPointType="Quantity", RewardPointCurrency="", Redeemable="Yes",
        ExpirationTimeValue=12, ExpirationTimeUnit="Month", VestingTimeValue=14, VestingTimeUnit="Day"))
    assert response.status_code == 201, response.text
    yield server
    server.stop()


@pytest.fixture()
def admin(emu: CommerceEmulator) -> CommerceLoyaltyAdmin:
    return CommerceLoyaltyAdmin(emu.url)


def new_card(emu: CommerceEmulator, *, tender: str = "AsCardTender", party: str | None = None) -> str:
    number = f"LC-{uuid.uuid4().hex[:10].upper()}"
    body = card_row(CardNumber=number, CardTenderType=tender, PartyNumber=party or uuid.uuid4().hex[:9],
                    ReplacementCardNumber="")
    response = requests.post(f"{emu.url}/data/RetailLoyaltyCards", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return number


def remaining(admin: CommerceLoyaltyAdmin, card: str) -> list[float]:
    """Remaining of the card's lines, in entry order."""
    return [line["Remaining"] for line in admin.card_lines(card)]


def earn(admin: CommerceLoyaltyAdmin, card: str, points: float, at: str, **options: Any) -> dict[str, Any]:
    return admin.earn(card, points, reward_point=POINTS, at=at, **options).line


# -- earn ------------------------------------------------------------------------------------------------------------


def test_an_earn_vests_after_the_vesting_period_and_expires_after_the_expiration_period(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    line = earn(admin, card, 120, "2026-01-10T15:30:00Z")
    assert (line["EntryType"], line["RewardPointAmountQty"], line["Remaining"]) == ("Earn", 120, 120)
    assert line["EntryDate"] == "2026-01-10T00:00:00Z" and line["EntryTime"] == 15 * 3600 + 30 * 60
    assert line["StartDate"] == "2026-01-24T00:00:00Z"  # 14 days of vesting
    assert line["ExpirationDate"] == "2027-01-10T00:00:00Z"  # 12 months after the earn


def test_a_never_expiring_earn_carries_the_empty_date_by_default(emu: CommerceEmulator,
                                                                 admin: CommerceLoyaltyAdmin) -> None:
    line = earn(admin, new_card(emu), 10, "2026-01-10T00:00:00Z", never_expires=True)
    assert line["ExpirationDate"] == "1900-01-01T00:00:00Z"


def test_never_expiring_lines_carry_the_configured_never_expires_value() -> None:
    server = start_commerce(cards=20, reward_points=6, levels_per_company=1, lines=200,
                            never_expires="2154-12-31T00:00:00Z")
    try:
        client = CommerceLoyaltyAdmin(server.url)
        never = [r for r in server.ledger.rules.values() if r.expire[0] == 0]
        assert never  # the seed has reward points that never expire (ExpirationTimeValue 0)
        never_ids = {r.reward_point_id for r in never}
        generated = [line for line in all_lines(server)
                     if line["RewardPointId"] in never_ids and line["EntryType"] == "Earn"]
        assert generated and {line["ExpirationDate"] for line in generated} == {"2154-12-31T00:00:00Z"}
        posted = client.earn("52100000001", 5, reward_point=never[0].reward_point_id, at="2026-02-01T00:00:00Z").line
        assert posted["ExpirationDate"] == "2154-12-31T00:00:00Z"
    finally:
        server.stop()


def test_an_activity_without_a_time_happens_at_the_emulator_clock(emu: CommerceEmulator,
                                                                  admin: CommerceLoyaltyAdmin) -> None:
    admin.set_clock("2026-12-03T09:15:00Z")
    line = admin.earn(new_card(emu), 7, reward_point=POINTS).line
    assert (line["EntryDate"], line["EntryTime"]) == ("2026-12-03T00:00:00Z", 9 * 3600 + 15 * 60)
    assert admin.advance_clock(2).isoformat() == "2026-12-05T09:15:00+00:00"


# -- redeem ----------------------------------------------------------------------------------------------------------


def test_a_redemption_consumes_remaining_on_earlier_lines_earliest_expiry_first(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    earn(admin, card, 100, "2026-01-01T00:00:00Z")  # expires 2027-01-01
    earn(admin, card, 50, "2026-02-01T00:00:00Z", expiration_date="2026-09-30")  # expires first
    result = admin.redeem(card, 80, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert (result.line["EntryType"], result.line["RewardPointAmountQty"], result.line["Remaining"]) == \
        ("Redeem", -80, 0)
    assert remaining(admin, card) == [70, 0, 0]  # the 50 expiring first, then 30 of the 100
    assert [line["Remaining"] for line in result.changed] == [0, 70]


def test_a_redemption_skips_unvested_and_expired_lines(emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    earn(admin, card, 40, "2025-01-01T00:00:00Z", expiration_date="2025-06-30")  # expired by March 2026
    earn(admin, card, 60, "2026-02-01T00:00:00Z")  # vested on 2026-02-15
    earn(admin, card, 90, "2026-02-25T00:00:00Z")  # not vested on 2026-03-01
    with pytest.raises(LoyaltyActivityRefused) as refused:
        admin.redeem(card, 61, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert refused.value.status == 409 and "60 available" in refused.value.message
    admin.redeem(card, 60, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert remaining(admin, card) == [40, 0, 90, 0]


def test_a_refused_redemption_posts_no_line(emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    earn(admin, card, 10, "2026-01-01T00:00:00Z")
    with pytest.raises(LoyaltyActivityRefused):
        admin.redeem(card, 11, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert remaining(admin, card) == [10]


def test_an_as_card_tender_redemption_never_consumes_the_customers_other_card(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    party = uuid.uuid4().hex[:9]
    card, other = new_card(emu, party=party), new_card(emu, party=party)
    earn(admin, card, 20, "2026-01-01T00:00:00Z")
    earn(admin, other, 500, "2026-01-01T00:00:00Z")
    with pytest.raises(LoyaltyActivityRefused):
        admin.redeem(card, 30, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    admin.redeem(card, 20, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert remaining(admin, other) == [500]
    assert admin.card_pool(card) == [card]


def test_an_as_contact_tender_redemption_consumes_the_customers_other_cards(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    party = uuid.uuid4().hex[:9]
    card = new_card(emu, tender="AsContactTender", party=party)
    sibling = new_card(emu, party=party)
    stranger = new_card(emu)
    earn(admin, card, 30, "2026-02-01T00:00:00Z")  # expires 2027-02-01
    earn(admin, sibling, 100, "2026-01-01T00:00:00Z")  # expires 2027-01-01: first
    earn(admin, stranger, 1000, "2025-12-01T00:00:00Z")
    result = admin.redeem(card, 110, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert remaining(admin, sibling) == [0] and remaining(admin, card) == [20, 0]  # 100 + 10
    assert remaining(admin, stranger) == [1000]
    assert {line["CardNumber"] for line in result.changed} == {card, sibling}
    assert sorted(admin.card_pool(card)) == sorted([card, sibling])


def test_a_no_tender_card_cannot_redeem(emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu, tender="NoTender")
    earn(admin, card, 50, "2026-01-01T00:00:00Z")
    with pytest.raises(LoyaltyActivityRefused) as refused:
        admin.redeem(card, 10, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert refused.value.status == 409 and "NoTender" in refused.value.message


# -- return and adjust -------------------------------------------------------------------------------------------


def test_a_return_deducts_unvested_points_first_then_available_ones(emu: CommerceEmulator,
                                                                    admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    earn(admin, card, 100, "2026-01-01T00:00:00Z")  # available on 2026-03-01
    earn(admin, card, 30, "2026-02-25T00:00:00Z")  # unvested until 2026-03-11
    result = admin.return_earned(card, 50, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert (result.line["EntryType"], result.line["RewardPointAmountQty"], result.line["Remaining"]) == \
        ("ReturnEarned", -50, 0)
    assert remaining(admin, card) == [80, 0, 0]


def test_a_return_beyond_the_cards_points_keeps_the_rest_as_a_negative_remaining(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    earn(admin, card, 30, "2026-01-01T00:00:00Z")
    result = admin.return_earned(card, 50, reward_point=POINTS, at="2026-03-01T00:00:00Z")
    assert result.line["Remaining"] == -20 and remaining(admin, card) == [0, -20]


def test_adjustments_add_available_points_or_consume_them(emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    added = admin.adjust(card, 40, reward_point=POINTS, at="2026-01-01T00:00:00Z").line
    assert (added["EntryType"], added["LoyaltyTransactionType"], added["StartDate"]) == \
        ("Adjust", "LoyaltyAdjustment", "2026-01-01T00:00:00Z")  # available at once
    assert added["AdjustmentId"] and not added["TransactionNumber"]
    taken = admin.adjust(card, -15, reward_point=POINTS, at="2026-01-02T00:00:00Z").line
    assert (taken["RewardPointAmountQty"], taken["Remaining"]) == (-15, 0)
    assert remaining(admin, card) == [25, 0]


def test_activities_in_bulk_stop_at_the_first_refusal_and_say_how_many_were_applied(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    batch = [admin.activity("earn", card, 10, reward_point=POINTS, at="2026-01-01T00:00:00Z"),
             admin.activity("redeem", card, 99, reward_point=POINTS, at="2026-03-01T00:00:00Z"),
             admin.activity("earn", card, 10, reward_point=POINTS, at="2026-03-02T00:00:00Z")]
    with pytest.raises(LoyaltyActivityRefused) as refused:
        admin.post_activities(batch)
    assert (refused.value.status, refused.value.applied) == (409, 1)
    assert remaining(admin, card) == [10]


def test_a_malformed_activity_is_a_400_naming_the_field(emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    with pytest.raises(LoyaltyActivityRefused) as refused:
        admin.post_activities([{"kind": "expire", "card": new_card(emu), "points": 1}])
    assert refused.value.status == 400 and "kind" in refused.value.message


def test_an_activity_on_an_unknown_card_is_404(admin: CommerceLoyaltyAdmin) -> None:
    with pytest.raises(LoyaltyActivityRefused) as refused:
        admin.earn("NO-SUCH-CARD", 5, reward_point=POINTS)
    assert refused.value.status == 404


# -- what reads and events show ------------------------------------------------------------------------------------


def test_posted_lines_are_read_through_odata_like_generated_ones(emu: CommerceEmulator,
                                                                 admin: CommerceLoyaltyAdmin) -> None:
    card = new_card(emu)
    line = earn(admin, card, 12, "2026-04-01T10:00:00Z", operating_unit="128")
    rows = requests.get(f"{emu.url}/data/{LINES}", headers=AUTH, timeout=10,
                        params={"$filter": f"CardNumber eq '{card}'"}).json()["value"]
    assert [{k: v for k, v in row.items() if k != "@odata.etag"} for row in rows] == [line]
    assert line["OperatingUnitNumber"] == "128" and line["Terminal"].startswith("128-")


def test_card_tiers_are_replaced_through_the_admin_api(emu: CommerceEmulator, admin: CommerceLoyaltyAdmin) -> None:
    card = "52100000004"
    rows = admin.set_card_tiers(card, [
        {"LoyaltyProgramName": "Contoso Rewards", "LoyaltyTierAffiliationName": "Contoso Rewards",
         "LoyaltyTierId": "", "ValidFrom": "2024-01-01T00:00:00Z"},
        {"LoyaltyProgramName": "Contoso Rewards", "LoyaltyTierAffiliationName": "Contoso Rewards",
         "LoyaltyTierId": "Gold", "ValidFrom": "2026-01-01T00:00:00Z", "ValidTo": "2026-12-31T00:00:00Z"}])
    read = requests.get(f"{emu.url}/data/LoyaltyCardTiersV2", headers=AUTH, timeout=10,
                        params={"$filter": f"LoyaltyCardNumber eq '{card}'"}).json()["value"]
    assert [{k: v for k, v in r.items() if k != "@odata.etag"} for r in read] == rows
    assert [(r["LoyaltyTierId"], r["ValidTo"], r["AffiliationType"]) for r in rows] == [
        ("", "1900-01-01T00:00:00Z", "Loyalty"), ("Gold", "2026-12-31T00:00:00Z", "Loyalty")]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    yield from serving()


def test_a_redemption_raises_data_events_for_its_line_and_the_lines_it_consumed(
        emu: CommerceEmulator, admin: CommerceLoyaltyAdmin, receiver: Receiver) -> None:
    card = new_card(emu)
    earn(admin, card, 100, "2026-01-01T00:00:00Z")
    response = requests.post(f"{emu.url}/_emulator/business-events/endpoints", timeout=10, json={
        "url": receiver.url("/events"), "entity_sets": [LINES], "format": "data_event"})
    assert response.status_code == 201, response.text
    try:
        admin.redeem(card, 30, reward_point=POINTS, at="2026-03-01T00:00:00Z")
        assert emu.publisher.flush(timeout=10)
    finally:
        requests.post(f"{emu.url}/_emulator/business-events/reset", timeout=10)
    bodies = receiver.received("/events")
    assert Counter(b["MessageName"] for b in bodies) == {"OnExternalCreated": 1, "OnExternalUpdated": 1}
    assert {b["PrimaryEntityName"] for b in bodies} == {"mserp_retailloyaltycardrewardpointtransactionentity"}
    attributes = {a["key"] for a in bodies[0]["InputParameters"][0]["value"]["Attributes"]}
    assert "mserp_cardnumber" in attributes and "mserp_entrytime" not in attributes  # Time fields are left out


# -- the generated history -------------------------------------------------------------------------------------------


def all_lines(emu: CommerceEmulator) -> list[dict[str, Any]]:
    return list(requests.get(f"{emu.url}/data/{LINES}", headers=AUTH, timeout=30,
                             params={"$filter": "startswith(CardNumber,'521')"}).json()["value"])


def test_generated_lines_hold_every_entry_type_with_vesting_and_never_expiring_points(emu: CommerceEmulator) -> None:
    fresh = start_commerce(cards=30, reward_points=6, levels_per_company=1, seed=5, lines=300)
    try:
        lines = all_lines(fresh)
    finally:
        fresh.stop()
    assert len(lines) == 300
    assert set(Counter(line["EntryType"] for line in lines)) == {"Earn", "Redeem", "ReturnEarned", "Adjust", "Refund"}
    assert any(line["StartDate"] > line["EntryDate"] for line in lines)  # vesting
    assert any(line["ExpirationDate"] == "1900-01-01T00:00:00Z" for line in lines)  # never expires
    for line in lines:
        if line["RewardPointAmountQty"] > 0:
            assert 0 <= line["Remaining"] <= line["RewardPointAmountQty"]
        else:
            assert line["EntryType"] in ("Redeem", "ReturnEarned", "Adjust") and line["Remaining"] <= 0


def test_generated_redemptions_consume_only_lines_of_the_card_or_its_pool(emu: CommerceEmulator) -> None:
    fresh = start_commerce(cards=60, reward_points=6, levels_per_company=1, seed=9, lines=900)
    try:
        lines = all_lines(fresh)
        pools = {card.customer or card.card_number: [c.card_number for c in fresh.ledger.pool_of(card)]
                 for card in fresh.ledger.store.cards.values()}
    finally:
        fresh.stop()
    # Per customer (the unit a pooled redemption can reach): what was consumed never exceeds what was deducted.
    consumed: Counter[str] = Counter()
    deducted: Counter[str] = Counter()
    owner = {c: group for group, cards in pools.items() for c in cards}
    for line in lines:
        group = owner.get(line["CardNumber"], line["CardNumber"])
        if line["RewardPointAmountQty"] > 0:
            consumed[group] += line["RewardPointAmountQty"] - line["Remaining"]
        else:
            deducted[group] += -line["RewardPointAmountQty"] + line["Remaining"]
    assert all(consumed[g] == pytest.approx(deducted[g]) for g in set(consumed) | set(deducted))


def test_the_same_seed_generates_the_same_lines() -> None:
    first = start_commerce(cards=15, reward_points=6, levels_per_company=1, seed=3, lines=120)
    second = start_commerce(cards=15, reward_points=6, levels_per_company=1, seed=3, lines=120)
    try:
        assert all_lines(first) == all_lines(second)
    finally:
        first.stop()
        second.stop()


def test_replacing_a_cards_tiers_raises_deleted_and_created_data_events(emu: CommerceEmulator,
                                                                         admin: CommerceLoyaltyAdmin,
                                                                         receiver: Receiver) -> None:
    card = new_card(emu)
    tier = {"LoyaltyProgramName": "Contoso Rewards", "LoyaltyTierAffiliationName": "Contoso Rewards",
            "LoyaltyTierId": "Silver", "ValidFrom": "2025-01-01T00:00:00Z"}
    admin.set_card_tiers(card, [tier])
    response = requests.post(f"{emu.url}/_emulator/business-events/endpoints", timeout=10, json={
        "url": receiver.url("/tiers"), "entity_sets": ["LoyaltyCardTiersV2"], "format": "data_event"})
    assert response.status_code == 201, response.text
    try:
        admin.set_card_tiers(card, [{**tier, "LoyaltyTierId": "Gold", "ValidFrom": "2026-01-01T00:00:00Z"}])
        assert emu.publisher.flush(timeout=10)
    finally:
        requests.post(f"{emu.url}/_emulator/business-events/reset", timeout=10)
    assert Counter(b["MessageName"] for b in receiver.received("/tiers")) == \
        {"OnExternalDeleted": 1, "OnExternalCreated": 1}


def test_a_reset_regenerates_the_lines_it_is_asked_for() -> None:
    server = start_commerce(cards=10, reward_points=3, levels_per_company=1, lines=40)
    try:
        counts = requests.post(f"{server.url}/_emulator/reset", timeout=10, json={"lines": 75}).json()["counts"]
        assert counts[LINES] == 75
        bad = requests.post(f"{server.url}/_emulator/reset", timeout=10, json={"as_of": "yesterday"})
        assert bad.status_code == 400
    finally:
        server.stop()


def test_a_refused_reset_keeps_the_data_and_settings_it_had() -> None:
    server = start_commerce(cards=10, reward_points=3, levels_per_company=1, lines=40)
    try:
        assert requests.post(f"{server.url}/_emulator/reset", timeout=10,
                             json={"never_expires": "never"}).status_code == 400
        counts = requests.post(f"{server.url}/_emulator/reset", timeout=10, json={}).json()["counts"]
        assert counts[LINES] == 40
    finally:
        server.stop()
