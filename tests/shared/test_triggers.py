"""shared/triggers.py: every failure of a timer or queue trigger ends in a recorded run with its reason, which
``status`` and the status page show (each trigger invoked through the app object, as the host invokes it)."""

from __future__ import annotations

from typing import Any

import azure.functions as func
import pytest
import requests

from devtools.functions_host import QueuePump, invoke_http, invoke_timer
from shared.http.errors import ThrottledError
from shared.mapping.model import Direction
from shared.ops import page, queries
from shared.runtime import Runtime
from shared.state.store import encode_key
from shared.sync.parking import Parking
from tests.builders import as_body, business_event
from tests.e2e.stores import Stores

REFUSED = {"kind": "status", "status": 403, "code": "0x80040220", "message": "planted refusal"}


def app() -> func.FunctionApp:
    import function_app

    return function_app.app


def refuse(url: str, route: str, method: str = "GET") -> None:
    rule = {**REFUSED, "route": route, "method": method}
    requests.post(f"{url}/_emulator/faults", json={"rules": [rule]}, timeout=10).raise_for_status()


def status_row(runtime: Runtime, template: str, direction: str, scope: str) -> dict[str, Any]:
    [row] = [r for r in queries.status_rows(runtime)
             if (r["template"], r["direction"], r["scope"]) == (template, direction, scope)]
    return row


def assert_shown(runtime: Runtime, row: dict[str, Any], *words: str) -> None:
    assert row["failed_at"] and all(word in row["reason"] for word in words), row
    html = page.render(queries.overview(runtime), "ann", "token", None, local=True)
    assert str(page.esc(row["reason"])) in html


def timer_failing_on_a_refusal(runtime: Runtime, timer: str, service_url: str, entity_set: str,
                               direction: str) -> dict[str, Any]:
    """The cards' preflight passed (and cached); then the service refuses ``entity_set`` and ``timer`` runs: it
    raises the 403, and the scope's status row is returned."""
    runtime.preflight.require("loyalty_cards")
    refuse(service_url, entity_set)
    with pytest.raises(Exception, match="403"):
        invoke_timer(app(), timer)
    return status_row(runtime, "loyalty_cards", direction, "all")


def test_a_fanned_out_timer_whose_key_read_fails_records_the_failed_run_and_lets_the_lease_go(
        runtime: Runtime, stores: Stores) -> None:
    runtime.preflight.require("loyalty_cards")  # passed (and cached): the failure comes from the scan itself
    refuse(stores.commerce_url, "RetailLoyaltyCards")
    with pytest.raises(Exception, match="403"):
        invoke_timer(app(), "timer_loyalty_cards")
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (mark.last_status, mark.lease_owner) == ("failed", "")
    row = status_row(runtime, "loyalty_cards", "fo_to_dataverse", "all")
    assert row["status"] == "failed"
    assert_shown(runtime, row, "403", "planted refusal")


def test_an_in_place_timer_whose_read_fails_records_the_failed_run(runtime: Runtime, stores: Stores,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.settings, "fan_out", False)
    row = timer_failing_on_a_refusal(runtime, "timer_loyalty_cards", stores.commerce_url, "RetailLoyaltyCards",
                                     "fo_to_dataverse")
    assert row["status"] == "failed"
    assert_shown(runtime, row, "403")


def test_a_reverse_timer_whose_change_feed_fails_records_the_failed_run(runtime: Runtime, stores: Stores,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.settings, "two_way", True)
    row = timer_failing_on_a_refusal(runtime, "timer_inbound_loyalty_cards", stores.dataverse_url,
                                     "msdyn_loyaltycards", "dataverse_to_fo")
    assert row["status"] == "failed"
    assert_shown(runtime, row, "403")


def test_a_key_range_that_fails_in_the_pages_queue_is_recorded_on_its_run_which_keeps_its_lease(
        runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    invoke_timer(app(), "timer_loyalty_cards")  # plans and queues the key ranges
    refuse(stores.commerce_url, "RetailLoyaltyCards")
    pump.run_once()
    assert pump.failures and pump.failures[0].function == "pages_loyalty_cards"
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert mark.last_status == "failed" and mark.lease_owner == mark.open_run != ""  # the run goes on
    assert mark.open_run in mark.last_error and "page task" in mark.last_error and "403" in mark.last_error


def test_a_callback_work_item_that_hits_an_outage_is_recorded_on_its_scope(runtime: Runtime, stores: Stores,
                                                                           pump: QueuePump) -> None:
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    event = business_event(CardNumber=card)
    request = func.HttpRequest("POST", "http://localhost/api/callbacks/loyalty_cards", body=as_body(event),
                               headers={"Content-Type": "application/json"})
    assert invoke_http(app(), "callback_loyalty_cards", request).status_code == 202
    refuse(stores.dataverse_url, "msdyn_loyaltycards", method="PATCH")
    pump.run_once()
    assert pump.failures and pump.failures[0].function == "worker_loyalty_cards"  # the host retries the message
    row = status_row(runtime, "loyalty_cards", "fo_to_dataverse", "all")
    assert row["status"] == "failed"
    assert_shown(runtime, row, "callback work item", event["EventId"], "403")


def test_a_failed_retry_of_parked_records_is_recorded_for_its_template(runtime: Runtime, stores: Stores) -> None:
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    parking = Parking(runtime.state, "loyalty_cards", Direction.TO_DATAVERSE, plan=runtime.catalog.plan("loyalty_cards"))
    parking.park(encode_key((card,)), ThrottledError("throttled", status=429), "timer", None)
    refuse(stores.commerce_url, "RetailLoyaltyCards")
    with pytest.raises(Exception, match="403"):
        invoke_timer(app(), "timer_retry_parked")
    row = status_row(runtime, "loyalty_cards", "fo_to_dataverse", "all")
    assert row["status"] == "failed"
    assert_shown(runtime, row, "retry of parked records", "403")


def test_a_pending_refresh_that_fails_to_start_records_the_failed_run_and_stays_pending(
        runtime: Runtime, stores: Stores) -> None:
    runtime.preflight.require("loyalty_cards")
    runtime.state.refresh.request("loyalty_cards", "unknown_target_id")
    refuse(stores.commerce_url, "RetailLoyaltyCards")
    invoke_timer(app(), "timer_refresh_pending")  # one template's failure does not stop the others' refreshes
    row = status_row(runtime, "loyalty_cards", "fo_to_dataverse", "all")
    assert row["status"] == "failed"
    assert_shown(runtime, row, "403")
    assert queries.refreshes(runtime)["loyalty_cards"]["pending"]
