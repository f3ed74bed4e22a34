"""Keys Dataverse cannot address (docs/protocol-notes.md §2.5): special characters in alternate-key data, JSON key URLs
taken as they are, GUIDs bare. A client that sends any of these fails against the emulator as it would
against the service."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.emulators.dataverse.support import CARD_TYPE, LEVEL_TYPE, Api, card

UNSAFE = ["/", "<", ">", "*", "%", "&", ":", "\\", "?", "+"]


def path_of(number: str) -> str:
    return "msdyn_loyaltycards(msdyn_cardnumber=" + quote("'" + number.replace("'", "''") + "'", safe="") + ")"


@pytest.mark.parametrize("char", UNSAFE)
def test_a_key_url_holding_a_special_character_cannot_read_or_write(api: Api, char: str) -> None:
    number = f"LC{char}7"
    assert api.post("msdyn_loyaltycards", card(number)).status_code == 204
    for response in (api.get(path_of(number)), api.patch(path_of(number), {"msdyn_partynumber": "X"}),
                     api.delete(path_of(number))):
        assert response.status_code == 400
        assert "cannot be used in a key URL" in response.json()["error"]["message"]
    [row] = api.rows()
    assert (row["msdyn_cardnumber"], row.get("msdyn_partynumber")) == (number, None)


@pytest.mark.parametrize("char", UNSAFE)
def test_a_special_character_key_is_found_with_filter(api: Api, char: str) -> None:
    number = f"LC{char}8"
    assert api.post("msdyn_loyaltycards", card(number)).status_code == 204
    response = api.get(f"msdyn_loyaltycards?$filter=msdyn_cardnumber eq '{quote(number, safe='')}'")
    assert [row["msdyn_cardnumber"] for row in response.json()["value"]] == [number]


def test_upsert_multiple_refuses_a_special_character_in_odata_id(api: Api) -> None:
    target = {"@odata.type": CARD_TYPE, "@odata.id": "msdyn_loyaltycards(msdyn_cardnumber='LC/7')"}
    assert api.bulk("UpsertMultiple", [target]).status_code == 400
    assert api.rows() == []


def test_odata_id_is_not_percent_decoded_so_an_encoded_key_is_refused_not_stored_literally(api: Api) -> None:
    target = {"@odata.type": CARD_TYPE, "@odata.id": "msdyn_loyaltycards(msdyn_cardnumber='LC%207')"}
    assert api.bulk("UpsertMultiple", [target]).status_code == 400
    assert api.rows() == []


def test_odata_id_carries_the_raw_literal_with_a_doubled_quote_and_a_space(api: Api) -> None:
    target = {"@odata.type": CARD_TYPE, "@odata.id": "msdyn_loyaltycards(msdyn_cardnumber='O''Neil 7')"}
    assert api.bulk("UpsertMultiple", [target]).status_code == 204
    assert [row["msdyn_cardnumber"] for row in api.rows()] == ["O'Neil 7"]


def test_a_quoted_guid_as_primary_key_is_400(api: Api) -> None:
    assert api.post("msdyn_loyaltycards", card("Q-1")).status_code == 204
    row_id = api.rows()[0]["msdyn_loyaltycardid"]
    assert api.get(f"msdyn_loyaltycards({row_id})").status_code == 200
    response = api.get(f"msdyn_loyaltycards('{row_id}')")
    assert response.status_code == 400 and "Edm.Guid" in response.json()["error"]["message"]


def test_a_quoted_guid_in_a_lookup_key_part_is_400(api: Api) -> None:
    company = api.company_id("USRT")
    target = {"@odata.type": LEVEL_TYPE,
              "@odata.id": f"msdyn_loyaltylevels(msdyn_levelphrase='Gold',_msdyn_company_value='{company}')"}
    assert api.bulk("UpsertMultiple", [target], entity_set="msdyn_loyaltylevels").status_code == 400
    assert api.rows("msdyn_loyaltylevels") == []


def test_a_quoted_guid_in_odata_bind_is_400(api: Api) -> None:
    company = api.company_id("USRT")
    body = {"msdyn_levelphrase": "Gold", "msdyn_company@odata.bind": f"/cdm_companies('{company}')"}
    assert api.post("msdyn_loyaltylevels", body).status_code == 400
    body["msdyn_company@odata.bind"] = f"/cdm_companies({company})"
    assert api.post("msdyn_loyaltylevels", body).status_code == 204


def test_a_company_bind_beside_the_company_in_odata_id_fails_the_create_path_with_0x80040216(api: Api) -> None:
    company = api.company_id("USRT")
    target = {"@odata.type": LEVEL_TYPE, "msdyn_description": "Gold level",
              "@odata.id": f"msdyn_loyaltylevels(msdyn_levelphrase='Gold',_msdyn_company_value={company})",
              "msdyn_company@odata.bind": f"/cdm_companies({company})"}
    response = api.bulk("UpsertMultiple", [target], entity_set="msdyn_loyaltylevels")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "0x80040216")
