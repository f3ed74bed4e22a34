"""Dataverse $batch over real HTTP, replaying docs/protocol-notes.md §2.9."""

from __future__ import annotations

import re

import pytest
import requests

from emulators.dataverse.server import DataverseServer
from tests.emulators.dataverse.support import Api, batch_body, card, changeset, http_part, read_batch

CARDS = "/api/data/v9.2/msdyn_loyaltycards"
ODATA_JSON = "application/json; odata.metadata=minimal"
TOO_LONG = "X" * 31  # msdyn_cardnumber holds 30 characters




def documented_example() -> str:
    """The §2.9 request: a change set with two creates, then a GET outside it."""
    return batch_body(
        changeset(
            "changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a",
            http_part("POST", CARDS, card("C-1"), content_id="1"),
            http_part("POST", CARDS, card("C-2"), content_id="2"),
        ),
        http_part("GET", CARDS + "?$select=msdyn_cardnumber"),
        boundary="batch_22975cad-7f57-410d-be15-6363209367ea",
        crlf=True,
    )


def send_example(api: Api) -> requests.Response:
    return api.batch(documented_example(), boundary="batch_22975cad-7f57-410d-be15-6363209367ea")


# -- the documented exchange ---------------------------------------------------------------


def test_batch_answers_200_with_an_unquoted_server_generated_boundary(api: Api) -> None:
    response = send_example(api)
    assert response.status_code == 200
    assert re.fullmatch(r"multipart/mixed; boundary=batchresponse_[0-9a-f-]{36}", response.headers["Content-Type"])
    assert response.headers["OData-Version"] == "4.0"


def test_changeset_creates_answer_204_with_location_equal_to_entity_id(api: Api) -> None:
    creates = read_batch(send_example(api))[:2]
    for inner in creates:
        assert (inner.status, inner.reason, inner.in_changeset) == (204, "No Content", True)
        assert inner.headers["OData-Version"] == "4.0"
        assert inner.headers["Location"] == inner.headers["OData-EntityId"]
        assert re.fullmatch(re.escape(api.root) + r"msdyn_loyaltycards\([0-9a-f-]{36}\)", inner.headers["Location"])
        assert "REQ_ID" not in inner.headers


def test_content_ids_are_echoed_in_the_changeset_response(api: Api) -> None:
    assert [inner.content_id for inner in read_batch(send_example(api))] == ["1", "2", None]


def test_get_part_returns_200_json_with_the_streaming_content_type(api: Api) -> None:
    get = read_batch(send_example(api))[2]
    assert get.status == 200
    assert get.headers["Content-Type"] == "application/json; odata.metadata=minimal; odata.streaming=true"
    assert sorted(row["msdyn_cardnumber"] for row in get.json()["value"]) == ["C-1", "C-2"]


def test_response_layout_follows_the_documented_framing(api: Api) -> None:
    text = send_example(api).text
    outer = re.match(r"--(batchresponse_[0-9a-f-]{36})\r\n", text)
    assert outer is not None
    assert re.search(
        r"\r\nContent-Type: multipart/mixed; boundary=(changesetresponse_[0-9a-f-]{36})\r\n\r\n--\1\r\n"
        r"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n"
        r"HTTP/1\.1 204 No Content\r\nOData-Version: 4\.0\r\nLocation: \S+\r\nOData-EntityId: \S+\r\n\r\n\r\n--\1\r\n",
        text,
    )
    assert re.search(r"--changesetresponse_[0-9a-f-]{36}--\r\n--batchresponse_", text)
    assert text.endswith(f"--{outer.group(1)}--\r\n")


# -- framing variants ----------------------------------------------------------------------


@pytest.mark.parametrize(("quoted", "crlf"), [(False, False), (True, False), (False, True)])
def test_boundary_quoting_and_line_ends_are_accepted(api: Api, quoted: bool, crlf: bool) -> None:
    body = batch_body(http_part("POST", CARDS, card("Q-1")), crlf=crlf)
    response = api.batch(body, quoted=quoted)
    assert [inner.status for inner in read_batch(response)] == [204]


