"""Dataverse bulk actions CreateMultiple / UpdateMultiple / UpsertMultiple over real HTTP,
replaying docs/protocol-notes.md §2.10."""

from __future__ import annotations

from typing import Any

import requests

from emulators.dataverse.server import DataverseServer, start_dataverse
from tests.emulators.dataverse.support import CARD_TYPE, LEVEL_TYPE, Api, card

ODATA_JSON = "application/json; odata.metadata=minimal"






def typed(number: str, **columns: Any) -> dict[str, Any]:
    return {"@odata.type": CARD_TYPE, **card(number, **columns)}


def keyed(number: str, **columns: Any) -> dict[str, Any]:
    """An UpsertMultiple target as DVPY sends it: @odata.id, no key column in the body."""
    return {"@odata.type": CARD_TYPE, "@odata.id": f"msdyn_loyaltycards(msdyn_cardnumber='{number}')", **columns}


def numbers(api: Api) -> list[str]:
    return sorted(row["msdyn_cardnumber"] for row in api.rows())


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == ODATA_JSON
    assert response.json()["error"]["code"] == code


# -- CreateMultiple ----------------------------------------------------------------------------


def test_create_multiple_returns_200_with_the_response_context_and_ids(api: Api) -> None:
    response = api.bulk("CreateMultiple", [typed("0000001"), typed("0000002")])
    assert (response.status_code, response.headers["OData-Version"]) == (200, "4.0")
    body = response.json()
    assert body["@odata.context"] == f"{api.root}$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"
    assert sorted(body["Ids"]) == sorted(row["msdyn_loyaltycardid"] for row in api.rows())


def test_create_multiple_target_without_odata_type_is_400_and_writes_nothing(api: Api) -> None:
    response = api.bulk("CreateMultiple", [typed("1"), card("2")])
    assert response.status_code == 400
    assert "@odata.type" in response.json()["error"]["message"]
    assert api.rows() == []


def test_target_of_another_table_is_400(api: Api) -> None:
    other = {"@odata.type": LEVEL_TYPE, "msdyn_levelphrase": "Gold"}
    assert api.bulk("CreateMultiple", [typed("1"), other]).status_code == 400
    assert api.rows() == []


def test_failing_target_rolls_back_the_whole_request_and_returns_its_error(api: Api) -> None:
    response = api.bulk("CreateMultiple", [typed("OK-1"), typed("X" * 31), typed("OK-3")])
    assert_error(response, 400, "0x80044331")
    assert api.rows() == []


def test_duplicate_key_inside_one_request_fails_it_all_with_412(api: Api) -> None:
    assert_error(api.bulk("CreateMultiple", [typed("D-1"), typed("D-1")]), 412, "0x80040237")
    assert api.rows() == []


def test_odata_bind_works_inside_targets(api: Api) -> None:
    target = {
        "@odata.type": LEVEL_TYPE,
        "msdyn_levelphrase": "Gold",
        "msdyn_company@odata.bind": "cdm_companies(cdm_companycode='USMF')",
    }
    assert api.bulk("CreateMultiple", [target], entity_set="msdyn_loyaltylevels").status_code == 200
    assert api.rows("msdyn_loyaltylevels")[0]["_msdyn_company_value"] == api.company_id("USMF")


def test_empty_targets_is_400(api: Api) -> None:
    assert api.bulk("CreateMultiple", []).status_code == 400


# -- UpdateMultiple ----------------------------------------------------------------------------


def test_update_multiple_returns_204_nocontent_and_updates_every_row(api: Api) -> None:
    ids = api.bulk("CreateMultiple", [typed("U-1"), typed("U-2")]).json()["Ids"]
    targets = [{"@odata.type": CARD_TYPE, "msdyn_loyaltycardid": i, "msdyn_partynumber": "P"} for i in ids]
    response = api.bulk("UpdateMultiple", targets)
    assert (response.status_code, response.reason, response.content) == (204, "NoContent", b"")
    assert [row["msdyn_partynumber"] for row in api.rows()] == ["P", "P"]


def test_update_multiple_of_a_missing_row_is_404_and_rolls_back(api: Api) -> None:
    [existing] = api.bulk("CreateMultiple", [typed("U-1")]).json()["Ids"]
    missing = "00000000-0000-0000-0000-000000000001"
    targets = [
        {"@odata.type": CARD_TYPE, "msdyn_loyaltycardid": existing, "msdyn_partynumber": "P"},
        {"@odata.type": CARD_TYPE, "msdyn_loyaltycardid": missing, "msdyn_partynumber": "P"},
    ]
    response = api.bulk("UpdateMultiple", targets)
    assert_error(response, 404, "0x80040217")
    assert response.json()["error"]["message"] == f"msdyn_loyaltycard With Ids = {missing} Do Not Exist"
    assert api.rows()[0]["msdyn_partynumber"] is None


