"""F&O data events (docs/protocol-notes.md §4.4) end to end: a Dataverse ``RemoteExecutionContext`` through the real callback
trigger, the storage queue and the worker, against both emulators and Azurite.

Created/Updated name their record by the virtual table's key columns (or only by ``Target.Id``); Deleted only by
``Target.Id``, resolved through an index the Created/Updated events fill. Every record is re-read from Commerce,
so a payload never writes data and a Deleted never deletes on its word; an id nobody knows, or a body Dataverse
cut for size, scans the template instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
import requests

from devtools.functions_host import LocalFunctionsHost, QueuePump, invoke_http, invoke_timer
from shared.runtime import Runtime
from shared.sync import operations
from tests.builders import as_body, card_row
from tests.clock import ManualClock
from tests.data_events import (
    LEVELS_TABLE,
    POINTS_TABLE,
    SIZE_EXCEEDED,
    card_created,
    card_updated,
    data_event,
    deleted,
    target_id,
    webhook_request,
    without_target,
)
from tests.e2e.stores import Stores
from tests.otel import Telemetry

TEMPLATES = ("loyalty_cards", "loyalty_levels", "loyalty_reward_points")


def app() -> func.FunctionApp:
    import function_app

    return function_app.app


def post(event: dict[str, Any], template: str = "loyalty_cards",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    response = invoke_http(app(), f"callback_{template}", webhook_request(template, as_body(event), headers))
    return response.status_code, json.loads(response.get_body())


def new_card(stores: Stores, card: str, **changes: Any) -> None:
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card, **changes).items()
                                                     if k != "ReplacementCardNumber"})


def counters(telemetry: Telemetry, template: str = "loyalty_cards") -> dict[str, float]:
    """What the queue worker did with the template's work items (``loyaltysync.work_items`` by outcome)."""
    return telemetry.work_items(template)


def refresh_timer() -> None:
    """The timer that starts the pending template refreshes that are due (every minute in Azure)."""
    invoke_timer(app(), "timer_refresh_pending")


def synced(runtime: Runtime, *templates: str) -> None:
    for template in templates or TEMPLATES:
        assert sum(s.failed for s in runtime.scan(template).run()) == 0


@pytest.fixture()
def publisher_knobs(runtime: Runtime, commerce_emulator: Any) -> Iterator[None]:
    """The publisher's knobs are the module's emulator's: restored after the test."""
    yield
    requests.post(f"{commerce_emulator.url}/_emulator/business-events/reset", timeout=30).raise_for_status()


# -- through the Commerce emulator's publisher, over HTTP ---------------------------------------------


def test_created_updated_and_deleted_events_over_http_leave_dataverse_equal_to_commerce(
        runtime: Runtime, stores: Stores, pump: QueuePump, commerce_emulator: Any, publisher_knobs: None,
        telemetry: Telemetry) -> None:
    """The done-when test: Created, Updated and Deleted data events of all three entities, each delivered twice,
    plus a Deleted for a record no data event ever named, through the real trigger, queue and worker."""
    synced(runtime)
    host = LocalFunctionsHost(app()).start()
    try:
        url = commerce_emulator.url
        requests.post(f"{url}/_emulator/business-events/config", json={"duplicate_delivery": True},
                      timeout=10).raise_for_status()
        for template in TEMPLATES:
            entity_set = runtime.catalog.plan(template).template.commerce.entity_set
            requests.post(f"{url}/_emulator/business-events/endpoints", timeout=10, json={
                "url": f"{host.url}/api/callbacks/{template}", "entity_sets": [entity_set],
                "format": "data_event"}).raise_for_status()
        seeded = [row["CardNumber"] for row in stores.commerce_rows("loyalty_cards")[:2]]
        new_card(stores, "DE-NEW-1")                                                       # Created
        new_card(stores, "DE-NEW-2")                                                       # Created
        stores.change_in_commerce("RetailLoyaltyCards('DE-NEW-1')", {"PartyNumber": "777"})  # Updated
        stores.change_in_commerce(f"RetailLoyaltyCards('{seeded[0]}')", {"CardTenderType": "Blocked"})  # Updated
        stores.create_in_commerce("LoyaltyLevels", {"dataAreaId": "usrt", "LevelPhrase": "Platinum DE",
                                                    "LevelDescription": "from a data event"})
        point = stores.commerce_rows("loyalty_reward_points")[0]["RewardPointId"]
        stores.change_in_commerce(f"RetailLoyaltyRewardPoints('{point}')", {"RedeemRanking": 7})
        assert commerce_emulator.publisher.flush(30)
        assert pump.drain(60) == 2 * 6  # one message per delivery
        stores.delete_in_commerce("RetailLoyaltyCards('DE-NEW-2')")                        # Deleted, id known
        stores.delete_in_commerce(f"RetailLoyaltyCards('{seeded[1]}')")                    # Deleted, id never seen
        assert commerce_emulator.publisher.flush(30)
        assert pump.drain(60) == 2 * 2  # the unknown id asked for the template's refresh
        refresh_timer()
        assert pump.drain(60) >= 1  # the key ranges (and delete checks) of the refresh's scan
        deliveries = requests.get(f"{url}/_emulator/business-events/deliveries", timeout=10).json()["value"]
        assert len(deliveries) == 2 * 8 and all(d["ok"] and d["format"] == "data_event" for d in deliveries)
    finally:
        host.stop()
    for template in TEMPLATES:
        assert stores.differences(template) == [], template
    actual = stores.actual("loyalty_cards")
    assert actual[("DE-NEW-1",)]["msdyn_partynumber"] == "777"
    assert ("DE-NEW-2",) not in actual and (seeded[1],) not in actual
    assert actual[(seeded[0],)]["msdyn_cardtendertype"] == 806380003
    cards = counters(telemetry)
    assert cards["duplicate"] == 6  # every second delivery of the six card events
    assert (cards["deleted"], cards["refresh_pending"]) == (1, 1)
    assert counters(telemetry, "loyalty_levels")["duplicate"] == 1
    assert counters(telemetry, "loyalty_reward_points")["duplicate"] == 1
    assert list(runtime.state.parked.all()) == []


