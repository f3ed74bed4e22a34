"""The Commerce emulator's card-tier and transaction entities over real HTTP (docs/protocol-notes.md §3.8, §3.1-§3.3)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from emulators.commerce.entities import (
    LOYALTY_CARD_TIERS_V2,
    RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS,
)
from emulators.commerce.server import CommerceEmulator, format_key, start_commerce

AUTH = {"Authorization": "Bearer test-token"}
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
NS = "Microsoft.Dynamics.DataEntities"
LINES = "RetailLoyaltyCardRewardPointTransactions"
TIERS = "LoyaltyCardTiersV2"
CARDS = 40
LINE_COUNT = 900
PAGE_SIZE = 100


@pytest.fixture(scope="module")
def emu() -> Iterator[CommerceEmulator]:
    server = start_commerce(cards=CARDS, reward_points=6, levels_per_company=1, page_size=PAGE_SIZE, seed=11,
                            lines=LINE_COUNT)
    yield server
    server.stop()


def get(emu: CommerceEmulator, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{emu.url}/data/{path}", params=params or None, headers=AUTH, timeout=30)


def values(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def read_all(emu: CommerceEmulator, path: str, **params: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Every row of a collection read, following nextLinks; and the nextLinks."""
    response = get(emu, path, **params)
    rows, links = values(response), []
    while "@odata.nextLink" in response.json():
        links.append(response.json()["@odata.nextLink"])
        response = requests.get(links[-1], headers=AUTH, timeout=30)
        rows += values(response)
    return rows, links


def metadata(emu: CommerceEmulator) -> ET.Element:
    return ET.fromstring(requests.get(f"{emu.url}/data/$metadata", headers=AUTH, timeout=10).content)


def entity_type(emu: CommerceEmulator, name: str) -> ET.Element:
    root = metadata(emu)
    schema = root.find(f".//{EDM}Schema")
    assert schema is not None
    container = schema.find(f"{EDM}EntityContainer")
    assert container is not None
    [entity_set] = [s for s in container.findall(f"{EDM}EntitySet") if s.get("Name") == name]
    type_name = str(entity_set.get("EntityType")).removeprefix(f"{NS}.")
    [found] = [t for t in schema.findall(f"{EDM}EntityType") if t.get("Name") == type_name]
    return found


def keys_of(element: ET.Element) -> list[str]:
    return [str(ref.get("Name")) for ref in element.findall(f"{EDM}Key/{EDM}PropertyRef")]


def types_of(element: ET.Element) -> dict[str, str]:
    return {str(p.get("Name")): str(p.get("Type")) for p in element.findall(f"{EDM}Property")}


# -- $metadata ------------------------------------------------------------------------------------------------------


def test_metadata_keys_loyalty_card_tiers_by_six_natural_keys_without_data_area_id(emu: CommerceEmulator) -> None:
    element = entity_type(emu, TIERS)
    assert keys_of(element) == ["LoyaltyProgramName", "LoyaltyTierAffiliationName", "LoyaltyTierId",
                                "LoyaltyCardNumber", "ValidFrom", "ValidTo"]
    assert types_of(element) == {
        "LoyaltyProgramName": "Edm.String", "LoyaltyTierAffiliationName": "Edm.String", "LoyaltyTierId": "Edm.String",
        "LoyaltyCardNumber": "Edm.String", "ValidFrom": "Edm.DateTimeOffset", "ValidTo": "Edm.DateTimeOffset",
        "AffiliationType": f"{NS}.RetailAffiliationType"}


def test_metadata_keys_loyalty_tiers_by_program_and_tier_with_a_decimal_level(emu: CommerceEmulator) -> None:
    element = entity_type(emu, "RetailLoyaltyTiers")
    assert keys_of(element) == ["LoyaltyName", "TierId"]
    assert types_of(element) == {"LoyaltyName": "Edm.String", "TierId": "Edm.String",
                                 "ValidDateInterval": "Edm.String", "TierLevel": "Edm.Decimal"}


