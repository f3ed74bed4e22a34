"""The Commerce emulator's business-events publisher (docs/protocol-notes.md §4, checklist §5.3)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.commerce.server import CommerceEmulator, start_commerce
from tests.emulators.commerce.receiver import TEST_EVENT, Receiver, serving

AUTH = {"Authorization": "Bearer test-token"}
RETRIES = 3


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from serving()


@pytest.fixture(scope="module")
def emu() -> Iterator[CommerceEmulator]:
    server = start_commerce(
        cards=10, reward_points=5, levels_per_company=2,
        publisher_options={"timeout": 2.0, "retries": RETRIES, "retry_wait": 0.02},
    )
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_publisher(emu: CommerceEmulator) -> Iterator[None]:
    yield
    requests.post(f"{emu.url}/_emulator/business-events/reset", timeout=10)


def register(emu: CommerceEmulator, url: str, entity_sets: list[str] | None = None,
             legal_entity: str | None = None) -> requests.Response:
    body = {"url": url, "entity_sets": entity_sets, "legal_entity": legal_entity}
    return requests.post(f"{emu.url}/_emulator/business-events/endpoints", json=body, timeout=10)


def patch_card(emu: CommerceEmulator, number: str, **changes: Any) -> None:
    response = requests.patch(f"{emu.url}/data/RetailLoyaltyCards('{number}')",
                              json=changes or {"PartyNumber": "000004242"}, headers=AUTH, timeout=10)
    assert response.status_code == 204, response.text


def drain(emu: CommerceEmulator) -> None:
    assert emu.publisher.flush(timeout=10)


# -- activation ------------------------------------------------------------------------------


def test_activation_sends_the_test_event(emu: CommerceEmulator, receiver: Receiver) -> None:
    assert register(emu, receiver.url("/activate")).status_code == 201
    events = receiver.received("/activate", include_test=True)
    assert len(events) == 1 and TEST_EVENT in events[0]["BusinessEventId"]


def test_activation_fails_when_the_endpoint_rejects_the_test_event(emu: CommerceEmulator, receiver: Receiver) -> None:
    receiver.status["/refuse"] = 503
    assert register(emu, receiver.url("/refuse")).status_code == 502
    assert requests.get(f"{emu.url}/_emulator/business-events/endpoints", timeout=10).json()["value"] == []


# -- change events ---------------------------------------------------------------------------


def test_patch_publishes_one_event_with_the_base_fields(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/base"), ["RetailLoyaltyCards"])
    patch_card(emu, "52100000002")
    drain(emu)
    [event] = receiver.received("/base")
    assert event["BusinessEventId"] == "RetailLoyaltyCardChangedBusinessEvent"
    assert event["BusinessEventLegalEntity"] == "USMF"
    assert event["ContextRecordSubject"] == ""
    assert isinstance(event["ControlNumber"], int) and event["ControlNumber"] > 0
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", event["EventId"])
    assert re.fullmatch(r"/Date\(\d{13}\)/", event["EventTime"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", event["EventTimeIso8601"])
    assert re.fullmatch(r"\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}",
                        event["InitiatingUserAADObjectId"])
    assert (event["MajorVersion"], event["MinorVersion"], event["ParentContextRecordSubjects"]) == (0, 0, [])


def test_patch_event_carries_the_key_and_change_type(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/key"), ["RetailLoyaltyCards"])
    patch_card(emu, "52100000003")
    drain(emu)
    [event] = receiver.received("/key")
    assert (event["CardNumber"], event["ChangeType"]) == ("52100000003", "Updated")


def test_level_event_carries_company_and_composite_key(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/level"), ["LoyaltyLevels"])
    response = requests.patch(f"{emu.url}/data/LoyaltyLevels(dataAreaId='usrt',LevelPhrase='Silver')",
                              json={"LevelDescription": "Silver tier"}, headers=AUTH, timeout=10)
    assert response.status_code == 204
    drain(emu)
    [event] = receiver.received("/level")
    assert event["BusinessEventId"] == "LoyaltyLevelChangedBusinessEvent"
    assert (event["BusinessEventLegalEntity"], event["dataAreaId"], event["LevelPhrase"]) == ("USRT", "usrt", "Silver")


def test_post_and_delete_publish_created_and_deleted(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/crud"), ["RetailLoyaltyCards"])
    requests.post(f"{emu.url}/data/RetailLoyaltyCards", json={"CardNumber": "LC-EV-1"}, headers=AUTH, timeout=10)
    requests.delete(f"{emu.url}/data/RetailLoyaltyCards('LC-EV-1')", headers=AUTH, timeout=10)
    drain(emu)
    assert [e["ChangeType"] for e in receiver.received("/crud")] == ["Created", "Deleted"]


def test_control_numbers_increase_between_events(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/order"), ["RetailLoyaltyCards"])
    for number in ("52100000004", "52100000005", "52100000006"):
        patch_card(emu, number)
    drain(emu)
    numbers = [e["ControlNumber"] for e in receiver.received("/order")]
    assert len(numbers) == 3 and numbers == sorted(set(numbers))


def test_failed_write_publishes_nothing(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/failed-write"), ["RetailLoyaltyCards"])
    requests.patch(f"{emu.url}/data/RetailLoyaltyCards('NO-SUCH')", json={"PartyNumber": "1"}, headers=AUTH, timeout=10)
    drain(emu)
    assert receiver.received("/failed-write") == []


def test_unsubscribed_entity_set_publishes_nothing(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/cards-only"), ["RetailLoyaltyCards"])
    point = requests.get(f"{emu.url}/data/RetailLoyaltyRewardPoints?$top=1", headers=AUTH, timeout=10).json()["value"][0]
    requests.patch(f"{emu.url}/data/RetailLoyaltyRewardPoints('{point['RewardPointId']}')",
                   json={"RedeemRanking": 9}, headers=AUTH, timeout=10)
    drain(emu)
    assert receiver.received("/cards-only") == []


def test_manual_publish_sends_an_event(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/manual"), ["RetailLoyaltyRewardPoints"])
    body = {"entity_set": "RetailLoyaltyRewardPoints", "key": {"RewardPointId": "PTS-0001"}, "change_type": "Updated"}
    assert requests.post(f"{emu.url}/_emulator/business-events/publish", json=body, timeout=10).status_code == 202
    drain(emu)
    [event] = receiver.received("/manual")
    assert (event["BusinessEventId"], event["RewardPointId"]) == ("RetailLoyaltyRewardPointChangedBusinessEvent", "PTS-0001")


# -- delivery failures and knobs -------------------------------------------------------------


def test_failing_receiver_gets_one_attempt_plus_three_retries(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/fail"), ["RetailLoyaltyCards"])
    receiver.status["/fail"] = 500
    patch_card(emu, "52100000007")
    drain(emu)
    attempts = receiver.received("/fail")
    assert len(attempts) == 1 + RETRIES
    assert len({e["EventId"] for e in attempts}) == 1


def test_exhausted_retries_put_the_event_in_the_error_log(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/error-log"), ["RetailLoyaltyCards"])
    receiver.status["/error-log"] = 500
    patch_card(emu, "52100000008")
    drain(emu)
    [entry] = requests.get(f"{emu.url}/_emulator/business-events/errors", timeout=10).json()["value"]
    assert (entry["attempts"], entry["last_status"], entry["payload"]["CardNumber"]) == (1 + RETRIES, 500, "52100000008")


def test_resend_delivers_an_error_log_entry_again(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/resend"), ["RetailLoyaltyCards"])
    receiver.status["/resend"] = 500
    patch_card(emu, "52100000009")
    drain(emu)
    receiver.status["/resend"] = 200
    requests.post(f"{emu.url}/_emulator/business-events/errors/resend", timeout=10)
    drain(emu)
    assert requests.get(f"{emu.url}/_emulator/business-events/errors", timeout=10).json()["value"] == []
    assert len(receiver.received("/resend")) == 1 + RETRIES + 1


def test_deliveries_record_the_status_of_every_attempt(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/record"), ["RetailLoyaltyCards"])
    receiver.status["/record"] = 500
    patch_card(emu, "52100000010")
    drain(emu)
    rows = requests.get(f"{emu.url}/_emulator/business-events/deliveries", timeout=10).json()["value"]
    statuses = [(d["attempt"], d["status"]) for d in rows if d["url"].endswith("/record") and d["BusinessEventId"] != TEST_EVENT]
    assert statuses == [(1, 500), (2, 500), (3, 500), (4, 500)]


def test_duplicate_knob_delivers_each_event_twice(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/dup"), ["RetailLoyaltyCards"])
    requests.post(f"{emu.url}/_emulator/business-events/config", json={"duplicate_delivery": True}, timeout=10)
    patch_card(emu, "52100000001")
    drain(emu)
    events = receiver.received("/dup")
    assert len(events) == 2 and events[0] == events[1]


def test_out_of_order_knob_swaps_consecutive_events(emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/swap"), ["RetailLoyaltyCards"])
    requests.post(f"{emu.url}/_emulator/business-events/config", json={"out_of_order": True, "hold_seconds": 1.0}, timeout=10)
    patch_card(emu, "52100000001")
    patch_card(emu, "52100000002")
    drain(emu)
    assert [e["CardNumber"] for e in receiver.received("/swap")] == ["52100000002", "52100000001"]


def test_with_both_knobs_an_event_is_overtaken_by_the_next_event_not_by_its_own_duplicate(
        emu: CommerceEmulator, receiver: Receiver) -> None:
    register(emu, receiver.url("/both"), ["RetailLoyaltyCards"])
    requests.post(f"{emu.url}/_emulator/business-events/config", timeout=10,
                  json={"duplicate_delivery": True, "out_of_order": True, "hold_seconds": 1.0})
    for card in ("52100000001", "52100000002", "52100000003"):
        patch_card(emu, card)
    drain(emu)
    assert [e["CardNumber"][-1] for e in receiver.received("/both")] == ["2", "1", "1", "3", "2", "3"]