# -- UpsertMultiple ----------------------------------------------------------------------------


def test_upsert_multiple_by_odata_id_creates_rows_with_204_and_no_body(api: Api) -> None:
    response = api.bulk("UpsertMultiple", [keyed("0000001", msdyn_partynumber="A"), keyed("0000002")])
    assert (response.status_code, response.reason, response.content) == (204, "NoContent", b"")
    assert numbers(api) == ["0000001", "0000002"]


def test_upsert_multiple_updates_existing_rows_with_the_same_response(api: Api) -> None:
    api.bulk("UpsertMultiple", [keyed("0000001")])
    response = api.bulk("UpsertMultiple", [keyed("0000001", msdyn_partynumber="B")])
    assert (response.status_code, response.content) == (204, b"")
    assert [(row["msdyn_cardnumber"], row["msdyn_partynumber"]) for row in api.rows()] == [("0000001", "B")]


def test_upsert_multiple_accepts_a_composite_key_with_a_lookup_value(api: Api) -> None:
    company = api.company_id("USRT")
    target = {
        "@odata.type": LEVEL_TYPE,
        "@odata.id": f"msdyn_loyaltylevels(msdyn_levelphrase='Gold',_msdyn_company_value={company})",
        "msdyn_description": "Gold level",
    }
    assert api.bulk("UpsertMultiple", [target], entity_set="msdyn_loyaltylevels").status_code == 204
    [row] = api.rows("msdyn_loyaltylevels")
    assert (row["msdyn_levelphrase"], row["_msdyn_company_value"]) == ("Gold", company)


def test_upsert_multiple_accepts_the_primary_key_in_the_body(api: Api) -> None:
    row_id = "11111111-2222-3333-4444-555555555555"
    assert api.bulk("UpsertMultiple", [{**typed("PK-1"), "msdyn_loyaltycardid": row_id}]).status_code == 204
    assert api.rows()[0]["msdyn_loyaltycardid"] == row_id


def test_upsert_multiple_key_in_body_and_odata_id_fails_the_create_path_with_0x80040216(api: Api) -> None:
    response = api.bulk("UpsertMultiple", [keyed("K-1", msdyn_cardnumber="K-1")])
    assert_error(response, 400, "0x80040216")
    assert response.json()["error"]["message"] == "An unexpected error occurred."
    assert api.rows() == []


def test_upsert_multiple_key_in_body_and_odata_id_is_tolerated_on_the_update_path(api: Api) -> None:
    api.bulk("UpsertMultiple", [keyed("K-1")])
    response = api.bulk("UpsertMultiple", [keyed("K-1", msdyn_cardnumber="K-1", msdyn_partynumber="P")])
    assert response.status_code == 204
    assert api.rows()[0]["msdyn_partynumber"] == "P"


def test_upsert_multiple_without_key_is_400(api: Api) -> None:
    assert api.bulk("UpsertMultiple", [{"@odata.type": CARD_TYPE, "msdyn_partynumber": "P"}]).status_code == 400


# -- other rules -------------------------------------------------------------------------------


def test_delete_multiple_is_not_implemented_on_standard_tables(api: Api) -> None:
    response = api.bulk("DeleteMultiple", [keyed("1")])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "DeleteMultiple has not yet been implemented."


def test_payload_above_the_configured_maximum_is_413() -> None:
    emu = start_dataverse(port=0, bulk_max_payload_bytes=300)
    try:
        client = Api(emu)
        assert client.bulk("CreateMultiple", [typed("S-1")]).status_code == 200
        response = client.bulk("CreateMultiple", [typed(f"S-{i}") for i in range(2, 12)])
        assert_error(response, 413, "0x8004418A")
        assert len(client.rows()) == 1
    finally:
        emu.stop()


def test_bulk_request_counts_once_in_the_stats(api: Api, emulator: DataverseServer) -> None:
    requests.post(f"{emulator.url}/_emulator/stats/reset", timeout=5)
    api.bulk("CreateMultiple", [typed(str(i)) for i in range(5)])
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert (stats["total"], stats["by_route"]) == (1, {"msdyn_loyaltycards/CreateMultiple": 1})