def test_metadata_keys_transactions_by_the_eight_line_keys_with_exact_types(emu: CommerceEmulator) -> None:
    element = entity_type(emu, LINES)
    assert keys_of(element) == ["LoyaltyTransactionLineNumber", "OperatingUnitNumber", "Terminal", "TransactionNumber",
                                "LoyaltyTransactionCompany", "SalesOrderId", "AdjustmentId", "CardNumber"]
    types = types_of(element)
    assert {name: types[name] for name in (
        "LoyaltyTransactionLineNumber", "RewardPointId", "EntryType", "EntryDate", "EntryTime", "RewardPointAmountQty",
        "Remaining", "StartDate", "ExpirationDate", "LoyaltyTransactionType", "LoyaltyProgramName", "LoyaltyTierId",
        "CustomerAccount", "CardTenderType", "ReceiptId")} == {
        "LoyaltyTransactionLineNumber": "Edm.Decimal", "RewardPointId": "Edm.String",
        "EntryType": f"{NS}.RetailLoyaltyRewardPointEntryType", "EntryDate": "Edm.DateTimeOffset",
        "EntryTime": "Edm.Int32", "RewardPointAmountQty": "Edm.Decimal", "Remaining": "Edm.Decimal",
        "StartDate": "Edm.DateTimeOffset", "ExpirationDate": "Edm.DateTimeOffset",
        "LoyaltyTransactionType": f"{NS}.RetailLoyaltyTransactionType", "LoyaltyProgramName": "Edm.String",
        "LoyaltyTierId": "Edm.String", "CustomerAccount": "Edm.String",
        "CardTenderType": f"{NS}.RetailLoyaltyTenderTypeBase", "ReceiptId": "Edm.String"}


def test_metadata_declares_the_entry_and_transaction_type_enums_by_member_name(emu: CommerceEmulator) -> None:
    root = metadata(emu)
    enums = {e.get("Name"): [(m.get("Name"), m.get("Value")) for m in e.findall(f"{EDM}Member")]
             for e in root.iter(f"{EDM}EnumType")}
    assert enums["RetailLoyaltyRewardPointEntryType"] == [
        ("Earn", "1"), ("Redeem", "2"), ("ReturnEarned", "3"), ("Adjust", "4"), ("Refund", "5")]
    assert enums["RetailAffiliationType"] == [("General", "0"), ("Loyalty", "1")]
    assert [name for name, _ in enums["RetailLoyaltyTransactionType"]] == [
        "RetailTransaction", "SalesOrder", "LoyaltyAdjustment", "NonTransactionalActivity"]


def test_none_of_the_three_sets_has_a_modified_time(emu: CommerceEmulator) -> None:
    for name in (TIERS, "RetailLoyaltyTiers", LINES):
        assert not [p for p in types_of(entity_type(emu, name)) if "modified" in p.lower()]


# -- reads ------------------------------------------------------------------------------------------------------------


def test_transaction_lines_page_through_next_links_with_skip_and_top(emu: CommerceEmulator) -> None:
    rows, links = read_all(emu, LINES)
    assert len(rows) == LINE_COUNT
    keys = {format_key(RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS, row) for row in rows}
    assert len(keys) == LINE_COUNT  # every line once
    assert len(links) == LINE_COUNT // PAGE_SIZE - 1
    query = parse_qs(urlsplit(links[0]).query)
    assert query["$skip"] == [str(PAGE_SIZE)] and query["$top"] == [str(LINE_COUNT - PAGE_SIZE)]


def test_a_top_beyond_the_page_size_pages_with_what_is_left_of_it(emu: CommerceEmulator) -> None:
    rows, links = read_all(emu, LINES, **{"$top": "250", "$filter": "CardNumber ge '52100000005'"})
    assert len(rows) == 250
    assert [parse_qs(urlsplit(link).query)["$top"] for link in links] == [["150"], ["50"]]
    everything, _ = read_all(emu, LINES)
    assert rows == [r for r in everything if r["CardNumber"] >= "52100000005"][:250]


def test_the_service_document_lists_the_three_sets(emu: CommerceEmulator) -> None:
    names = {entry["name"] for entry in values(get(emu, ""))}
    assert {TIERS, "RetailLoyaltyTiers", LINES} <= names


def test_a_card_range_filter_returns_exactly_those_cards_lines_in_card_order(emu: CommerceEmulator) -> None:
    everything, _ = read_all(emu, LINES)
    low, high = "52100000010", "52100000020"
    rows, _ = read_all(emu, LINES, **{"$filter": f"CardNumber gt '{low}' and CardNumber le '{high}'",
                                      "$orderby": "CardNumber"})
    expected = [r for r in everything if low < r["CardNumber"] <= high]
    assert rows == expected and rows
    assert [r["CardNumber"] for r in rows] == sorted(r["CardNumber"] for r in rows)


