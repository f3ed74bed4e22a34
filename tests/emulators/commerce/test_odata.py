"""The Commerce emulator's F&O OData behaviour over real HTTP (docs/protocol-notes.md §3, checklist §5.2)."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from emulators.commerce.server import CommerceEmulator, start_commerce
from tests.builders import card_row, level_row, reward_point_row

AUTH = {"Authorization": "Bearer test-token"}
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
CARDS = 35
PAGE_SIZE = 10


@pytest.fixture(scope="module")
def emu() -> Iterator[CommerceEmulator]:
    server = start_commerce(cards=CARDS, reward_points=20, levels_per_company=4, page_size=PAGE_SIZE, seed=7)
    yield server
    server.stop()


def get(emu: CommerceEmulator, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{emu.url}/data/{path}", params=params or None, headers=AUTH, timeout=10)


def post(emu: CommerceEmulator, entity_set: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{emu.url}/data/{entity_set}", json=body, headers=AUTH, timeout=10)


def patch(emu: CommerceEmulator, path: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.patch(f"{emu.url}/data/{path}", json=body, headers={**AUTH, **headers}, timeout=10)


def values(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def infolog(response: requests.Response) -> str:
    error = response.json()["error"]
    assert error["message"] == "An error has occurred."
    return str(error["innererror"]["message"])


def new_card(number: str, **overrides: Any) -> dict[str, Any]:
    return card_row(CardNumber=number, ReplacementCardNumber="", **overrides)


# -- authentication and headers --------------------------------------------------------------


def test_request_without_bearer_token_is_401(emu: CommerceEmulator) -> None:
    response = requests.get(f"{emu.url}/data/RetailLoyaltyCards", timeout=10)
    assert response.status_code == 401


def test_request_with_empty_bearer_token_is_401(emu: CommerceEmulator) -> None:
    response = requests.get(f"{emu.url}/data/$metadata", headers={"Authorization": "Bearer "}, timeout=10)
    assert response.status_code == 401


def test_json_responses_carry_odata_version_and_minimal_metadata(emu: CommerceEmulator) -> None:
    response = get(emu, "RetailLoyaltyCards", **{"$top": "1"})
    assert response.headers["OData-Version"] == "4.0"
    assert response.headers["Content-Type"].startswith("application/json; odata.metadata=minimal")


def test_service_document_lists_the_entity_sets(emu: CommerceEmulator) -> None:
    names = {entry["name"] for entry in values(get(emu, ""))}
    assert {"RetailLoyaltyCards", "LoyaltyLevels", "RetailLoyaltyRewardPoints", "LegalEntities"} <= names


# -- $metadata ---------------------------------------------------------------------------------


def _schema(emu: CommerceEmulator) -> ET.Element:
    response = get(emu, "$metadata")
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    schema = root.find(f".//{EDM}Schema")
    assert schema is not None and schema.get("Namespace") == "Microsoft.Dynamics.DataEntities"
    return schema


def test_metadata_declares_the_loyalty_entity_types_with_their_keys(emu: CommerceEmulator) -> None:
    schema = _schema(emu)
    keys = {
        et.get("Name"): [ref.get("Name") for ref in et.iter(f"{EDM}PropertyRef")]
        for et in schema.iter(f"{EDM}EntityType")
    }
    assert keys["RetailLoyaltyCard"] == ["CardNumber"]
    assert keys["LoyaltyLevel"] == ["dataAreaId", "LevelPhrase"]
    assert keys["RetailLoyaltyRewardPoint"] == ["RewardPointId"]


def test_metadata_declares_enum_types_with_member_values(emu: CommerceEmulator) -> None:
    enums = {
        et.get("Name"): {m.get("Name"): int(m.get("Value", "-1")) for m in et.iter(f"{EDM}Member")}
        for et in _schema(emu).iter(f"{EDM}EnumType")
    }
    assert enums["RetailLoyaltyTenderTypeBase"] == {"AsCardTender": 0, "AsContactTender": 1, "NoTender": 2, "Blocked": 3}
    assert enums["RetailLoyaltyRewardPointType"] == {"Quantity": 1, "Amount": 2}
    assert enums["RetailDayMonthYear"] == {"Day": 0, "Month": 1, "Year": 2}
    assert enums["NoYes"] == {"No": 0, "Yes": 1}


def test_metadata_types_enum_properties_with_their_enum_type(emu: CommerceEmulator) -> None:
    card = next(et for et in _schema(emu).iter(f"{EDM}EntityType") if et.get("Name") == "RetailLoyaltyCard")
    types = {p.get("Name"): p.get("Type") for p in card.iter(f"{EDM}Property")}
    assert types["CardTenderType"] == "Microsoft.Dynamics.DataEntities.RetailLoyaltyTenderTypeBase"
    assert types["LoyaltyEnrollmentDate"] == "Edm.DateTimeOffset"


# -- company scope -----------------------------------------------------------------------------


def test_company_specific_set_returns_only_the_default_company(emu: CommerceEmulator) -> None:
    companies = {row["dataAreaId"] for row in values(get(emu, "LoyaltyLevels"))}
    assert companies == {"usmf"}


def test_cross_company_returns_rows_of_every_company(emu: CommerceEmulator) -> None:
    companies = {row["dataAreaId"] for row in values(get(emu, "LoyaltyLevels", **{"cross-company": "true"}))}
    assert companies == {"usmf", "usrt", "demf"}


def test_data_area_filter_with_cross_company_returns_that_company_only(emu: CommerceEmulator) -> None:
    rows = values(get(emu, "LoyaltyLevels", **{"cross-company": "true", "$filter": "dataAreaId eq 'USRT'"}))
    assert rows and {row["dataAreaId"] for row in rows} == {"usrt"}


def test_cross_company_entity_ignores_the_company_scope(emu: CommerceEmulator) -> None:
    response = get(emu, "RetailLoyaltyRewardPoints", **{"$count": "true", "$top": "0"})
    assert response.json()["@odata.count"] == emu.counts()["RetailLoyaltyRewardPoints"]


def test_legal_entities_list_the_seeded_companies(emu: CommerceEmulator) -> None:
    ids = sorted(row["LegalEntityId"] for row in values(get(emu, "LegalEntities")))
    assert ids == ["demf", "usmf", "usrt"]


# -- paging and query options ------------------------------------------------------------------


def test_first_page_is_capped_at_page_size_with_a_skip_top_next_link(emu: CommerceEmulator) -> None:
    body = get(emu, "RetailLoyaltyCards", **{"cross-company": "true"}).json()
    assert len(body["value"]) == PAGE_SIZE
    query = parse_qs(urlsplit(body["@odata.nextLink"]).query)
    assert query["$skip"] == [str(PAGE_SIZE)]
    assert "$top" in query
    assert query["cross-company"] == ["true"]


def test_following_next_links_to_the_end_returns_every_row_once(emu: CommerceEmulator) -> None:
    total = get(emu, "RetailLoyaltyCards", **{"$count": "true", "$top": "0"}).json()["@odata.count"]
    url: str | None = f"{emu.url}/data/RetailLoyaltyCards?$select=CardNumber"
    seen: list[str] = []
    while url:
        body = requests.get(url, headers=AUTH, timeout=10).json()
        seen += [row["CardNumber"] for row in body["value"]]
        url = body.get("@odata.nextLink")
    assert len(seen) == total == len(set(seen))


def test_client_top_limits_the_result_across_pages(emu: CommerceEmulator) -> None:
    url: str | None = f"{emu.url}/data/RetailLoyaltyCards?$top=15"
    count = 0
    while url:
        body = requests.get(url, headers=AUTH, timeout=10).json()
        count += len(body["value"])
        url = body.get("@odata.nextLink")
    assert count == 15


def test_a_keyset_page_is_the_same_with_and_without_count(emu: CommerceEmulator) -> None:
    cards = [row["CardNumber"] for row in values(get(emu, "RetailLoyaltyCards", **{"$top": "40"}))]
    query = {"$filter": f"CardNumber gt '{cards[4]}'", "$orderby": "CardNumber", "$top": str(PAGE_SIZE + 3),
             "$select": "CardNumber"}
    counted = get(emu, "RetailLoyaltyCards", **query, **{"$count": "true"}).json()
    keyset = get(emu, "RetailLoyaltyCards", **query).json()  # the emulator's early-stopping path

    assert keyset["value"] == counted["value"] and keyset["value"][0]["CardNumber"] == cards[5]
    assert keyset["@odata.nextLink"] == counted["@odata.nextLink"].replace("&%24count=true", "").replace(
        "&$count=true", "")


def test_rows_come_in_key_order_without_orderby(emu: CommerceEmulator) -> None:
    numbers = [row["CardNumber"] for row in values(get(emu, "RetailLoyaltyCards"))]
    assert numbers == sorted(numbers)


def test_skip_and_top_select_a_window(emu: CommerceEmulator) -> None:
    all_ids = [r["RewardPointId"] for r in values(get(emu, "RetailLoyaltyRewardPoints", **{"$top": "8"}))]
    window = [r["RewardPointId"] for r in values(get(emu, "RetailLoyaltyRewardPoints", **{"$skip": "3", "$top": "2"}))]
    assert window == all_ids[3:5]


def test_orderby_descending_sorts_rows(emu: CommerceEmulator) -> None:
    rows = values(get(emu, "RetailLoyaltyRewardPoints", **{"$orderby": "RedeemRanking desc"}))
    rankings = [row["RedeemRanking"] for row in rows]
    assert rankings == sorted(rankings, reverse=True)


def test_select_returns_only_the_selected_properties_and_the_etag(emu: CommerceEmulator) -> None:
    row = values(get(emu, "RetailLoyaltyCards", **{"$select": "CardNumber,PartyNumber", "$top": "1"}))[0]
    assert set(row) == {"@odata.etag", "CardNumber", "PartyNumber"}


def test_in_operator_is_rejected_with_400(emu: CommerceEmulator) -> None:
    response = get(emu, "RetailLoyaltyCards", **{"$filter": "CardNumber in ('52100000001','52100000002')"})
    assert response.status_code == 400


def test_unknown_property_in_filter_is_400(emu: CommerceEmulator) -> None:
    response = get(emu, "RetailLoyaltyCards", **{"$filter": "Bogus eq 'x'"})
    assert response.status_code == 400


def test_enum_literal_filter_matches_member_names(emu: CommerceEmulator) -> None:
    literal = "Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    rows = values(get(emu, "RetailLoyaltyRewardPoints", **{"$filter": f"Redeemable eq {literal}"}))
    assert rows and {row["Redeemable"] for row in rows} == {"Yes"}


def test_wildcard_eq_filter_matches_a_substring(emu: CommerceEmulator) -> None:
    rows = values(get(emu, "LoyaltyLevels", **{"$filter": "LevelPhrase eq '*ilv*'"}))
    assert [row["LevelPhrase"] for row in rows] == ["Silver"]


def test_enums_are_serialised_as_member_names(emu: CommerceEmulator) -> None:
    row = values(get(emu, "RetailLoyaltyRewardPoints", **{"$top": "1"}))[0]
    assert row["RewardPointType"] in ("Quantity", "Amount")
    assert row["Redeemable"] in ("Yes", "No")


def test_int64_maximum_points_above_int32_round_trip(emu: CommerceEmulator) -> None:
    rows = values(get(emu, "RetailLoyaltyRewardPoints", **{"$filter": "MaximumLoyaltyRewardPoints gt 2147483647"}))
    assert rows and all(row["MaximumLoyaltyRewardPoints"] > 2**31 for row in rows)


# -- single entities ---------------------------------------------------------------------------


def test_get_by_key_returns_the_entity_with_context_and_etag(emu: CommerceEmulator) -> None:
    response = get(emu, "RetailLoyaltyCards('52100000003')")
    body = response.json()
    assert response.status_code == 200
    assert body["@odata.context"].endswith("/data/$metadata#RetailLoyaltyCards/$entity")
    assert body["CardNumber"] == "52100000003"
    assert response.headers["ETag"] == body["@odata.etag"]


def test_etag_is_weak_base64_of_recversion_and_recid(emu: CommerceEmulator) -> None:
    etag = get(emu, "RetailLoyaltyCards('52100000004')").headers["ETag"]
    match = re.fullmatch(r'W/"([A-Za-z0-9+/=]+)"', etag)
    assert match and re.fullmatch(r"\d+,\d+", base64.b64decode(match.group(1)).decode())


def test_get_by_composite_key_with_other_company_and_other_case(emu: CommerceEmulator) -> None:
    body = get(emu, "LoyaltyLevels(dataAreaId='USRT',LevelPhrase='gold')").json()
    assert (body["dataAreaId"], body["LevelPhrase"]) == ("usrt", "Gold")


def test_get_by_percent_encoded_key_with_a_doubled_quote(emu: CommerceEmulator) -> None:
    assert post(emu, "RetailLoyaltyCards", new_card("O'NEIL 7&8")).status_code == 201
    response = requests.get(f"{emu.url}/data/RetailLoyaltyCards(%27O%27%27NEIL%207%268%27)", headers=AUTH, timeout=10)
    assert response.status_code == 200
    assert response.json()["CardNumber"] == "O'NEIL 7&8"


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize(("card", "encoded"), [("LC/9", "LC%2F9"), ("LC\\9", "LC%5C9")])
def test_a_key_holding_a_slash_or_backslash_is_no_route(emu: CommerceEmulator, method: str, card: str,
                                                         encoded: str) -> None:
    card, encoded = f"{card}{method}", f"{encoded}{method}"
    assert post(emu, "RetailLoyaltyCards", new_card(card)).status_code == 201
    response = requests.request(method, f"{emu.url}/data/RetailLoyaltyCards(%27{encoded}%27)", timeout=10,
                                headers={**AUTH, "If-Match": "*"}, json={"PartyNumber": "X"} if method == "PATCH" else None)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No route data was found for this request."
    assert values(get(emu, f"RetailLoyaltyCards?$filter=CardNumber eq '{encoded}'"))[0]["PartyNumber"] != "X"


def test_a_key_holding_a_slash_is_read_with_filter_where_eq_with_a_star_is_a_wildcard(emu: CommerceEmulator) -> None:
    for card in ("LC/1*", "LC/10", "LC/1x"):
        assert post(emu, "RetailLoyaltyCards", new_card(card)).status_code == 201
    found = {row["CardNumber"] for row in values(get(emu, "RetailLoyaltyCards?$filter=CardNumber eq 'LC%2F1*'"))}
    assert found == {"LC/1*", "LC/10", "LC/1x"}


def test_composite_key_without_data_area_id_is_400(emu: CommerceEmulator) -> None:
    assert get(emu, "LoyaltyLevels(LevelPhrase='Gold')").status_code == 400


def test_missing_entity_is_404_with_error_body(emu: CommerceEmulator) -> None:
    response = get(emu, "RetailLoyaltyCards('NO-SUCH-CARD')")
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("No HTTP resource was found")


def test_unknown_entity_set_is_404(emu: CommerceEmulator) -> None:
    assert get(emu, "RetailLoyaltyCardz").status_code == 404


# -- writes ------------------------------------------------------------------------------------


def test_post_returns_201_with_the_full_entity_location_and_etag(emu: CommerceEmulator) -> None:
    response = post(emu, "RetailLoyaltyCards", {"CardNumber": "LC-POST-1"})
    body = response.json()
    assert response.status_code == 201
    assert body["CardTenderType"] == "AsCardTender"  # default filled
    assert body["LoyaltyEnrollmentTime"] == 0
    assert body["@odata.etag"].startswith('W/"')
    assert response.headers["Location"].endswith("/data/RetailLoyaltyCards('LC-POST-1')")


def test_post_without_data_area_id_writes_to_the_default_company(emu: CommerceEmulator) -> None:
    response = post(emu, "LoyaltyLevels", {"LevelPhrase": "Copper", "LevelDescription": "Copper tier"})
    assert response.status_code == 201
    assert response.json()["dataAreaId"] == "usmf"


def test_post_with_data_area_id_writes_to_that_company(emu: CommerceEmulator) -> None:
    response = post(emu, "LoyaltyLevels", level_row(dataAreaId="DEMF", LevelPhrase="Kupfer"))
    assert response.json()["dataAreaId"] == "demf"
    assert get(emu, "LoyaltyLevels(dataAreaId='demf',LevelPhrase='Kupfer')").status_code == 200


def test_post_keeps_only_the_date_of_an_enrollment_timestamp(emu: CommerceEmulator) -> None:
    body = post(emu, "RetailLoyaltyCards", new_card("LC-DATE-1", LoyaltyEnrollmentDate="2024-03-01T15:30:00Z")).json()
    assert body["LoyaltyEnrollmentDate"] == "2024-03-01T00:00:00Z"


def test_post_accepts_int64_beyond_int32(emu: CommerceEmulator) -> None:
    body = post(emu, "RetailLoyaltyRewardPoints", reward_point_row(RewardPointId="BIG-1")).json()
    assert body["MaximumLoyaltyRewardPoints"] == 5_000_000_000


def test_duplicate_post_is_400_with_an_infolog_error(emu: CommerceEmulator) -> None:
    post(emu, "RetailLoyaltyCards", new_card("LC-DUP-1"))
    response = post(emu, "RetailLoyaltyCards", new_card("lc-dup-1"))
    assert response.status_code == 400
    message = infolog(response)
    assert message.startswith("Write failed for table row of type 'RetailLoyaltyCardEntity'. Infolog:")
    assert "already exists" in message


def test_unknown_enum_member_is_400_with_an_infolog_error(emu: CommerceEmulator) -> None:
    response = post(emu, "RetailLoyaltyCards", new_card("LC-ENUM-1", CardTenderType="Gold"))
    assert response.status_code == 400
    assert "RetailLoyaltyTenderTypeBase" in infolog(response)


def test_missing_mandatory_field_is_400_with_an_infolog_error(emu: CommerceEmulator) -> None:
    response = post(emu, "RetailLoyaltyRewardPoints", {"RewardPointId": "NO-TYPE"})
    assert response.status_code == 400
    assert "must be filled in" in infolog(response)


def test_unknown_property_in_payload_is_400(emu: CommerceEmulator) -> None:
    response = post(emu, "RetailLoyaltyCards", new_card("LC-PROP-1", Bogus=1))
    assert response.status_code == 400


def test_patch_returns_204_and_updates_the_row(emu: CommerceEmulator) -> None:
    post(emu, "RetailLoyaltyCards", new_card("LC-PATCH-1"))
    response = patch(emu, "RetailLoyaltyCards('LC-PATCH-1')", {"CardTenderType": "Blocked"})
    assert response.status_code == 204
    assert get(emu, "RetailLoyaltyCards('LC-PATCH-1')").json()["CardTenderType"] == "Blocked"


def test_patch_changes_the_etag(emu: CommerceEmulator) -> None:
    before = post(emu, "RetailLoyaltyCards", new_card("LC-PATCH-2")).headers["ETag"]
    patch(emu, "RetailLoyaltyCards('LC-PATCH-2')", {"PartyNumber": "000009999"})
    assert get(emu, "RetailLoyaltyCards('LC-PATCH-2')").headers["ETag"] != before


def test_patch_of_a_missing_entity_is_404(emu: CommerceEmulator) -> None:
    assert patch(emu, "RetailLoyaltyCards('LC-MISSING')", {"PartyNumber": "1"}).status_code == 404


def test_patch_with_a_stale_etag_is_412(emu: CommerceEmulator) -> None:
    stale = post(emu, "RetailLoyaltyCards", new_card("LC-ETAG-1")).headers["ETag"]
    patch(emu, "RetailLoyaltyCards('LC-ETAG-1')", {"PartyNumber": "1"})
    response = patch(emu, "RetailLoyaltyCards('LC-ETAG-1')", {"PartyNumber": "2"}, **{"If-Match": stale})
    assert response.status_code == 412


def test_patch_with_the_current_etag_succeeds(emu: CommerceEmulator) -> None:
    etag = post(emu, "RetailLoyaltyCards", new_card("LC-ETAG-2")).headers["ETag"]
    response = patch(emu, "RetailLoyaltyCards('LC-ETAG-2')", {"PartyNumber": "1"}, **{"If-Match": etag})
    assert response.status_code == 204


def test_patch_changing_a_key_field_is_400(emu: CommerceEmulator) -> None:
    post(emu, "RetailLoyaltyCards", new_card("LC-KEY-1"))
    response = patch(emu, "RetailLoyaltyCards('LC-KEY-1')", {"CardNumber": "LC-KEY-2"})
    assert response.status_code == 400


def test_delete_returns_204_and_removes_the_row(emu: CommerceEmulator) -> None:
    post(emu, "RetailLoyaltyCards", new_card("LC-DEL-1"))
    response = requests.delete(f"{emu.url}/data/RetailLoyaltyCards('LC-DEL-1')", headers=AUTH, timeout=10)
    assert response.status_code == 204
    assert get(emu, "RetailLoyaltyCards('LC-DEL-1')").status_code == 404


def test_delete_of_a_missing_entity_is_404(emu: CommerceEmulator) -> None:
    response = requests.delete(f"{emu.url}/data/RetailLoyaltyCards('LC-NOPE')", headers=AUTH, timeout=10)
    assert response.status_code == 404


# -- admin ---------------------------------------------------------------------------------------


def test_reset_restores_the_seeded_rows() -> None:
    server = start_commerce(cards=5, reward_points=3, levels_per_company=2)
    try:
        post(server, "RetailLoyaltyCards", new_card("LC-RESET-1"))
        counts = requests.post(f"{server.url}/_emulator/reset", timeout=10).json()["counts"]
        assert counts["RetailLoyaltyCards"] == 5
    finally:
        server.stop()


def test_seed_is_deterministic() -> None:
    first, second = (start_commerce(cards=5, seed=3) for _ in range(2))
    try:
        rows = [values(get(server, "RetailLoyaltyCards")) for server in (first, second)]
        assert rows[0] == rows[1]
    finally:
        first.stop()
        second.stop()