# -- Created / Updated: the key from Target, the record from Commerce -------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_created_event_of_each_template_writes_the_record_as_commerce_has_it(
        runtime: Runtime, stores: Stores, pump: QueuePump, template: str, telemetry: Telemetry) -> None:
    row = stores.commerce_rows(template)[0]
    spec = runtime.catalog.plan(template).template.data_event
    assert spec is not None
    attributes = {column: row[prop] for prop, column in spec.key_columns.items()}
    status, body = post(data_event(table=spec.virtual_table, attributes=attributes), template)
    assert (status, body["status"], body["kind"]) == (202, "queued", "data_upsert")
    assert pump.drain() == 1
    assert len(stores.actual(template)) == 1 and stores.differences(template) != []  # only that record
    assert counters(telemetry, template) == {"written": 1}
    key = tuple(row[p] for p in runtime.catalog.plan(template).key_properties)
    assert stores.expected(template)[key] == stores.actual(template)[key]


def test_the_payload_values_are_never_written(runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    new_card(stores, "DE-PAYLOAD", PartyNumber="REAL")
    event = data_event(attributes={"mserp_cardnumber": "DE-PAYLOAD", "mserp_partynumber": "FORGED",
                                   "mserp_cardtendertype": {"__type": "OptionSetValue", "Value": 3}})
    assert post(event)[0] == 202 and pump.drain() == 1
    assert stores.actual("loyalty_cards")[("DE-PAYLOAD",)]["msdyn_partynumber"] == "REAL"


def test_a_level_event_names_its_company_and_phrase(runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    stores.create_in_commerce("LoyaltyLevels", {"dataAreaId": "usrt", "LevelPhrase": "DE Gold",
                                                "LevelDescription": "x"})
    status, body = post(data_event(table=LEVELS_TABLE, attributes={"mserp_levelphrase": "DE Gold",
                                                                   "mserp_dataareaid": "USRT"}), "loyalty_levels")
    assert (status, body["key"]) == (202, {"dataAreaId": "USRT", "LevelPhrase": "DE Gold"})
    assert pump.drain() == 1
    assert ("usrt", "DE Gold") in stores.actual("loyalty_levels")


def test_an_updated_event_without_key_columns_is_resolved_through_the_target_id_of_its_created_event(
        runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry) -> None:
    new_card(stores, "DE-INDEX")
    record = target_id()
    assert post(card_created("DE-INDEX", target=record))[0] == 202 and pump.drain() == 1
    stores.change_in_commerce("RetailLoyaltyCards('DE-INDEX')", {"PartyNumber": "CHANGED"})
    status, body = post(data_event("OnExternalUpdated", attributes={"mserp_partynumber": "CHANGED"}, target=record))
    assert (status, body["key"], body["target_id"]) == (202, None, record)
    assert pump.drain() == 1
    assert stores.actual("loyalty_cards")[("DE-INDEX",)]["msdyn_partynumber"] == "CHANGED"
    assert counters(telemetry) == {"written": 2}


# -- part of the key only: Target.Id first, then the key fields carried, then the coalesced refresh; never a 4xx --


def level_updated(phrase: str, target: str | None = None, **attributes: Any) -> dict[str, Any]:
    """A level's Updated event as documented: only the changed columns (here the phrase), no ``mserp_dataareaid``."""
    return data_event("OnExternalUpdated", table=LEVELS_TABLE, target=target,
                      attributes={"mserp_levelphrase": phrase, **attributes})


def test_a_level_update_carrying_only_its_phrase_is_resolved_through_the_target_id_of_its_created_event(
        runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry) -> None:
    """The review's case: this answered 400, which a Dataverse webhook never retries."""
    stores.create_in_commerce("LoyaltyLevels", {"dataAreaId": "usrt", "LevelPhrase": "DE Jade", "LevelDescription": "x"})
    record = target_id()
    created = data_event(table=LEVELS_TABLE, target=record,
                         attributes={"mserp_levelphrase": "DE Jade", "mserp_dataareaid": "usrt"})
    assert post(created, "loyalty_levels")[0] == 202 and pump.drain() == 1
    stores.change_in_commerce("LoyaltyLevels(dataAreaId='usrt',LevelPhrase='DE Jade')", {"LevelDescription": "now"})
    status, body = post(level_updated("DE Jade", target=record), "loyalty_levels")
    assert (status, body["kind"], body["target_id"]) == (202, "data_upsert", record)
    assert pump.drain() == 1
    assert stores.actual("loyalty_levels")[("usrt", "DE Jade")]["msdyn_description"] == "now"
    assert counters(telemetry, "loyalty_levels") == {"written": 2}


def commerce_gets(commerce_emulator: Any) -> int:
    stats = requests.get(f"{commerce_emulator.url}/_emulator/stats", timeout=10).json()
    return int(stats["by_method"].get("GET", 0))


def test_a_level_update_with_an_unknown_target_id_is_found_by_its_phrase_in_one_read(
        runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry, commerce_emulator: Any) -> None:
    stores.create_in_commerce("LoyaltyLevels", {"dataAreaId": "usmf", "LevelPhrase": "DE Opal", "LevelDescription": "x"})
    record = target_id()
    status, body = post(level_updated("DE Opal", target=record), "loyalty_levels")
    assert (status, body["kind"]) == (202, "data_upsert")
    gets = commerce_gets(commerce_emulator)
    assert pump.drain() == 1  # no refresh asked for: no scan, no key ranges
    assert commerce_gets(commerce_emulator) - gets == 2  # the lookup by phrase, then the re-read by key
    assert ("usmf", "DE Opal") in stores.actual("loyalty_levels") and len(stores.actual("loyalty_levels")) == 1
    assert counters(telemetry, "loyalty_levels") == {"written": 1}
    assert runtime.state.target_ids.key_of("loyalty_levels", record) is not None  # found once: remembered
    assert not runtime.state.refresh.get("loyalty_levels").pending


def test_a_phrase_several_companies_use_syncs_each_of_them(runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    """Without its company the phrase names one level per company: each is re-read (the others come out as they
    are), which still costs a few reads instead of a scan."""
    assert post(level_updated("Gold"), "loyalty_levels")[0] == 202 and pump.drain() == 1
    golds = {key for key in stores.actual("loyalty_levels") if key[1] == "Gold"}
    assert golds == {(row["dataAreaId"], "Gold") for row in stores.commerce_rows("loyalty_levels")
                     if row["LevelPhrase"] == "Gold"} and len(golds) == 3
    assert not runtime.state.refresh.get("loyalty_levels").pending


def test_a_level_update_without_target_id_or_company_is_still_accepted(runtime: Runtime, stores: Stores,
                                                                        pump: QueuePump) -> None:
    stores.create_in_commerce("LoyaltyLevels", {"dataAreaId": "demf", "LevelPhrase": "DE Onyx", "LevelDescription": "x"})
    status, body = post(level_updated("DE Onyx", target="00000000-0000-0000-0000-000000000000"), "loyalty_levels")
    assert (status, body["kind"]) == (202, "refresh")
    assert pump.drain() == 1
    assert ("demf", "DE Onyx") in stores.actual("loyalty_levels")
    assert not runtime.state.refresh.get("loyalty_levels").pending


def test_a_phrase_commerce_does_not_have_asks_for_the_templates_refresh(runtime: Runtime, pump: QueuePump,
                                                                        telemetry: Telemetry) -> None:
    assert post(level_updated("DE Nowhere"), "loyalty_levels")[0] == 202 and pump.drain() == 1
    assert runtime.state.refresh.get("loyalty_levels").pending
    assert telemetry.by("loyaltysync.refresh.requests", "reason", template="loyalty_levels") == {"partial_key": 1}


def test_an_updated_event_names_its_key_in_the_pre_image(runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    new_card(stores, "DE-PRE")
    event = data_event("OnExternalUpdated", attributes={"mserp_partynumber": "X"})
    pre = {"__type": "Entity", "Attributes": [{"key": "mserp_cardnumber", "value": "DE-PRE"}],
           "Id": event["InputParameters"][0]["value"]["Id"], "LogicalName": "mserp_retailloyaltycardentity"}
    event["InputParameters"].append({"key": "PreImage", "value": pre})
    status, body = post(event)
    assert (status, body["key"]) == (202, {"CardNumber": "DE-PRE"})
    assert pump.drain() == 1 and ("DE-PRE",) in stores.actual("loyalty_cards")


# -- de-duplication: OperationId, else MessageName + Target.Id + OperationCreatedOn; never order -------------


def test_a_data_event_delivered_twice_is_applied_once(runtime: Runtime, stores: Stores, pump: QueuePump,
        telemetry: Telemetry) -> None:
    new_card(stores, "DE-TWICE")
    event = card_created("DE-TWICE")
    assert [post(event)[0], post(event)[0]] == [202, 202]
    assert pump.drain() == 2
    assert counters(telemetry) == {"written": 1, "duplicate": 1}


def test_the_same_operation_id_is_one_event(runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry) -> None:
    new_card(stores, "DE-OPID")
    operation = "3C47A4CD-6EDC-4319-B893-3F862EED65FD"
    record = target_id()
    first = card_created("DE-OPID", target=record, operation_id=operation)
    again = card_created("DE-OPID", target=record, operation_id=operation.lower(),
                         created_on="/Date(1784051299000+0000)/")  # a redelivery; the time may be re-stamped
    assert post(first)[1]["event_id"] == post(again)[1]["event_id"]
    assert pump.drain() == 2
    assert counters(telemetry)["duplicate"] == 1


def test_two_records_of_one_operation_both_sync(runtime: Runtime, stores: Stores, pump: QueuePump,
                                               telemetry: Telemetry) -> None:
    """One F&O operation may change several records: the same OperationId on two Target.Ids is two events (the
    de-duplication id keys on the record too), so neither record is dropped as the other's duplicate."""
    new_card(stores, "DE-OP-A")
    new_card(stores, "DE-OP-B")
    operation = "7E57AB1E-0000-4000-8000-000000000001"
    first = post(card_created("DE-OP-A", operation_id=operation))[1]
    second = post(card_created("DE-OP-B", operation_id=operation))[1]
    assert first["event_id"] != second["event_id"]
    assert pump.drain() == 2
    assert {("DE-OP-A",), ("DE-OP-B",)} <= set(stores.actual("loyalty_cards"))
    assert counters(telemetry) == {"written": 2}


def test_two_updates_of_one_record_in_the_same_second_are_two_events(runtime: Runtime, stores: Stores,
                                                                     pump: QueuePump, telemetry: Telemetry) -> None:
    """No OperationId (as in F&O's capture) and OperationCreatedOn in whole seconds: the attributes tell them
    apart, so the second change is not dropped as a duplicate of the first."""
    new_card(stores, "DE-SECOND")
    record = target_id()
    assert post(card_created("DE-SECOND", target=record))[0] == 202 and pump.drain() == 1
    stores.change_in_commerce("RetailLoyaltyCards('DE-SECOND')", {"PartyNumber": "FIRST"})
    first = data_event("OnExternalUpdated", target=record, attributes={"mserp_partynumber": "FIRST"})
    assert post(first)[0] == 202 and pump.drain() == 1
    stores.change_in_commerce("RetailLoyaltyCards('DE-SECOND')", {"PartyNumber": "SECOND"})
    second = data_event("OnExternalUpdated", target=record, attributes={"mserp_partynumber": "SECOND"})
    assert post(second)[0] == 202 and pump.drain() == 1
    assert stores.actual("loyalty_cards")[("DE-SECOND",)]["msdyn_partynumber"] == "SECOND"
    assert "duplicate" not in counters(telemetry)


def test_the_empty_operation_id_is_no_identity(runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry) -> None:
    new_card(stores, "DE-ZERO")
    record, zero = target_id(), "00000000-0000-0000-0000-000000000000"
    assert post(card_created("DE-ZERO", target=record, operation_id=zero))[0] == 202 and pump.drain() == 1
    stores.change_in_commerce("RetailLoyaltyCards('DE-ZERO')", {"PartyNumber": "AFTER"})
    assert post(card_updated("DE-ZERO", target=record, operation_id=zero))[0] == 202 and pump.drain() == 1
    assert post(data_event("OnExternalUpdated", target=record, operation_id=zero,
                           attributes={"mserp_cardnumber": "DE-ZERO", "mserp_omoperatingunitnumber": "9"}))[0] == 202
    assert pump.drain() == 1
    assert "duplicate" not in counters(telemetry)
    assert stores.actual("loyalty_cards")[("DE-ZERO",)]["msdyn_partynumber"] == "AFTER"


def test_data_events_are_never_dropped_by_control_number(runtime: Runtime, stores: Stores, pump: QueuePump,
        telemetry: Telemetry) -> None:
    """Data events have no ControlNumber: each event of a key re-reads it, however many came before."""
    new_card(stores, "DE-CN")
    record = target_id()
    for party in ("P1", "P2", "P3"):
        stores.change_in_commerce("RetailLoyaltyCards('DE-CN')", {"PartyNumber": party})
        assert post(data_event("OnExternalUpdated", target=record,
                               attributes={"mserp_cardnumber": "DE-CN", "mserp_partynumber": party}))[0] == 202
        assert pump.drain() == 1
        assert stores.actual("loyalty_cards")[("DE-CN",)]["msdyn_partynumber"] == party
    assert counters(telemetry) == {"written": 3}


# -- Deleted: only Target.Id ---------------------------------------------------------------------------------


def test_a_deleted_event_for_a_known_id_deletes_the_row_once_commerce_confirms(runtime: Runtime, stores: Stores,
                                                                               pump: QueuePump, telemetry: Telemetry) -> None:
    new_card(stores, "DE-GONE")
    record = target_id()
    assert post(card_created("DE-GONE", target=record))[0] == 202 and pump.drain() == 1
    stores.delete_in_commerce("RetailLoyaltyCards('DE-GONE')")
    status, body = post(deleted(record))
    assert (status, body["kind"], body["target_id"]) == (202, "data_delete", record)
    assert pump.drain() == 1
    assert ("DE-GONE",) not in stores.actual("loyalty_cards")
    assert counters(telemetry) == {"written": 1, "deleted": 1}
    assert runtime.state.target_ids.key_of("loyalty_cards", record) is None  # the RecId is gone for good


def test_a_deleted_event_deletes_nothing_commerce_still_has(runtime: Runtime, stores: Stores,
                                                            pump: QueuePump, telemetry: Telemetry) -> None:
    new_card(stores, "DE-ALIVE")
    record = target_id()
    assert post(card_created("DE-ALIVE", target=record))[0] == 202 and pump.drain() == 1
    writes = stores.dataverse_writes()
    assert post(deleted(record))[0] == 202 and pump.drain() == 1
    assert ("DE-ALIVE",) in stores.actual("loyalty_cards") and stores.dataverse_writes() == writes
    assert counters(telemetry) == {"written": 1, "unchanged": 1}


def test_a_deleted_event_for_an_id_never_seen_scans_the_template(runtime: Runtime, stores: Stores,
                                                                 pump: QueuePump, telemetry: Telemetry) -> None:
    synced(runtime, "loyalty_cards")
    card = stores.commerce_rows("loyalty_cards")[5]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    status, body = post(deleted(target_id()))
    assert (status, body["kind"]) == (202, "data_delete")
    assert pump.drain() == 1  # the work item asks for the template's refresh: no scan from the worker itself
    assert (card,) in stores.actual("loyalty_cards")
    refresh_timer()
    assert pump.drain() >= 1  # the key ranges (and delete checks) of the refresh's scan
    assert (card,) not in stores.actual("loyalty_cards")
    assert stores.differences("loyalty_cards") == []
    assert counters(telemetry) == {"refresh_pending": 1}


def test_unknown_ids_arriving_together_cost_one_scan(runtime: Runtime, stores: Stores, pump: QueuePump,
                                                     monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry) -> None:
    """In place (no fan-out): the first makes the refresh pending, the others join it; the timer runs one scan."""
    monkeypatch.setattr(runtime.settings, "fan_out", False)
    synced(runtime, "loyalty_cards")
    cards = [row["CardNumber"] for row in stores.commerce_rows("loyalty_cards")[:3]]
    for card in cards:
        stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
        assert post(deleted(target_id()))[0] == 202
    assert pump.drain() == 3
    assert counters(telemetry) == {"refresh_pending": 1, "refresh_coalesced": 2}
    refresh_timer()
    assert runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all").run_seq == 2  # synced, then one
    assert not {(card,) for card in cards} & set(stores.actual("loyalty_cards"))


# -- refreshes: coalesced, at most one per minimum interval, every request counted --------------------------------


def scans(runtime: Runtime, template: str = "loyalty_cards") -> int:
    return runtime.state.watermarks.get(template, "fo_to_dataverse", "all").run_seq


@pytest.fixture()
def clock(runtime: Runtime) -> ManualClock:
    runtime.state.clock = manual = ManualClock()
    return manual


def test_five_unknown_ids_eight_seconds_apart_cost_one_scan(runtime: Runtime, stores: Stores, pump: QueuePump,
                                                            clock: ManualClock, telemetry: Telemetry) -> None:
    """The review's case: five small Deleted events for ids nobody knows, 8 s apart, once gave five full scans."""
    synced(runtime, "loyalty_cards")
    clock.advance(1)  # the callbacks come after the initial sync began (else it covers them)
    for _ in range(5):
        assert post(deleted(target_id()))[0] == 202
        assert pump.drain() == 1
        clock.advance(8)
    assert scans(runtime) == 1  # only the initial sync: the worker never scans for a callback itself
    refresh_timer()
    assert pump.drain() >= 1
    assert scans(runtime) == 2
    assert telemetry.by("loyaltysync.refresh.requests", "outcome", template="loyalty_cards") == {
        "pending": 1, "coalesced": 4}
    assert telemetry.by("loyaltysync.refreshes", "outcome", template="loyalty_cards") == {"started": 1}


def test_events_cut_for_size_and_unknown_ids_share_one_pending_refresh(runtime: Runtime, pump: QueuePump,
                                                                       clock: ManualClock, telemetry: Telemetry) -> None:
    synced(runtime, "loyalty_cards")
    clock.advance(1)
    assert post(without_target(card_created("X")), headers=SIZE_EXCEEDED)[1]["kind"] == "refresh"
    assert post(deleted(target_id()))[0] == 202
    assert pump.drain() == 2
    pending = runtime.state.refresh.get("loyalty_cards")
    assert (pending.pending, pending.requests, pending.reason) == (True, 2, "size_exceeded")
    assert telemetry.by("loyaltysync.refresh.requests", "reason", template="loyalty_cards") == {
        "size_exceeded": 1, "unknown_target_id": 1}


def test_a_refresh_starts_no_sooner_than_the_minimum_interval_after_the_last(
        runtime: Runtime, pump: QueuePump, clock: ManualClock, telemetry: Telemetry) -> None:
    interval = runtime.settings.refresh_min_interval_s
    synced(runtime, "loyalty_cards")
    clock.advance(1)
    assert post(deleted(target_id()))[0] == 202 and pump.drain() == 1
    refresh_timer()
    pump.drain()
    assert scans(runtime) == 2
    clock.advance(1)
    assert post(deleted(target_id()))[0] == 202 and pump.drain() == 1  # after that scan began: not covered by it
    refresh_timer()
    clock.advance(interval - 2)
    refresh_timer()
    assert scans(runtime) == 2 and runtime.state.refresh.get("loyalty_cards").pending  # waiting, not lost
    clock.advance(1)
    refresh_timer()
    pump.drain()
    assert scans(runtime) == 3 and not runtime.state.refresh.get("loyalty_cards").pending
    assert telemetry.by("loyaltysync.refreshes", "outcome", template="loyalty_cards") == {"started": 2}


def test_a_request_a_scan_began_after_is_covered_and_counted(runtime: Runtime, pump: QueuePump, clock: ManualClock,
                                                             telemetry: Telemetry) -> None:
    assert post(deleted(target_id()))[0] == 202
    clock.advance(1)
    synced(runtime, "loyalty_cards")  # the timer's scan, after the callback arrived
    assert pump.drain() == 1
    assert not runtime.state.refresh.get("loyalty_cards").pending
    assert telemetry.by("loyaltysync.refresh.requests", "outcome", template="loyalty_cards") == {"covered": 1}


def test_a_refresh_request_costs_commerce_nothing(runtime: Runtime, pump: QueuePump, commerce_emulator: Any) -> None:
    """A flood of unknown ids must stay cheap: asking for a refresh reads only the app's own tables (no
    LegalEntities, no preflight), even for a company-specific template."""
    assert post(deleted(target_id(), LEVELS_TABLE), "loyalty_levels")[0] == 202
    before = commerce_gets(commerce_emulator)
    assert pump.drain() == 1
    assert commerce_gets(commerce_emulator) == before
    assert runtime.state.refresh.get("loyalty_levels").pending


def test_a_pending_refresh_waits_while_its_template_is_paused(runtime: Runtime, pump: QueuePump, clock: ManualClock,
                                                              ) -> None:
    synced(runtime, "loyalty_cards")
    clock.advance(1)
    assert post(deleted(target_id()))[0] == 202 and pump.drain() == 1
    operations.pause(runtime, "loyalty_cards", by="test")
    refresh_timer()
    assert scans(runtime) == 1 and runtime.state.refresh.get("loyalty_cards").pending


# -- cut for size: 2xx, logged, a scan instead ----------------------------------------------------------------


def test_an_event_cut_for_size_is_accepted_and_scans_the_template(runtime: Runtime, stores: Stores, pump: QueuePump,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    synced(runtime, "loyalty_reward_points")
    point = stores.commerce_rows("loyalty_reward_points")[0]["RewardPointId"]
    stores.change_in_commerce(f"RetailLoyaltyRewardPoints('{point}')", {"RedeemRanking": 42})
    event = without_target(data_event("OnExternalUpdated", table=POINTS_TABLE))
    status, body = post(event, "loyalty_reward_points", SIZE_EXCEEDED)
    assert (status, body["kind"]) == (202, "refresh")
    assert any("cut for size" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert pump.drain() == 1
    refresh_timer()
    assert pump.drain() >= 1
    assert stores.actual("loyalty_reward_points")[(point,)]["msdyn_redeemranking"] == 42
    assert stores.differences("loyalty_reward_points") == []


# -- pause: data events are held and replayed like business events ------------------------------------------


def test_data_events_held_while_paused_are_applied_on_resume_in_arrival_order(runtime: Runtime, stores: Stores,
                                                                            pump: QueuePump, telemetry: Telemetry) -> None:
    """The Updated names its record only by Target.Id: it resolves only if the Created before it ran first."""
    new_card(stores, "DE-HELD")
    record = target_id()
    operations.pause(runtime, "loyalty_cards", by="test")
    assert post(card_created("DE-HELD", target=record))[0] == 202
    stores.change_in_commerce("RetailLoyaltyCards('DE-HELD')", {"PartyNumber": "WHILE-PAUSED"})
    assert post(data_event("OnExternalUpdated", target=record, attributes={"mserp_partynumber": "X"}))[0] == 202
    assert pump.drain() == 2
    assert counters(telemetry) == {"held": 2} and stores.actual("loyalty_cards") == {}
    assert operations.resume(runtime, "loyalty_cards", by="test") == 2
    assert pump.drain() == 2
    assert stores.actual("loyalty_cards")[("DE-HELD",)]["msdyn_partynumber"] == "WHILE-PAUSED"
    assert counters(telemetry) == {"held": 2, "written": 1, "unchanged": 1}


def test_a_data_event_that_cannot_be_queued_gets_503_which_dataverse_retries(runtime: Runtime,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.exceptions import ServiceRequestError

    def unreachable(*_args: Any, **_kwargs: Any) -> None:
        raise ServiceRequestError("connection refused")

    monkeypatch.setattr(runtime.queues, "send", unreachable)
    status, body = post(deleted(target_id()))
    assert status == 503 and "retry" in str(body["error"])