def test_an_or_chain_of_card_numbers_reads_a_batch_of_cards(emu: CommerceEmulator) -> None:
    wanted = ["52100000003", "52100000017", "52100000031"]
    rows, _ = read_all(emu, LINES, **{"$filter": " or ".join(f"CardNumber eq '{c}'" for c in wanted)})
    assert {r["CardNumber"] for r in rows} == set(wanted)


def test_an_entry_date_filter_returns_only_recent_lines_and_counts_them(emu: CommerceEmulator) -> None:
    everything, _ = read_all(emu, LINES)
    recent = [r for r in everything if r["EntryDate"] >= "2026-10-01T00:00:00Z"]
    response = get(emu, LINES, **{"$filter": "EntryDate ge 2026-10-01T00:00:00Z", "$count": "true", "$top": "5"})
    assert response.json()["@odata.count"] == len(recent) > 5
    assert values(response) == recent[:5]


def test_select_and_orderby_on_lines_behave_as_for_other_sets(emu: CommerceEmulator) -> None:
    rows = values(get(emu, LINES, **{"$select": "Remaining,CardNumber", "$orderby": "Remaining desc", "$top": "3"}))
    assert [list(r) for r in rows] == [["@odata.etag", "CardNumber", "Remaining"]] * 3  # metadata order
    everything, _ = read_all(emu, LINES)
    assert [r["Remaining"] for r in rows] == sorted((r["Remaining"] for r in everything), reverse=True)[:3]


def test_cross_company_does_not_change_a_read_of_the_shared_entities(emu: CommerceEmulator) -> None:
    for name in (TIERS, LINES):
        plain = get(emu, name, **{"$count": "true", "$top": "0"}).json()["@odata.count"]
        cross = get(emu, name, **{"$count": "true", "$top": "0", "cross-company": "true"}).json()["@odata.count"]
        assert plain == cross > 0


def test_read_rows_of_the_three_sets_carry_no_null_string(emu: CommerceEmulator) -> None:
    for name in (TIERS, "RetailLoyaltyTiers", LINES):
        rows, _ = read_all(emu, name)
        strings = {p for p, t in types_of(entity_type(emu, name)).items() if t == "Edm.String"}
        assert all(row[p] is not None for row in rows for p in strings)


def test_tier_levels_filter_as_decimals(emu: CommerceEmulator) -> None:
    rows = values(get(emu, "RetailLoyaltyTiers", **{"$filter": "LoyaltyName eq 'Contoso Rewards' and TierLevel gt 2"}))
    assert {r["TierId"] for r in rows} == {"Gold", "Platinum"}


# -- keys ---------------------------------------------------------------------------------------------------------


def test_a_card_tier_is_addressed_with_bare_date_time_offset_key_parts(emu: CommerceEmulator) -> None:
    row = values(get(emu, TIERS, **{"$filter": "ValidTo eq 1900-01-01T00:00:00Z", "$top": "1"}))[0]
    key = format_key(LOYALTY_CARD_TIERS_V2, row)
    assert ",ValidFrom=" + row["ValidFrom"] + ",ValidTo=1900-01-01T00:00:00Z" in key  # unquoted
    response = get(emu, f"{TIERS}({key})")
    assert response.status_code == 200, response.text
    assert {k: v for k, v in response.json().items() if not k.startswith("@")} == \
        {k: v for k, v in row.items() if not k.startswith("@")}


def test_a_quoted_date_key_part_is_refused(emu: CommerceEmulator) -> None:
    row = values(get(emu, TIERS, **{"$top": "1"}))[0]
    key = format_key(LOYALTY_CARD_TIERS_V2, row).replace(f"ValidFrom={row['ValidFrom']}",
                                                         f"ValidFrom='{row['ValidFrom']}'")
    response = get(emu, f"{TIERS}({key})")
    assert response.status_code == 400
    assert "Edm.DateTimeOffset" in response.json()["error"]["message"]


def test_a_date_key_part_without_its_offset_is_refused(emu: CommerceEmulator) -> None:
    row = values(get(emu, TIERS, **{"$top": "1"}))[0]
    key = format_key(LOYALTY_CARD_TIERS_V2, row).replace(row["ValidFrom"], row["ValidFrom"].removesuffix("Z"))
    assert get(emu, f"{TIERS}({key})").status_code == 400


def test_a_key_missing_one_of_its_six_parts_is_refused(emu: CommerceEmulator) -> None:
    row = values(get(emu, TIERS, **{"$top": "1"}))[0]
    key = format_key(LOYALTY_CARD_TIERS_V2, row)
    response = get(emu, f"{TIERS}({key.rsplit(',', 1)[0]})")
    assert response.status_code == 400
    assert "number of keys" in response.json()["error"]["message"]


