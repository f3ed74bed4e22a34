"""Fault injection on the Dataverse emulator: Dataverse error shapes (docs/protocol-notes.md §2.2,
§2.12) and faults aimed at one route, method or action."""

from __future__ import annotations

import pytest
import requests

from emulators.dataverse.server import DataverseServer
from tests.emulators.dataverse.support import CARD_TYPE, Api, card


def test_injected_429_uses_the_dataverse_throttling_body_and_retry_after(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(route="WhoAmI", kind="status", status=429, retry_after=2)
    response = api.get("WhoAmI")
    assert (response.status_code, response.headers["Retry-After"]) == (429, "2")
    assert response.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert response.json() == {
        "error": {
            "code": "0x80072322",
            "message": "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
        }
    }


def test_injected_429_can_name_the_execution_time_limit(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(kind="status", status=429, reason="execution_time")
    error = api.get("WhoAmI").json()["error"]
    assert error["code"] == "0x80072321"
    assert error["message"].startswith("Combined execution time of incoming requests exceeded limit of 1,200,000 milliseconds")


def test_injected_500_is_the_unexpected_error_0x80040216(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(kind="status", status=500)
    response = api.get("WhoAmI")
    assert (response.status_code, response.json()["error"]["code"]) == (500, "0x80040216")


def test_fault_limited_to_patch_leaves_other_methods_alone(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(route="resource", method="PATCH", kind="status", status=503, retry_after=1)
    assert api.post("msdyn_loyaltycards", card("F-1")).status_code == 204
    patched = api.session.patch(
        api.root + "msdyn_loyaltycards(msdyn_cardnumber='F-1')", json={"msdyn_partynumber": "P"}, timeout=5
    )
    assert (patched.status_code, patched.headers["Retry-After"]) == (503, "1")


def test_fault_on_an_entity_set_path_fires_on_the_nth_call_only(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(route="msdyn_loyaltycards", kind="status", status=503, nth=2)
    assert [api.get("msdyn_loyaltycards").status_code for _ in range(3)] == [200, 503, 200]
    assert api.get("cdm_companies").status_code == 200


def test_dropped_upsert_multiple_response_after_processing_still_wrote_the_rows(api: Api, emulator: DataverseServer) -> None:
    emulator.faults.add(route=r"Microsoft\.Dynamics\.CRM\.UpsertMultiple$", kind="drop", after=True, times=1)
    target = {"@odata.type": CARD_TYPE, "@odata.id": "msdyn_loyaltycards(msdyn_cardnumber='D-1')"}
    with pytest.raises(requests.ConnectionError):
        api.bulk("UpsertMultiple", [target])
    assert [row["msdyn_cardnumber"] for row in api.rows()] == ["D-1"]


def test_admin_faults_route_needs_no_token_and_reports_fires(api: Api, emulator: DataverseServer) -> None:
    rule = {"route": "WhoAmI", "kind": "status", "status": 503}
    assert requests.post(f"{emulator.url}/_emulator/faults", json={"rules": [rule]}, timeout=5).status_code == 201
    api.get("WhoAmI")
    state = requests.get(f"{emulator.url}/_emulator/faults", timeout=5).json()
    assert (state["rules"][0]["fired"], state["fired"]["status"]) == (1, 1)