def test_inner_urls_may_be_absolute_or_relative_to_the_service_root(api: Api) -> None:
    body = batch_body(
        http_part("POST", api.root + "msdyn_loyaltycards", card("A-1")),
        http_part("POST", "msdyn_loyaltycards", card("A-2")),
    )
    assert [inner.status for inner in read_batch(api.batch(body))] == [204, 204]
    assert len(api.rows()) == 2


def test_inner_requests_honour_their_own_prefer_header(api: Api) -> None:
    body = batch_body(http_part("POST", CARDS, card("R-1"), headers={"Prefer": "return=representation"}))
    inner = read_batch(api.batch(body))[0]
    assert inner.status == 201
    assert inner.json()["msdyn_cardnumber"] == "R-1"


# -- Content-ID references -----------------------------------------------------------------


def test_content_id_reference_as_url_updates_the_row_created_earlier(api: Api) -> None:
    body = batch_body(
        changeset(
            "cs",
            http_part("POST", CARDS, card("REF-1"), content_id="1"),
            http_part("PATCH", "$1", {"msdyn_partynumber": "P-9"}, content_id="2"),
        )
    )
    assert [inner.status for inner in read_batch(api.batch(body))] == [204, 204]
    assert api.rows()[0]["msdyn_partynumber"] == "P-9"


def test_content_id_reference_in_odata_bind_links_the_row_created_earlier(api: Api) -> None:
    body = batch_body(
        changeset(
            "cs",
            http_part("POST", "/api/data/v9.2/cdm_companies", {"cdm_companycode": "NEWCO"}, content_id="1"),
            http_part(
                "POST",
                "/api/data/v9.2/msdyn_loyaltylevels",
                {"msdyn_levelphrase": "Gold", "msdyn_company@odata.bind": "$1"},
                content_id="2",
            ),
        )
    )
    assert [inner.status for inner in read_batch(api.batch(body))] == [204, 204]
    assert api.rows("msdyn_loyaltylevels")[0]["_msdyn_company_value"] == api.company_id("NEWCO")


def test_forward_content_id_reference_is_400_not_in_the_batch_context(api: Api) -> None:
    body = batch_body(
        changeset(
            "cs",
            http_part("PATCH", "$2", {"msdyn_partynumber": "P"}, content_id="1"),
            http_part("POST", CARDS, card("F-1"), content_id="2"),
        )
    )
    inner = read_batch(api.batch(body))[0]
    assert inner.status == 400
    assert inner.json()["error"]["message"] == "Content-ID Reference: '$2' does not exist in the batch context."


# -- atomicity and error handling -----------------------------------------------------------


def test_failing_changeset_rolls_back_all_its_operations_and_answers_one_error(api: Api) -> None:
    body = batch_body(
        changeset(
            "cs", http_part("POST", CARDS, card("OK-1"), content_id="1"), http_part("POST", CARDS, card(TOO_LONG), content_id="2")
        )
    )
    inners = read_batch(api.batch(body, Prefer="odata.continue-on-error"))
    assert [(inner.status, inner.in_changeset) for inner in inners] == [(400, False)]
    assert api.rows() == []


def test_without_continue_on_error_the_batch_stops_and_takes_the_failure_status(api: Api) -> None:
    body = batch_body(http_part("POST", CARDS, card(TOO_LONG)), http_part("POST", CARDS, card("LATER")))
    response = api.batch(body)
    assert (response.status_code, response.reason) == (400, "BadRequest")
    inners = read_batch(response)
    assert len(inners) == 1
    assert api.rows() == []