def test_a_transaction_line_is_addressed_by_its_eight_keys_with_a_bare_line_number(emu: CommerceEmulator) -> None:
    row = values(get(emu, LINES, **{"$top": "1", "$skip": "7"}))[0]
    key = format_key(RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS, row)
    assert key.startswith(f"LoyaltyTransactionLineNumber={row['LoyaltyTransactionLineNumber']},")
    response = get(emu, f"{LINES}({key})")
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == row["@odata.etag"]
    quoted = key.replace("LoyaltyTransactionLineNumber=1,", "LoyaltyTransactionLineNumber='1',", 1)
    assert get(emu, f"{LINES}({quoted})").status_code == 400


def test_a_missing_transaction_line_is_404(emu: CommerceEmulator) -> None:
    row = values(get(emu, LINES, **{"$top": "1"}))[0]
    key = format_key(RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS, {**row, "LoyaltyTransactionLineNumber": 99})
    assert get(emu, f"{LINES}({key})").status_code == 404


# -- writes -----------------------------------------------------------------------------------------------------------


def tier_row(**overrides: Any) -> dict[str, Any]:
    row = {"LoyaltyProgramName": "Contoso Rewards", "LoyaltyTierAffiliationName": "Contoso Rewards",
           "LoyaltyTierId": "Gold", "LoyaltyCardNumber": "52100000001", "ValidFrom": "2030-01-01T00:00:00Z",
           "ValidTo": "2030-12-31T00:00:00Z", "AffiliationType": "Loyalty"}
    row.update(overrides)
    return row


def post(emu: CommerceEmulator, name: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{emu.url}/data/{name}", json=body, headers=AUTH, timeout=10)


def test_a_card_tier_posted_then_read_by_key_and_deleted(emu: CommerceEmulator) -> None:
    response = post(emu, TIERS, tier_row(ValidFrom="2031-01-01T00:00:00Z", ValidTo="2031-06-30T00:00:00Z"))
    assert response.status_code == 201, response.text
    assert "ValidFrom=2031-01-01T00:00:00Z" in response.headers["Location"]
    location = response.headers["Location"]
    assert requests.get(location, headers=AUTH, timeout=10).status_code == 200
    assert requests.delete(location, headers=AUTH, timeout=10).status_code == 204
    assert requests.get(location, headers=AUTH, timeout=10).status_code == 404


def test_a_card_tier_with_a_null_key_string_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, TIERS, tier_row(LoyaltyProgramName=None))
    assert response.status_code == 400
    assert "null value" in response.json()["error"]["message"]


def test_a_card_tier_with_an_unknown_property_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, TIERS, tier_row(Description="not on the entity"))
    assert response.status_code == 400
    assert "'Description' does not exist" in response.json()["error"]["message"]


def test_an_affiliation_type_that_is_no_member_name_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, TIERS, tier_row(AffiliationType="1", ValidFrom="2032-01-01T00:00:00Z"))
    assert response.status_code == 400
    assert "RetailAffiliationType" in response.json()["error"]["innererror"]["message"]


def line_row(**overrides: Any) -> dict[str, Any]:
    row = {"LoyaltyTransactionLineNumber": 1, "OperatingUnitNumber": "052", "Terminal": "052-9",
           "TransactionNumber": "052-9-TEST0001", "LoyaltyTransactionCompany": "usmf", "SalesOrderId": "",
           "AdjustmentId": "", "CardNumber": "52100000002", "EntryType": "Earn", "RewardPointAmountQty": 25,
           "Remaining": 25, "EntryDate": "2026-11-30T00:00:00Z", "StartDate": "2026-11-30T00:00:00Z",
           "ExpirationDate": "2027-11-30T00:00:00Z", "RewardPointId": "PTS-0001", "EntryTime": 3600,
           "LoyaltyTransactionType": "RetailTransaction"}
    row.update(overrides)
    return row


