"""Dataverse change tracking (delta sync) over real HTTP, replaying docs/protocol-notes.md §2.11."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from emulators.dataverse.server import DataverseServer, start_dataverse
from tests.emulators.dataverse.support import Api

CASH = 806380000
TRACK = {"Prefer": "odata.track-changes"}
SELECT = "$select=msdyn_cardnumber,msdyn_partynumber"
CARDS = "msdyn_loyaltycards"
EXPIRED = ("0x80044352", "Version stamp associated with the client has expired. Please perform a full sync.")







def create_card(api: Api, number: str, party: str = "P-1") -> str:
    body = {"msdyn_cardnumber": number, "msdyn_cardtendertype": CASH, "msdyn_partynumber": party}
    response = api.post(CARDS, body, Prefer="return=representation")
    assert response.status_code == 201, response.text
    return str(response.json()["msdyn_loyaltycardid"])


def baseline(api: Api, query: str = SELECT) -> str:
    """An initial tracked read; returns its deltaLink."""
    response = api.get(f"{CARDS}?{query}", **TRACK)
    assert response.status_code == 200, response.text
    return str(response.json()["@odata.deltaLink"])


def poll(api: Api, delta_link: str) -> dict[str, Any]:
    response = api.get(delta_link)
    assert response.status_code == 200, response.text
    return dict(response.json())


def deleted_entry(api: Api, row_id: str) -> dict[str, str]:
    return {"@odata.context": f"{api.root}$metadata#{CARDS}/$deletedEntity", "id": row_id, "reason": "deleted"}


def assert_error(response: requests.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"] == message


# -- initial tracked read ----------------------------------------------------------------------


def test_initial_tracked_read_applies_the_preference_and_returns_the_rows(api: Api) -> None:
    card_id = create_card(api, "CT-1")
    response = api.get(f"{CARDS}?{SELECT}", **TRACK)
    assert response.headers["Preference-Applied"] == "odata.track-changes"
    body = response.json()
    assert body["@odata.context"] == f"{api.root}$metadata#{CARDS}(msdyn_cardnumber,msdyn_partynumber)"
    row = body["value"][0]
    assert set(row) == {"@odata.etag", "msdyn_cardnumber", "msdyn_partynumber", "msdyn_loyaltycardid"}
    assert (row["msdyn_cardnumber"], row["msdyn_loyaltycardid"]) == ("CT-1", card_id)


def test_delta_link_repeats_the_query_and_adds_a_version_and_time_token(api: Api) -> None:
    link = baseline(api)
    prefix = f"{api.root}{CARDS}?{SELECT}&$deltatoken="
    assert link.startswith(prefix)
    raw_token = link[len(prefix) :]
    assert re.fullmatch(r"\d+%21\d\d%2f\d\d%2f\d{4}%20\d\d%3a\d\d%3a\d\d", raw_token)
    assert re.fullmatch(r"\d+!\d\d/\d\d/\d{4} \d\d:\d\d:\d\d", unquote(raw_token))


# -- deltas ------------------------------------------------------------------------------------


def test_delta_after_an_update_returns_the_row_with_its_new_value(api: Api) -> None:
    card_id = create_card(api, "CT-UPD", party="OLD")
    link = baseline(api)
    api.patch(f"{CARDS}({card_id})", {"msdyn_partynumber": "NEW"}).raise_for_status()
    current_etag = api.get(f"{CARDS}({card_id})").headers["ETag"]
    body = poll(api, link)
    assert body["@odata.context"] == f"{api.root}$metadata#{CARDS}(msdyn_cardnumber,msdyn_partynumber)/$delta"
    assert body["value"] == [
        {
            "@odata.etag": current_etag,
            "msdyn_cardnumber": "CT-UPD",
            "msdyn_partynumber": "NEW",
            "msdyn_loyaltycardid": card_id,
        }
    ]


def test_delta_lists_deleted_rows_after_changed_rows(api: Api) -> None:
    doomed = create_card(api, "CT-DEL")
    kept = create_card(api, "CT-KEEP")
    link = baseline(api)
    api.delete(f"{CARDS}({doomed})").raise_for_status()
    api.patch(f"{CARDS}({kept})", {"msdyn_partynumber": "P-2"}).raise_for_status()
    value = poll(api, link)["value"]
    assert [row.get("msdyn_loyaltycardid") for row in value] == [kept, None]
    assert value[1] == deleted_entry(api, doomed)


def test_row_created_and_deleted_between_polls_appears_as_deleted(api: Api) -> None:
    link = baseline(api)
    card_id = create_card(api, "CT-BLIP")
    api.delete(f"{CARDS}({card_id})").raise_for_status()
    assert poll(api, link)["value"] == [deleted_entry(api, card_id)]


def test_row_updated_several_times_appears_once_with_its_latest_value(api: Api) -> None:
    card_id = create_card(api, "CT-MANY")
    link = baseline(api)
    for party in ("A", "B", "C"):
        api.patch(f"{CARDS}({card_id})", {"msdyn_partynumber": party}).raise_for_status()
    value = poll(api, link)["value"]
    assert [(row["msdyn_loyaltycardid"], row["msdyn_partynumber"]) for row in value] == [(card_id, "C")]


def test_delta_without_changes_is_empty_with_a_new_delta_link(api: Api) -> None:
    create_card(api, "CT-QUIET")
    link = baseline(api)
    body = poll(api, link)
    assert body["value"] == []
    assert body["@odata.deltaLink"] != link
    assert body["@odata.deltaLink"].startswith(f"{api.root}{CARDS}?{SELECT}&$deltatoken=")


def test_next_delta_link_carries_only_later_changes(api: Api) -> None:
    first_id = create_card(api, "CT-SEQ-1")
    link = baseline(api)
    api.patch(f"{CARDS}({first_id})", {"msdyn_partynumber": "X"}).raise_for_status()
    next_link = poll(api, link)["@odata.deltaLink"]
    second_id = create_card(api, "CT-SEQ-2")
    assert [row["msdyn_loyaltycardid"] for row in poll(api, next_link)["value"]] == [second_id]


def test_old_delta_link_still_replays_every_change_since_its_own_point(api: Api) -> None:
    first_id = create_card(api, "CT-OLD-1")
    link = baseline(api)
    api.patch(f"{CARDS}({first_id})", {"msdyn_partynumber": "X"}).raise_for_status()
    poll(api, link)  # a newer link exists now; the old one stays valid (emulator's choice)
    second_id = create_card(api, "CT-OLD-2")
    assert [row["msdyn_loyaltycardid"] for row in poll(api, link)["value"]] == [first_id, second_id]


def test_post_upsert_by_key_and_patch_by_id_all_show_in_the_delta(api: Api) -> None:
    patched = create_card(api, "CT-W-1")
    link = baseline(api)
    posted = create_card(api, "CT-W-2")
    upsert = api.patch(f"{CARDS}(msdyn_cardnumber='CT-W-3')", {"msdyn_cardtendertype": CASH})
    assert upsert.status_code == 204, upsert.text
    upserted = api.get(f"{CARDS}(msdyn_cardnumber='CT-W-3')").json()["msdyn_loyaltycardid"]
    api.patch(f"{CARDS}({patched})", {"msdyn_partynumber": "Y"}).raise_for_status()
    ids = [row["msdyn_loyaltycardid"] for row in poll(api, link)["value"]]
    assert ids == [posted, upserted, patched]


def upsert_multiple(api: Api, *targets: dict[str, Any]) -> requests.Response:
    body = {"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.msdyn_loyaltycard", **target} for target in targets]}
    return api.post(f"{CARDS}/Microsoft.Dynamics.CRM.UpsertMultiple", body)


def test_bulk_upsert_multiple_writes_show_in_the_delta(api: Api) -> None:
    link = baseline(api)
    response = upsert_multiple(
        api,
        {"@odata.id": f"{CARDS}(msdyn_cardnumber='CT-BULK-1')", "msdyn_partynumber": "1"},
        {"@odata.id": f"{CARDS}(msdyn_cardnumber='CT-BULK-2')", "msdyn_partynumber": "2"},
    )
    assert response.status_code == 204, response.text
    value = poll(api, link)["value"]
    assert [row["msdyn_cardnumber"] for row in value] == ["CT-BULK-1", "CT-BULK-2"]


def test_rolled_back_bulk_request_leaves_nothing_in_the_delta(api: Api) -> None:
    link = baseline(api)
    response = upsert_multiple(
        api,
        {"@odata.id": f"{CARDS}(msdyn_cardnumber='CT-BULK-OK')"},
        {"@odata.id": f"{CARDS}(msdyn_cardnumber='CT-BULK-BAD')", "msdyn_cardtendertype": 1},  # out of range
    )
    assert response.status_code == 400
    assert poll(api, link)["value"] == []


def test_changes_to_other_tables_do_not_appear_in_the_delta(api: Api) -> None:
    link = baseline(api)
    api.post("msdyn_loyaltyrewardpoints", {"msdyn_rewardpointid": "RP-CT"}).raise_for_status()
    assert poll(api, link)["value"] == []


def test_delta_link_without_select_returns_every_column(api: Api) -> None:
    link = baseline(api, query="")
    assert link.startswith(f"{api.root}{CARDS}?$deltatoken=")
    create_card(api, "CT-ALL")
    body = poll(api, link)
    assert body["@odata.context"] == f"{api.root}$metadata#{CARDS}/$delta"
    assert {"msdyn_cardtendertype", "modifiedon", "versionnumber"} <= set(body["value"][0])


# -- paging of the initial read ----------------------------------------------------------------


def test_large_initial_set_pages_and_puts_the_delta_link_on_the_last_page_only(api: Api) -> None:
    ids = {create_card(api, f"CT-PAGE-{n}") for n in range(5)}
    prefer = {"Prefer": "odata.track-changes,odata.maxpagesize=2"}
    pages = [api.get(f"{CARDS}?{SELECT}", **prefer).json()]
    while "@odata.nextLink" in pages[-1]:
        skiptoken = parse_qs(urlsplit(pages[-1]["@odata.nextLink"]).query)["$skiptoken"][0]
        assert 'istracking="True"' in skiptoken
        assert "@odata.deltaLink" not in pages[-1]
        pages.append(api.get(pages[-1]["@odata.nextLink"], **prefer).json())
    assert [len(page["value"]) for page in pages] == [2, 2, 1]
    assert {row["msdyn_loyaltycardid"] for page in pages for row in page["value"]} == ids
    assert pages[-1]["@odata.deltaLink"].startswith(f"{api.root}{CARDS}?{SELECT}&$deltatoken=")


def test_paged_initial_read_answers_with_both_preferences_applied(api: Api) -> None:
    create_card(api, "CT-PREF")
    response = api.get(f"{CARDS}?{SELECT}", Prefer="odata.track-changes,odata.maxpagesize=2")
    assert response.headers["Preference-Applied"] == "odata.track-changes,odata.maxpagesize=2"


def test_change_made_while_paging_the_initial_read_shows_in_the_first_delta(api: Api) -> None:
    first_id = sorted(create_card(api, f"CT-MID-{n}") for n in range(3))[0]
    prefer = {"Prefer": "odata.track-changes,odata.maxpagesize=2"}
    page = api.get(f"{CARDS}?{SELECT}", **prefer).json()
    api.patch(f"{CARDS}({first_id})", {"msdyn_partynumber": "MID"}).raise_for_status()
    last = api.get(page["@odata.nextLink"], **prefer).json()
    value = poll(api, last["@odata.deltaLink"])["value"]
    assert [(row["msdyn_loyaltycardid"], row["msdyn_partynumber"]) for row in value] == [(first_id, "MID")]


# -- rejected requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["$filter=msdyn_cardnumber eq 'X'", "$orderby=msdyn_cardnumber", "$expand=x", "$top=1"]
)
def test_query_option_with_track_changes_is_400_with_the_documented_message(api: Api, option: str) -> None:
    name = option.split("=", 1)[0]
    response = api.get(f"{CARDS}?{SELECT}&{option}", **TRACK)
    assert response.status_code == 400
    expected = f'The "{name}" query parameter isn\'t supported when Change Tracking is enabled.'
    assert response.json()["error"]["message"] == expected


def test_filter_added_to_a_delta_link_is_400(api: Api) -> None:
    response = api.get(baseline(api) + "&$filter=msdyn_cardnumber eq 'X'")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith('The "$filter" query parameter')


def test_table_without_change_tracking_rejects_track_changes_with_400(api: Api) -> None:
    response = api.get("transactioncurrencies?$select=isocurrencycode", **TRACK)
    assert_error(response, 400, "0x80072491", "Entity transactioncurrency isn't enabled for change tracking.")


def test_garbage_delta_token_is_400(api: Api) -> None:
    response = api.get(f"{CARDS}?{SELECT}&$deltatoken=not-a-token")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80040203"


# -- expiry ------------------------------------------------------------------------------------


def test_delta_link_expired_through_the_admin_route_is_400_expired_version_stamp(
    api: Api, emulator: DataverseServer
) -> None:
    link = baseline(api)
    requests.post(f"{emulator.url}/_emulator/change-tracking/expire", timeout=5).raise_for_status()
    assert_error(api.get(link), 400, *EXPIRED)


def test_new_baseline_after_expiry_works_again(api: Api, emulator: DataverseServer) -> None:
    baseline(api)
    emulator.expire_delta_tokens()
    link = baseline(api)
    card_id = create_card(api, "CT-REBASE")
    assert [row["msdyn_loyaltycardid"] for row in poll(api, link)["value"]] == [card_id]


def test_delta_link_older_than_expire_after_s_is_expired() -> None:
    emu = start_dataverse(port=0, expire_after_s=0.2)
    try:
        api = Api(emu)
        link = baseline(api)
        assert api.get(link).status_code == 200
        time.sleep(0.3)
        assert_error(api.get(link), 400, *EXPIRED)
    finally:
        emu.stop()


def test_well_formed_token_this_server_never_issued_is_expired(api: Api) -> None:
    response = api.get(f"{CARDS}?{SELECT}&$deltatoken=919042%2108%2f22%2f2017%2008%3a10%3a44")
    assert_error(response, 400, *EXPIRED)


def test_emulator_reset_expires_the_delta_links_of_the_emptied_tables(api: Api, emulator: DataverseServer) -> None:
    link = baseline(api)
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5).raise_for_status()
    assert_error(api.get(link), 400, *EXPIRED)