def test_inner_error_part_has_req_id_and_the_documented_error_body(api: Api) -> None:
    inner = read_batch(api.batch(batch_body(http_part("POST", CARDS, card(TOO_LONG)))))[0]
    assert (inner.status, inner.reason) == (400, "Bad Request")
    assert list(inner.headers) == ["REQ_ID", "Content-Type", "OData-Version"]
    assert inner.headers["Content-Type"] == ODATA_JSON
    assert inner.json() == {
        "error": {
            "code": "0x80044331",
            "message": "A validation error occurred.  The length of the 'msdyn_cardnumber' attribute of the "
            "'msdyn_loyaltycard' entity exceeded the maximum allowed length of '30'.",
        }
    }


def test_with_continue_on_error_outer_is_200_and_later_parts_run(api: Api) -> None:
    body = batch_body(http_part("POST", CARDS, card(TOO_LONG)), http_part("POST", CARDS, card("LATER")))
    response = api.batch(body, Prefer="odata.continue-on-error")
    assert response.status_code == 200
    assert [inner.status for inner in read_batch(response)] == [400, 204]
    assert [row["msdyn_cardnumber"] for row in api.rows()] == ["LATER"]


# -- limits and rejections -------------------------------------------------------------------


def test_more_than_1000_operations_is_rejected_with_400(api: Api) -> None:
    body = batch_body(*[http_part("GET", "/api/data/v9.2/WhoAmI")] * 1001)
    response = api.batch(body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == ODATA_JSON
    assert "1000" in response.json()["error"]["message"]


def test_get_inside_a_changeset_is_rejected_with_400(api: Api) -> None:
    response = api.batch(batch_body(changeset("cs", http_part("GET", CARDS))))
    assert response.status_code == 400
    assert "'GET'" in response.json()["error"]["message"]


def test_non_multipart_body_is_rejected_with_400(api: Api) -> None:
    response = api.session.post(api.root + "$batch", json={}, timeout=5)
    assert response.status_code == 400


def test_batch_without_bearer_token_is_401(emulator: DataverseServer) -> None:
    response = requests.post(
        emulator.api_url + "$batch", data=b"", headers={"Content-Type": "multipart/mixed; boundary=x"}, timeout=5
    )
    assert response.status_code == 401


def test_batch_counts_as_one_request_in_the_stats(api: Api, emulator: DataverseServer) -> None:
    requests.post(f"{emulator.url}/_emulator/stats/reset", timeout=5)
    send_example(api)
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert (stats["total"], stats["by_route"]) == (1, {"$batch": 1})


# -- batch_partial fault ----------------------------------------------------------------------


def test_batch_partial_fault_fails_the_chosen_operation_only(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(kind="batch_partial", operation=2, status=500)
    body = batch_body(*[http_part("POST", CARDS, card(f"BP-{i}")) for i in range(3)])
    inners = read_batch(api.batch(body, Prefer="odata.continue-on-error"))
    assert [inner.status for inner in inners] == [204, 500, 204]
    assert inners[1].json()["error"] == {"code": "0x80040216", "message": "An unexpected error occurred."}
    assert emulator.faults.fired()["batch_partial"] == 1


def test_batch_partial_fault_inside_a_changeset_rolls_the_set_back(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(kind="batch_partial", operation=2, status=400)
    body = batch_body(changeset("cs", http_part("POST", CARDS, card("S-1")), http_part("POST", CARDS, card("S-2"))))
    response = api.batch(body)
    assert response.status_code == 400
    assert api.rows() == []


def test_rolled_back_changeset_leaves_no_trace_in_change_tracking(api: Api) -> None:
    tracked = api.get("msdyn_loyaltycards?$select=msdyn_cardnumber", Prefer="odata.track-changes")
    delta_link = tracked.json()["@odata.deltaLink"]
    body = batch_body(changeset("cs", http_part("POST", CARDS, card("CT-1")), http_part("POST", CARDS, card(TOO_LONG))))
    assert api.batch(body).status_code == 400
    delta = api.session.get(delta_link, timeout=5)
    assert delta.status_code == 200
    assert delta.json()["value"] == []