def test_a_posted_line_is_read_back_patched_and_deleted(emu: CommerceEmulator) -> None:
    assert post(emu, LINES, line_row(ReceiptId=None)).status_code == 400  # F&O has no null strings: send ""
    response = post(emu, LINES, line_row())
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["ReceiptId"] == ""  # an omitted string is stored as "" (F&O has no null strings)
    assert created["Remaining"] == 25 and created["CustomerAccount"] is not None
    location = response.headers["Location"]
    patched = requests.patch(location, json={"Remaining": 10}, headers={**AUTH, "If-Match": created["@odata.etag"]},
                             timeout=10)
    assert patched.status_code == 204, patched.text
    assert requests.get(location, headers=AUTH, timeout=10).json()["Remaining"] == 10
    stale = requests.patch(location, json={"Remaining": 5}, headers={**AUTH, "If-Match": created["@odata.etag"]},
                           timeout=10)
    assert stale.status_code == 412
    assert requests.delete(location, headers=AUTH, timeout=10).status_code == 204
    assert requests.get(location, headers=AUTH, timeout=10).status_code == 404


def test_a_line_with_an_unknown_property_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, LINES, line_row(RemainRewardPointAmountQty=5, TransactionNumber="052-9-TEST0002"))
    assert response.status_code == 400
    assert "'RemainRewardPointAmountQty' does not exist" in response.json()["error"]["message"]


def test_a_line_with_a_null_key_string_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, LINES, line_row(Terminal=None, TransactionNumber="052-9-TEST0003"))
    assert response.status_code == 400
    assert "null value" in response.json()["error"]["message"]


def test_a_line_amount_sent_as_a_string_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, LINES, line_row(RewardPointAmountQty="25", TransactionNumber="052-9-TEST0004"))
    assert response.status_code == 400
    assert "Edm.Decimal" in response.json()["error"]["message"]


def test_a_line_for_a_card_that_does_not_exist_is_refused(emu: CommerceEmulator) -> None:
    response = post(emu, LINES, line_row(CardNumber="NO-SUCH-CARD", TransactionNumber="052-9-TEST0005"))
    assert response.status_code == 400
    assert "NO-SUCH-CARD" in response.json()["error"]["innererror"]["message"]


# -- $filter literal types ----------------------------------------------------------------------------------------


def test_a_date_compared_with_a_quoted_string_is_refused_as_odata_lib_does(emu: CommerceEmulator) -> None:
    response = get(emu, TIERS, **{"$filter": "ValidFrom gt '2024-01-01T00:00:00Z'"})
    assert response.status_code == 400
    assert ("Found operand types 'Edm.DateTimeOffset' and 'Edm.String' for operator kind 'GreaterThan'"
            in response.json()["error"]["message"])


def test_a_decimal_compared_with_a_quoted_number_is_refused(emu: CommerceEmulator) -> None:
    response = get(emu, LINES, **{"$filter": "Remaining gt '0'"})
    assert response.status_code == 400
    assert "'Edm.Decimal' and 'Edm.String'" in response.json()["error"]["message"]


def test_a_bare_date_and_a_bare_number_compare_with_their_properties(emu: CommerceEmulator) -> None:
    assert get(emu, TIERS, **{"$filter": "ValidFrom gt 2024-01-01T00:00:00Z", "$top": "1"}).status_code == 200
    assert get(emu, LINES, **{"$filter": "Remaining gt 0 and LoyaltyTransactionLineNumber eq 1",
                              "$top": "1"}).status_code == 200


def test_an_hq_edit_of_a_line_changes_what_reads_return(emu: CommerceEmulator) -> None:
    row = values(get(emu, LINES, **{"$top": "1", "$skip": "3"}))[0]
    key = {k: row[k] for k in RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS.keys}
    response = requests.post(f"{emu.url}/_emulator/rows/{LINES}", json={"key": key, "changes": {"Remaining": 3}},
                             timeout=10)
    assert response.status_code == 200, response.text
    read = get(emu, f"{LINES}({format_key(RETAIL_LOYALTY_CARD_REWARD_POINT_TRANSACTIONS, row)})").json()
    assert read["Remaining"] == 3 and read["@odata.etag"] != row["@odata.etag"]


# -- narrowing never drops a match --------------------------------------------------------------------------------

