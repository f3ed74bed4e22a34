"""The Dataverse Web API emulator over real HTTP, replaying docs/protocol-notes.md §2 examples."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

import requests

from emulators.dataverse.server import DataverseServer, start_dataverse
from tests.emulators.dataverse.support import Api

ODATA_JSON = "application/json; odata.metadata=minimal"
CASH, CONTACT_TENDER = 806380000, 806380001
DAY = 806380000







# -- builders ---------------------------------------------------------------------------


def card(number: str = "100001", **columns: Any) -> dict[str, Any]:
    return {"msdyn_cardnumber": number, "msdyn_cardtendertype": CASH, **columns}


def reward_point(point_id: str = "RP-1", **columns: Any) -> dict[str, Any]:
    return {"msdyn_rewardpointid": point_id, "msdyn_redeemable": True, "msdyn_expirationtimeunit": DAY, **columns}


def level(phrase: str = "Gold", **columns: Any) -> dict[str, Any]:
    return {"msdyn_levelphrase": phrase, "msdyn_description": f"{phrase} level", **columns}


def company_id(api: Api, code: str = "USMF") -> str:
    return api.lookup_id("cdm_companies", f"cdm_companycode='{code}'", "cdm_companyid")


def currency_id(api: Api, code: str = "USD") -> str:
    return api.lookup_id("transactioncurrencies", f"isocurrencycode='{code}'", "transactioncurrencyid")


def create_card(api: Api, number: str = "100001", **columns: Any) -> dict[str, Any]:
    response = api.post("msdyn_loyaltycards", card(number, **columns), Prefer="return=representation")
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_error(response: requests.Response, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == ODATA_JSON
    error = response.json()["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message


# -- authentication, headers, service routes ---------------------------------------------


def test_request_without_bearer_token_gets_401_with_authority_challenge(emulator: DataverseServer) -> None:
    response = requests.get(emulator.api_url + "msdyn_loyaltycards", headers={"Authorization": "Bearer "}, timeout=5)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization_uri=https://login.microsoftonline.com/")
    assert challenge.endswith(f"/oauth2/authorize, resource_id={emulator.url}")
    assert "message" in response.json()["error"]


def test_admin_routes_need_no_token(emulator: DataverseServer) -> None:
    assert requests.get(f"{emulator.url}/_emulator/stats", timeout=5).status_code == 200


def test_responses_carry_odata_version_and_minimal_metadata_content_type(api: Api) -> None:
    response = api.get("transactioncurrencies")
    assert response.headers["OData-Version"] == "4.0"
    assert response.headers["Content-Type"] == ODATA_JSON


def test_whoami_returns_ids_and_a_dop_hint(api: Api) -> None:
    response = api.get("WhoAmI")
    body = response.json()
    assert response.status_code == 200
    assert body["@odata.context"] == api.root + "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"
    assert {"BusinessUnitId", "UserId", "OrganizationId"} <= body.keys()
    assert int(response.headers["x-ms-dop-hint"]) > 0


def test_unknown_entity_set_is_404_resource_not_found(api: Api) -> None:
    assert_error(api.get("msdyn_nothings"), 404, "0x80060888", "Resource not found for the segment 'msdyn_nothings'.")


def test_reference_tables_are_seeded(api: Api) -> None:
    codes = {row["isocurrencycode"] for row in api.get("transactioncurrencies").json()["value"]}
    assert codes == {"USD", "EUR", "GBP", "CAD", "DKK"}
    assert len(api.get("cdm_companies").json()["value"]) == 3


# -- create (§2.3) -------------------------------------------------------------------------


def test_post_returns_204_with_entity_id_in_guid_form(api: Api) -> None:
    response = api.post("msdyn_loyaltycards", card())
    assert response.status_code == 204
    assert response.content == b""
    entity_id = response.headers["OData-EntityId"]
    assert entity_id.startswith(api.root + "msdyn_loyaltycards(")
    uuid.UUID(entity_id[entity_id.index("(") + 1 : -1])


def test_post_with_return_representation_returns_201_body_and_no_entity_id(api: Api) -> None:
    response = api.post("msdyn_loyaltycards?$select=msdyn_cardnumber", card(), Prefer="return=representation")
    body = response.json()
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=representation"
    assert "OData-EntityId" not in response.headers
    assert body["@odata.context"] == api.root + "$metadata#msdyn_loyaltycards(msdyn_cardnumber)/$entity"
    assert body["@odata.etag"].startswith('W/"')
    assert set(body) == {"@odata.context", "@odata.etag", "msdyn_cardnumber", "msdyn_loyaltycardid"}


def test_created_row_has_server_managed_columns(api: Api) -> None:
    row = create_card(api)
    assert row["createdon"].endswith("Z") and row["modifiedon"] == row["createdon"]
    assert row["@odata.etag"] == f'W/"{row["versionnumber"]}"'


def test_post_with_duplicate_alternate_key_is_412(api: Api) -> None:
    create_card(api, "100001")
    assert_error(
        api.post("msdyn_loyaltycards", card("100001")), 412, "0x80040237", "A record with matching key values already exists."
    )


def test_post_without_required_column_is_400(api: Api) -> None:
    assert_error(api.post("msdyn_loyaltycards", {"msdyn_partynumber": "P1"}), 400, "0x80040203")


def test_post_with_unknown_column_is_400_invalid_property(api: Api) -> None:
    assert_error(
        api.post("msdyn_loyaltycards", card(msdyn_colour="red")),
        400,
        "0x80048d19",
        "Invalid property 'msdyn_colour' was found in entity 'Microsoft.Dynamics.CRM.msdyn_loyaltycard'.",
    )


def test_string_longer_than_max_length_is_400_0x80044331(api: Api) -> None:
    assert_error(
        api.post("msdyn_loyaltycards", card("9" * 31)),
        400,
        "0x80044331",
        "A validation error occurred.  The length of the 'msdyn_cardnumber' attribute of the 'msdyn_loyaltycard' "
        "entity exceeded the maximum allowed length of '30'.",
    )


def test_choice_value_outside_the_option_set_is_400_0x8004431a(api: Api) -> None:
    response = api.post("msdyn_loyaltycards", card(msdyn_cardtendertype=5))
    assert_error(response, 400, "0x8004431A")
    assert "The value 5 of 'msdyn_cardtendertype'" in response.json()["error"]["message"]
    assert "Accepted Values: 806380000,806380001,806380002,806380003" in response.json()["error"]["message"]


def test_int32_out_of_range_is_400(api: Api) -> None:
    response = api.post("msdyn_loyaltyrewardpoints", reward_point(msdyn_redeemranking=2**31))
    assert_error(response, 400, "0x80048d19", "Cannot convert the literal '2147483648' to the expected type 'Edm.Int32'.")


def test_int64_column_accepts_values_beyond_int32(api: Api) -> None:
    response = api.post(
        "msdyn_loyaltyrewardpoints", reward_point(msdyn_maximumloyaltyrewardpoints=2**40), Prefer="return=representation"
    )
    assert response.json()["msdyn_maximumloyaltyrewardpoints"] == 2**40


def test_wrong_json_type_is_400(api: Api) -> None:
    assert_error(api.post("msdyn_loyaltyrewardpoints", reward_point(msdyn_redeemable="yes")), 400, "0x80048d19")


# -- upsert (§2.4, §2.5) -------------------------------------------------------------------


def test_patch_by_alternate_key_creates_missing_row_and_answers_in_key_form(api: Api) -> None:
    response = api.patch("msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_partynumber": "P-1"})
    assert response.status_code == 204
    assert response.headers["OData-EntityId"] == api.root + "msdyn_loyaltycards(msdyn_cardnumber='200001')"
    row = api.get("msdyn_loyaltycards(msdyn_cardnumber='200001')").json()
    assert row["msdyn_partynumber"] == "P-1"


def test_patch_by_alternate_key_updates_existing_row_with_the_same_response(api: Api) -> None:
    create_card(api, "200001")
    response = api.patch("msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_partynumber": "P-2"})
    assert response.status_code == 204
    assert response.headers["OData-EntityId"] == api.root + "msdyn_loyaltycards(msdyn_cardnumber='200001')"
    rows = api.get("msdyn_loyaltycards").json()["value"]
    assert [r["msdyn_partynumber"] for r in rows] == ["P-2"]


def test_upsert_with_representation_is_201_when_created(api: Api) -> None:
    response = api.patch(
        "msdyn_loyaltycards(msdyn_cardnumber='200001')?$select=msdyn_loyaltycardid",
        {"msdyn_partynumber": "P-1"},
        Prefer="return=representation",
    )
    assert response.status_code == 201
    assert response.headers["ETag"] == response.json()["@odata.etag"]
    assert response.json()["@odata.context"] == api.root + "$metadata#msdyn_loyaltycards(msdyn_loyaltycardid)/$entity"


def test_upsert_with_representation_is_200_when_updated_with_a_new_etag(api: Api) -> None:
    created = create_card(api, "200001")
    response = api.patch(
        "msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_partynumber": "P-9"}, Prefer="return=representation"
    )
    assert response.status_code == 200
    assert response.headers["ETag"] != created["@odata.etag"]
    assert response.json()["msdyn_partynumber"] == "P-9"


def test_update_through_key_url_ignores_key_columns_in_the_body(api: Api) -> None:
    create_card(api, "200001")
    api.patch("msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_cardnumber": "CHANGED", "msdyn_partynumber": "P"})
    assert api.get("msdyn_loyaltycards(msdyn_cardnumber='200001')").json()["msdyn_partynumber"] == "P"
    assert api.get("msdyn_loyaltycards(msdyn_cardnumber='CHANGED')").status_code == 404


def test_create_through_key_url_lets_body_key_values_win(api: Api) -> None:
    api.patch("msdyn_loyaltycards(msdyn_cardnumber='URL-KEY')", {"msdyn_cardnumber": "BODY-KEY"})
    assert api.get("msdyn_loyaltycards(msdyn_cardnumber='BODY-KEY')").status_code == 200
    assert api.get("msdyn_loyaltycards(msdyn_cardnumber='URL-KEY')").status_code == 404


def test_patch_by_id_upserts_a_row_with_that_id(api: Api) -> None:
    row_id = str(uuid.uuid4())
    response = api.patch(f"msdyn_loyaltycards({row_id})", card("300001"))
    assert response.status_code == 204
    assert response.headers["OData-EntityId"] == api.root + f"msdyn_loyaltycards({row_id})"
    assert api.get(f"msdyn_loyaltycards({row_id})").json()["msdyn_cardnumber"] == "300001"


def test_if_match_star_on_missing_row_is_404(api: Api) -> None:
    response = api.patch("msdyn_loyaltycards(msdyn_cardnumber='404404')", {"msdyn_partynumber": "P"}, **{"If-Match": "*"})
    assert_error(response, 404, "0x80060891", "A record with the specified key values does not exist in msdyn_loyaltycard entity")


def test_if_match_star_on_missing_id_is_404_does_not_exist(api: Api) -> None:
    row_id = str(uuid.uuid4())
    response = api.patch(f"msdyn_loyaltycards({row_id})", card(), **{"If-Match": "*"})
    assert_error(response, 404, "0x80040217", f"msdyn_loyaltycard With Id = {row_id} Does Not Exist")


def test_if_none_match_star_on_existing_row_is_412(api: Api) -> None:
    create_card(api, "200001")
    response = api.patch("msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_partynumber": "P"}, **{"If-None-Match": "*"})
    assert_error(response, 412, "0x80040237", "A record with matching key values already exists.")


def test_if_none_match_null_header_is_ignored_by_upsert(api: Api) -> None:
    response = api.patch("msdyn_loyaltycards(msdyn_cardnumber='200001')", {}, **{"If-None-Match": "null"})
    assert response.status_code == 204


def test_stale_if_match_etag_is_412_version_mismatch(api: Api) -> None:
    created = create_card(api, "200001")
    api.patch("msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_partynumber": "first"})
    response = api.patch(
        "msdyn_loyaltycards(msdyn_cardnumber='200001')", {"msdyn_partynumber": "second"}, **{"If-Match": created["@odata.etag"]}
    )
    assert_error(
        response, 412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
    )


def test_current_if_match_etag_allows_the_update(api: Api) -> None:
    created = create_card(api, "200001")
    url = f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})"
    response = api.patch(url, {"msdyn_partynumber": "P"}, **{"If-Match": created["@odata.etag"]})
    assert response.status_code == 204


def test_patch_that_duplicates_another_rows_key_is_412(api: Api) -> None:
    create_card(api, "A")
    other = create_card(api, "B")
    response = api.patch(f"msdyn_loyaltycards({other['msdyn_loyaltycardid']})", {"msdyn_cardnumber": "a"})
    assert_error(response, 412, "0x80040237")


# -- retrieve (§2.5, §2.7) -----------------------------------------------------------------


def test_get_by_id_returns_entity_with_context_and_etag_header(api: Api) -> None:
    created = create_card(api)
    response = api.get(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})")
    body = response.json()
    assert response.status_code == 200
    assert body["@odata.context"] == api.root + "$metadata#msdyn_loyaltycards/$entity"
    assert response.headers["ETag"] == body["@odata.etag"] == created["@odata.etag"]
    assert body["msdyn_cardnumber"] == "100001"


def test_get_by_alternate_key_matches_case_insensitively(api: Api) -> None:
    create_card(api, "ABC-1")
    assert api.get("msdyn_loyaltycards(msdyn_cardnumber='abc-1')").json()["msdyn_cardnumber"] == "ABC-1"


def test_get_with_current_if_none_match_is_304(api: Api) -> None:
    created = create_card(api)
    response = api.get(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})", **{"If-None-Match": created["@odata.etag"]})
    assert response.status_code == 304
    assert response.content == b""


def test_get_with_outdated_if_none_match_is_200_with_new_etag(api: Api) -> None:
    created = create_card(api)
    api.patch(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})", {"msdyn_partynumber": "new"})
    response = api.get(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})", **{"If-None-Match": created["@odata.etag"]})
    assert response.status_code == 200
    assert response.headers["ETag"] != created["@odata.etag"]


def test_get_missing_row_by_id_is_404_0x80040217(api: Api) -> None:
    row_id = str(uuid.uuid4())
    assert_error(
        api.get(f"msdyn_loyaltycards({row_id})"), 404, "0x80040217", f"msdyn_loyaltycard With Id = {row_id} Does Not Exist"
    )


def test_get_missing_row_by_key_is_404_0x80060891(api: Api) -> None:
    assert_error(api.get("msdyn_loyaltycards(msdyn_cardnumber='none')"), 404, "0x80060891")


def test_key_with_undeclared_columns_is_400_key_not_valid(api: Api) -> None:
    response = api.get("msdyn_loyaltycards(msdyn_partynumber='P-1')")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.msdyn_loyaltycard'. Ensure that "
        "the names and number of key properties match the declared or alternate key properties for the resource "
        "'msdyn_loyaltycard'."
    )


def test_composite_key_with_lookup_value_upserts_and_reads_the_level(api: Api) -> None:
    company = company_id(api, "USMF")
    key = f"msdyn_loyaltylevels(msdyn_levelphrase='Gold',_msdyn_company_value={company})"
    created = api.patch(key, {"msdyn_description": "Gold tier"})
    assert created.status_code == 204
    assert created.headers["OData-EntityId"] == api.root + key
    row = api.get(key).json()
    assert row["_msdyn_company_value"] == company
    assert row["msdyn_levelphrase"] == "Gold"


def test_same_level_phrase_in_two_companies_are_two_rows(api: Api) -> None:
    for code in ("USMF", "USRT"):
        bind = {"msdyn_company@odata.bind": f"/cdm_companies(cdm_companycode='{code}')"}
        api.post("msdyn_loyaltylevels", level("Gold", **bind))
    assert len(api.get("msdyn_loyaltylevels").json()["value"]) == 2


def test_composite_key_missing_a_part_is_400(api: Api) -> None:
    assert api.get("msdyn_loyaltylevels(msdyn_levelphrase='Gold')").status_code == 400


# -- @odata.bind (§2.6) --------------------------------------------------------------------


def test_bind_by_alternate_key_sets_the_lookup_value(api: Api) -> None:
    body = reward_point(**{"msdyn_rewardpointcurrency@odata.bind": "/transactioncurrencies(isocurrencycode='USD')"})
    row = api.post("msdyn_loyaltyrewardpoints", body, Prefer="return=representation").json()
    assert row["_msdyn_rewardpointcurrency_value"] == currency_id(api, "USD")


def test_bind_by_id_accepts_an_absolute_url(api: Api) -> None:
    eur = currency_id(api, "EUR")
    body = reward_point(**{"msdyn_rewardpointcurrency@odata.bind": f"{api.root}transactioncurrencies({eur})"})
    row = api.post("msdyn_loyaltyrewardpoints", body, Prefer="return=representation").json()
    assert row["_msdyn_rewardpointcurrency_value"] == eur


def test_bind_null_clears_the_lookup(api: Api) -> None:
    api.patch(
        "msdyn_loyaltyrewardpoints(msdyn_rewardpointid='RP-1')",
        reward_point(**{"msdyn_rewardpointcurrency@odata.bind": "transactioncurrencies(isocurrencycode='USD')"}),
    )
    api.patch("msdyn_loyaltyrewardpoints(msdyn_rewardpointid='RP-1')", {"msdyn_rewardpointcurrency@odata.bind": None})
    row = api.get("msdyn_loyaltyrewardpoints(msdyn_rewardpointid='RP-1')").json()
    assert row["_msdyn_rewardpointcurrency_value"] is None


def test_wrongly_cased_navigation_property_is_400_undeclared_property(api: Api) -> None:
    body = reward_point(**{"msdyn_RewardPointCurrency@odata.bind": "/transactioncurrencies(isocurrencycode='USD')"})
    response = api.post("msdyn_loyaltyrewardpoints", body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "An undeclared property 'msdyn_RewardPointCurrency' which only has property annotations in the payload but no "
        "property value was found in the payload. In OData, only declared navigation properties and declared named "
        "streams can be represented as properties without values."
    )


def test_bind_to_a_key_that_resolves_to_nothing_is_404_0x80060891(api: Api) -> None:
    body = reward_point(**{"msdyn_rewardpointcurrency@odata.bind": "/transactioncurrencies(isocurrencycode='XXX')"})
    assert_error(
        api.post("msdyn_loyaltyrewardpoints", body),
        404,
        "0x80060891",
        "A record with the specified key values does not exist in transactioncurrency entity",
    )


# -- query and paging (§2.8) ---------------------------------------------------------------


def test_filter_compares_strings_case_insensitively(api: Api) -> None:
    create_card(api, "ABC-1")
    create_card(api, "XYZ-2")
    rows = api.get("msdyn_loyaltycards?$filter=msdyn_cardnumber eq 'abc-1'").json()["value"]
    assert [r["msdyn_cardnumber"] for r in rows] == ["ABC-1"]


def test_filter_on_lookup_value_and_crm_in_function(api: Api) -> None:
    usd = currency_id(api, "USD")
    rows = api.get(
        f"transactioncurrencies?$filter=Microsoft.Dynamics.CRM.In(PropertyName='isocurrencycode',PropertyValues=['usd','EUR'])"
        f" and transactioncurrencyid eq {usd}"
    ).json()["value"]
    assert [r["isocurrencycode"] for r in rows] == ["USD"]


def test_select_limits_columns_and_names_them_in_the_context(api: Api) -> None:
    create_card(api)
    body = api.get("msdyn_loyaltycards?$select=msdyn_cardnumber,msdyn_cardtendertype").json()
    assert body["@odata.context"] == api.root + "$metadata#msdyn_loyaltycards(msdyn_cardnumber,msdyn_cardtendertype)"
    assert set(body["value"][0]) == {"@odata.etag", "msdyn_cardnumber", "msdyn_cardtendertype", "msdyn_loyaltycardid"}


def test_orderby_and_top_return_the_first_rows_in_order(api: Api) -> None:
    for number in ("C", "a", "B"):
        create_card(api, number)
    rows = api.get("msdyn_loyaltycards?$orderby=msdyn_cardnumber desc&$top=2").json()["value"]
    assert [r["msdyn_cardnumber"] for r in rows] == ["C", "B"]


def test_count_true_adds_odata_count_before_value(api: Api) -> None:
    body = api.get("transactioncurrencies?$count=true&$top=1").json()
    assert list(body) == ["@odata.context", "@odata.count", "value"]
    assert body["@odata.count"] == 5


def test_skip_is_rejected_with_400(api: Api) -> None:
    assert_error(api.get("msdyn_loyaltycards?$skip=10"), 400, "0x80060888", "The query parameter $skip is not supported")


def test_unknown_or_miscased_query_option_is_rejected_with_400(api: Api) -> None:
    assert api.get("msdyn_loyaltycards?$Filter=msdyn_cardnumber eq '1'").status_code == 400


def test_unterminated_filter_literal_is_400_with_position(api: Api) -> None:
    response = api.get("msdyn_loyaltycards?$filter=msdyn_cardnumber eq 'O'Bryan'")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("There is an unterminated literal at position 29")


def test_filter_on_unknown_column_is_400(api: Api) -> None:
    response = api.get("msdyn_loyaltycards?$filter=msdyn_colour eq 'red'")
    assert response.status_code == 400
    assert "msdyn_colour" in response.json()["error"]["message"]


def test_paging_follows_next_link_verbatim_to_the_end(api: Api) -> None:
    numbers = {f"P-{i:03d}" for i in range(12)}
    for number in numbers:
        create_card(api, number)
    seen: list[str] = []
    sizes: list[int] = []
    url: str | None = "msdyn_loyaltycards?$select=msdyn_cardnumber&$filter=startswith(msdyn_cardnumber,'P-')"
    while url is not None:
        response = api.get(url, Prefer="odata.maxpagesize=5")
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=5"
        body = response.json()
        sizes.append(len(body["value"]))
        seen.extend(r["msdyn_cardnumber"] for r in body["value"])
        url = body.get("@odata.nextLink")
        if url is not None:
            assert list(body)[-1] == "@odata.nextLink"
            assert url.startswith(api.root + "msdyn_loyaltycards?$select=msdyn_cardnumber&$filter=")
    assert sizes == [5, 5, 2]
    assert sorted(seen) == sorted(numbers)


def test_next_link_carries_the_documented_cookie_shape(api: Api) -> None:
    for number in ("1", "2"):
        create_card(api, number)
    next_link = api.get("msdyn_loyaltycards", Prefer="odata.maxpagesize=1").json()["@odata.nextLink"]
    token = unquote(next_link.split("$skiptoken=", 1)[1])
    assert token.startswith('<cookie pagenumber="2" pagingcookie="%3ccookie%20page%3d%221%22%3e')
    assert token.endswith('istracking="False" />')


def test_paging_survives_a_row_deleted_between_pages(api: Api) -> None:
    for number in ("A", "B", "C", "D"):
        create_card(api, number)
    first = api.get("msdyn_loyaltycards?$orderby=msdyn_cardnumber", Prefer="odata.maxpagesize=2").json()
    api.delete("msdyn_loyaltycards(msdyn_cardnumber='A')")
    second = api.get(first["@odata.nextLink"], Prefer="odata.maxpagesize=2").json()
    assert [r["msdyn_cardnumber"] for r in second["value"]] == ["C", "D"]
    assert "@odata.nextLink" not in second


def test_top_is_ignored_when_maxpagesize_is_present(api: Api) -> None:
    body = api.get("transactioncurrencies?$top=1", Prefer="odata.maxpagesize=2").json()
    assert len(body["value"]) == 2
    assert "@odata.nextLink" in body


def test_maxpagesize_is_capped_by_the_server() -> None:
    emu = start_dataverse(port=0, page_size_cap=3)
    try:
        client = Api(emu)
        response = client.get("transactioncurrencies", Prefer="odata.maxpagesize=5000")
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=3"
        assert len(response.json()["value"]) == 3
        unpaged = client.get("transactioncurrencies").json()
        assert len(unpaged["value"]) == 3 and "@odata.nextLink" in unpaged
    finally:
        emu.stop()


# -- delete (§2.4) ---------------------------------------------------------------------------


def test_delete_returns_204_and_the_row_is_gone(api: Api) -> None:
    created = create_card(api)
    assert api.delete(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})").status_code == 204
    assert api.get(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})").status_code == 404


def test_delete_by_alternate_key_of_missing_row_is_404(api: Api) -> None:
    assert_error(api.delete("msdyn_loyaltycards(msdyn_cardnumber='gone')"), 404, "0x80060891")


def test_delete_with_stale_etag_is_412(api: Api) -> None:
    created = create_card(api)
    api.patch(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})", {"msdyn_partynumber": "changed"})
    response = api.delete(f"msdyn_loyaltycards({created['msdyn_loyaltycardid']})", **{"If-Match": created["@odata.etag"]})
    assert_error(response, 412, "0x80060882")


def test_delete_on_a_collection_is_405(api: Api) -> None:
    assert api.delete("msdyn_loyaltycards").status_code == 405


# -- errors and admin -------------------------------------------------------------------------


def test_error_details_annotations_are_added_on_request(api: Api) -> None:
    response = api.post("msdyn_loyaltycards", card("9" * 31), Prefer='odata.include-annotations="*"')
    error = response.json()["error"]
    assert error["code"] == "0x80044331"
    assert error["@Microsoft.PowerApps.CDS.InnerError.Message"] == error["message"]
    assert "Microsoft.Crm.CrmException%3a80044331" in error["@Microsoft.PowerApps.CDS.HelpLink"]


def test_plain_errors_have_only_code_and_message(api: Api) -> None:
    assert set(api.get("msdyn_loyaltycards?$skip=1").json()["error"]) == {"code", "message"}


def test_admin_reset_clears_loyalty_tables_but_keeps_seeds(api: Api, emulator: DataverseServer) -> None:
    create_card(api)
    assert requests.post(f"{emulator.url}/_emulator/reset", timeout=5).status_code == 204
    assert api.get("msdyn_loyaltycards").json()["value"] == []
    assert len(api.get("transactioncurrencies").json()["value"]) == 5


def test_stats_count_requests_by_method_and_route(api: Api, emulator: DataverseServer) -> None:
    requests.post(f"{emulator.url}/_emulator/stats/reset", timeout=5)
    api.patch("msdyn_loyaltycards(msdyn_cardnumber='S-1')", {})
    api.get("msdyn_loyaltycards")
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert stats["by_method"] == {"PATCH": 1, "GET": 1}
    assert stats["by_method_route"] == {"PATCH msdyn_loyaltycards(key)": 1, "GET msdyn_loyaltycards": 1}


def test_concurrent_upserts_of_one_key_create_exactly_one_row(emulator: DataverseServer, api: Api) -> None:
    def upsert(index: int) -> int:
        client = Api(emulator)
        try:
            return client.patch("msdyn_loyaltycards(msdyn_cardnumber='RACE')", {"msdyn_partynumber": str(index)}).status_code
        finally:
            client.session.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(upsert, range(16)))
    assert statuses == [204] * 16
    assert len(api.get("msdyn_loyaltycards").json()["value"]) == 1
