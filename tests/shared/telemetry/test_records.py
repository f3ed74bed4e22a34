"""``loyaltysync.records`` and ``loyaltysync.runs``: real scans and work items against the emulators and Azurite,
read back through an in-memory metric reader."""

from __future__ import annotations

import pytest
import requests

from shared.clock import SYSTEM_CLOCK
from shared.messages.events import WorkItem
from shared.preflight import PreflightError
from shared.runtime import Runtime
from shared.sync import worker
from shared.sync.runs import DIRECTION_OUT
from tests.e2e.stores import Stores
from tests.otel import Telemetry

RECORDS, RUNS = "loyaltysync.records", "loyaltysync.runs"
CARDS = {"template": "loyalty_cards", "direction": DIRECTION_OUT, "scope": "all"}


def work_item(template: str, key: dict[str, str], event_id: str = "E-1") -> WorkItem:
    return WorkItem(template=template, key=key, event_id=event_id, business_event_id="ChangedBusinessEvent",
                    received_at=SYSTEM_CLOCK.now().isoformat(), correlation_id="c-1")


def dataverse_refuses_writes(stores: Stores) -> None:
    refusal = {"kind": "status", "status": 400, "code": "0x80044331", "message": "A validation error occurred."}
    requests.post(f"{stores.dataverse_url}/_emulator/faults", timeout=10,
                  json={"rules": [{**refusal, "method": "POST"}, {**refusal, "method": "PATCH"}]}).raise_for_status()


def test_a_first_scan_counts_every_record_read_and_written(runtime: Runtime, stores: Stores,
                                                           telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    cards = len(stores.commerce_rows("loyalty_cards"))
    assert telemetry.by(RECORDS, "outcome", **CARDS) == {"read": cards, "written": cards}


def test_a_rerun_counts_every_record_unchanged(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    runtime.scan("loyalty_cards").run()
    cards = len(stores.commerce_rows("loyalty_cards"))
    assert telemetry.by(RECORDS, "outcome", **CARDS) == {"read": 2 * cards, "written": cards, "unchanged": cards}


def test_a_record_deleted_in_commerce_is_counted_deleted(runtime: Runtime, stores: Stores,
                                                         telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    runtime.scan("loyalty_cards").run()
    assert telemetry.value(RECORDS, outcome="deleted", **CARDS) == 1


def test_a_record_dataverse_refuses_is_counted_parked_with_its_error_class(runtime: Runtime, stores: Stores,
                                                                           telemetry: Telemetry) -> None:
    dataverse_refuses_writes(stores)
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    assert worker.process(runtime, work_item("loyalty_cards", {"CardNumber": card})) == "parked"
    [parked] = runtime.state.parked.all("loyalty_cards")
    assert telemetry.by(RECORDS, "error_class", outcome="parked", **CARDS) == {parked["error_class"]: 1}


def test_a_parked_record_of_a_company_specific_template_is_counted_under_its_legal_entity(
        runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    dataverse_refuses_writes(stores)
    row = stores.commerce_rows("loyalty_levels")[0]
    key = {p: str(row[p]) for p in runtime.catalog.plan("loyalty_levels").key_properties}
    assert worker.process(runtime, work_item("loyalty_levels", key)) == "parked"
    assert telemetry.by(RECORDS, "scope", template="loyalty_levels", outcome="parked") == {key["dataAreaId"]: 1}


def test_a_work_item_written_counts_its_record_written(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    worker.process(runtime, work_item("loyalty_cards", {"CardNumber": card}))
    assert telemetry.by(RECORDS, "outcome", **CARDS) == {"written": 1}
    assert telemetry.work_items("loyalty_cards") == {"written": 1}


def test_a_finished_run_is_counted_with_its_status(runtime: Runtime, telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    assert telemetry.by(RUNS, "status", **CARDS) == {"completed": 1}


def test_a_run_with_parked_records_is_counted_completed_with_parked(runtime: Runtime, stores: Stores,
                                                                    telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000999"})
    dataverse_refuses_writes(stores)
    runtime.scan("loyalty_cards").run()
    assert telemetry.by(RUNS, "status", **CARDS) == {"completed": 1, "completed_with_parked": 1}


def test_a_run_that_finds_the_scope_leased_is_counted_skipped(runtime: Runtime, telemetry: Telemetry) -> None:
    runtime.state.watermarks.acquire_lease("loyalty_cards", DIRECTION_OUT, "all", "another-run", 600)
    runtime.scan("loyalty_cards").run()
    assert telemetry.by(RUNS, "status", **CARDS) == {"skipped": 1}


def test_a_run_its_preflight_stops_is_counted_failed(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    requests.post(f"{stores.commerce_url}/_emulator/faults", timeout=10, json={"rules": [
        {"route": "odata.resource", "method": "GET", "kind": "status", "status": 401}]}).raise_for_status()
    with pytest.raises(PreflightError):  # Commerce refuses the app's token: the run fails before it starts
        runtime.scan("loyalty_cards").run()
    assert telemetry.by(RUNS, "status", **CARDS) == {"failed": 1}