NARROWED_FILTERS: list[tuple[str, Any]] = [
    ("CardNumber ge '52100000030' or RewardPointId eq 'PTS-0002'",
     lambda r: r["CardNumber"] >= "52100000030" or r["RewardPointId"] == "PTS-0002"),
    ("not (CardNumber lt '52100000030')", lambda r: r["CardNumber"] >= "52100000030"),
    ("'52100000005' ge CardNumber", lambda r: r["CardNumber"] <= "52100000005"),
    ("CardNumber eq '*0000001*'", lambda r: "0000001" in r["CardNumber"]),
    ("CardNumber gt '52100000010' and CardNumber lt '52100000012'", lambda r: r["CardNumber"] == "52100000011"),
    ("EntryDate lt 2024-06-01T00:00:00Z", lambda r: r["EntryDate"] < "2024-06-01T00:00:00Z"),
    ("EntryDate gt 2026-06-01T12:00:00Z", lambda r: r["EntryDate"] > "2026-06-01T12:00:00Z"),
    ("EntryDate lt 2024-06-01T00:00:00Z or EntryDate ge 2026-11-01T00:00:00Z",
     lambda r: r["EntryDate"] < "2024-06-01T00:00:00Z" or r["EntryDate"] >= "2026-11-01T00:00:00Z"),
    ("EntryDate gt 2026-10-01T00:00:00Z or (EntryDate eq 2026-10-01T00:00:00Z and EntryTime ge 43200)",
     lambda r: r["EntryDate"] > "2026-10-01T00:00:00Z" or (r["EntryDate"] == "2026-10-01T00:00:00Z"
                                                            and r["EntryTime"] >= 43200)),
    ("CardNumber eq '52100000007' and Remaining gt 0",
     lambda r: r["CardNumber"] == "52100000007" and r["Remaining"] > 0),
    ("contains(CardNumber,'0003') and CardTenderType eq Microsoft.Dynamics.DataEntities.RetailLoyaltyTenderTypeBase"
     "'AsContactTender'", lambda r: "0003" in r["CardNumber"] and r["CardTenderType"] == "AsContactTender"),
]


@pytest.mark.parametrize(("text", "matches"), NARROWED_FILTERS, ids=[t for t, _ in NARROWED_FILTERS])
def test_a_filter_returns_every_line_it_matches_and_no_other(emu: CommerceEmulator, text: str, matches: Any) -> None:
    everything, _ = read_all(emu, LINES)
    rows, _ = read_all(emu, LINES, **{"$filter": text})
    assert rows == [r for r in everything if matches(r)]


# -- the generated card tiers ---------------------------------------------------------------------------------------

AS_OF = "2026-12-01T00:00:00Z"
OPEN = "1900-01-01T00:00:00Z"


def test_generated_card_tiers_hold_past_current_future_open_and_overlapping_grants() -> None:
    server = start_commerce(cards=300, reward_points=2, levels_per_company=1, lines=0)
    try:
        rows, _ = read_all(server, TIERS)
        levels = {(r["LoyaltyName"], r["TierId"]): r["TierLevel"] for r in values(get(server, "RetailLoyaltyTiers"))}
    finally:
        server.stop()
    tiers = [r for r in rows if r["LoyaltyTierId"]]
    current = [r for r in tiers if r["ValidFrom"] <= AS_OF and (r["ValidTo"] == OPEN or r["ValidTo"] >= AS_OF)]
    assert any(r["ValidTo"] != OPEN and r["ValidTo"] < AS_OF for r in tiers)  # past
    assert any(r["ValidFrom"] > AS_OF for r in tiers)  # future
    assert any(r["ValidTo"] == OPEN for r in tiers)  # open-ended
    per_card: dict[str, int] = {}
    for r in current:
        per_card[r["LoyaltyCardNumber"]] = per_card.get(r["LoyaltyCardNumber"], 0) + 1
    assert max(per_card.values()) >= 2  # a promotion on top of the tier held
    memberships = [r for r in rows if not r["LoyaltyTierId"]]
    assert {r["AffiliationType"] for r in memberships} == {"Loyalty", "General"}
    assert len({r["LoyaltyCardNumber"] for r in memberships if r["AffiliationType"] == "Loyalty"}) == 300
    assert all((r["LoyaltyProgramName"], r["LoyaltyTierId"]) in levels for r in tiers)


@pytest.mark.parametrize("orderby", ["CardNumber,RewardPointId desc,Remaining", "CardNumber,Remaining desc,EntryDate",
                                     "CardNumber,ExpirationDate desc",
                                     "CardNumber desc,EntryDate", "Remaining desc,CardNumber"])
def test_lines_come_in_the_order_asked_for_ties_in_entry_order(emu: CommerceEmulator, orderby: str) -> None:
    everything, _ = read_all(emu, LINES)
    rows, _ = read_all(emu, LINES, **{"$filter": "CardNumber le '52100000020'", "$orderby": orderby})
    expected = [r for r in everything if r["CardNumber"] <= "52100000020"]
    for item in reversed(orderby.split(",")):
        name, _, direction = item.partition(" ")
        expected.sort(key=lambda r, name=name: r[name], reverse=direction == "desc")  # type: ignore[misc]
    assert rows == expected
