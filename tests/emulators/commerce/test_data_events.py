"""The Commerce emulator's publisher sending F&O data events as a Dataverse webhook delivers them (docs/protocol-notes.md §4.4):
a ``RemoteExecutionContext`` per Create, Update and Delete, the webhook's headers and retry rule, and the knobs
for duplicates, bodies cut for size and OperationId."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.commerce.server import CommerceEmulator, start_commerce
from tests.emulators.commerce.receiver import Receiver, serving

AUTH = {"Authorization": "Bearer test-token"}
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CARDS = "mserp_retailloyaltycardentity"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from serving()


@pytest.fixture(scope="module")
def emu() -> Iterator[CommerceEmulator]:
    server = start_commerce(cards=10, reward_points=5, levels_per_company=2,
                            publisher_options={"timeout": 2.0, "retries": 3, "retry_wait": 0.02})
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_publisher(emu: CommerceEmulator) -> Iterator[None]:
    yield
    requests.post(f"{emu.url}/_emulator/business-events/reset", timeout=10)


def webhook(emu: CommerceEmulator, url: str, entity_sets: list[str] | None = None, **knobs: Any) -> None:
    response = requests.post(f"{emu.url}/_emulator/business-events/endpoints", timeout=10,
                             json={"url": url, "entity_sets": entity_sets, "format": "data_event"})
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "data_event"
    if knobs:
        requests.post(f"{emu.url}/_emulator/business-events/config", json=knobs, timeout=10).raise_for_status()


def drain(emu: CommerceEmulator) -> None:
    assert emu.publisher.flush(timeout=10)


def target(body: dict[str, Any]) -> dict[str, Any]:
    [parameter] = body["InputParameters"]
    assert parameter["key"] == "Target"
    value: dict[str, Any] = parameter["value"]
    return value


def attributes(body: dict[str, Any]) -> dict[str, Any]:
    return {pair["key"]: pair["value"] for pair in target(body)["Attributes"]}


def create_update_delete(emu: CommerceEmulator, card: str) -> None:
    for method, path, body in [("POST", "RetailLoyaltyCards", {"CardNumber": card, "CardTenderType": "Blocked",
                                                               "LoyaltyEnrollmentDate": "2024-03-01T00:00:00Z"}),
                               ("PATCH", f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000042"}),
                               ("DELETE", f"RetailLoyaltyCards('{card}')", None)]:
        response = requests.request(method, f"{emu.url}/data/{path}", json=body, headers=AUTH, timeout=10)
        assert response.status_code in (201, 204), response.text


def test_registering_a_webhook_sends_no_test_event(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/no-test"))
    drain(emu)
    assert receiver.deliveries("/no-test") == []


def test_create_update_delete_send_the_three_messages_on_the_virtual_table(emu: CommerceEmulator,
                                                                          receiver: Receiver) -> None:
    webhook(emu, receiver.url("/crud"), ["RetailLoyaltyCards"])
    create_update_delete(emu, "DE-1")
    drain(emu)
    bodies = [b for _, b in receiver.deliveries("/crud")]
    assert [b["MessageName"] for b in bodies] == ["OnExternalCreated", "OnExternalUpdated", "OnExternalDeleted"]
    assert {b["PrimaryEntityName"] for b in bodies} == {CARDS}
    assert {target(b)["LogicalName"] for b in bodies} == {CARDS}
    assert all("BusinessEventId" not in b and "ControlNumber" not in b and "EventId" not in b for b in bodies)
    assert all(re.fullmatch(r"/Date\(\d+000\+0000\)/", b["OperationCreatedOn"]) for b in bodies)  # whole seconds
    assert all("OperationId" not in b for b in bodies)  # as in the F&O capture, by default


def test_every_event_of_one_record_carries_the_same_target_id_and_a_new_record_a_new_one(
        emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/ids"), ["RetailLoyaltyCards"])
    create_update_delete(emu, "DE-2")
    create_update_delete(emu, "DE-2")  # the same key, created again: a new RecId
    drain(emu)
    ids = [target(b)["Id"] for _, b in receiver.deliveries("/ids")]
    assert all(re.fullmatch(GUID, i) for i in ids)
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1 and ids[0] != ids[3]
    rec_id = int.from_bytes(bytes.fromhex(ids[0].replace("-", "")[16:]), "little")  # the last 8 bytes
    assert rec_id >= 5_637_151_326


def test_created_carries_the_row_as_mserp_columns_and_deleted_only_the_id(emu: CommerceEmulator,
                                                                         receiver: Receiver) -> None:
    webhook(emu, receiver.url("/shape"), ["RetailLoyaltyCards"])
    create_update_delete(emu, "DE-3")
    drain(emu)
    created, updated, removed = (b for _, b in receiver.deliveries("/shape"))
    values = attributes(created)
    assert values["mserp_cardnumber"] == "DE-3"
    assert values["mserp_cardtendertype"]["__type"].startswith("OptionSetValue")
    assert values["mserp_cardtendertype"]["Value"] == 200_000_003  # an integer, never the member name
    assert values["mserp_loyaltyenrollmentdate"] == "/Date(1709251200000)/"
    assert "mserp_loyaltyenrollmentdatelocal" not in values  # an empty date is left out
    assert "mserp_loyaltyenrollmenttime" not in values  # Time fields are not on virtual tables
    assert attributes(updated)["mserp_partynumber"] == "000042"
    assert target(removed)["Attributes"] == [] and target(removed)["Id"] == target(created)["Id"]


def test_a_level_carries_its_company_column(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/level"), ["LoyaltyLevels"])
    requests.patch(f"{emu.url}/data/LoyaltyLevels(dataAreaId='usrt',LevelPhrase='Silver')",
                   json={"LevelDescription": "x"}, headers=AUTH, timeout=10).raise_for_status()
    drain(emu)
    [(_, body)] = receiver.deliveries("/level")
    assert body["PrimaryEntityName"] == "mserp_smmloyaltylevelentity"
    assert (attributes(body)["mserp_dataareaid"], attributes(body)["mserp_levelphrase"]) == ("usrt", "Silver")


def test_the_webhook_headers_name_the_message_and_table(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/headers"), ["RetailLoyaltyCards"])
    create_update_delete(emu, "DE-4")
    drain(emu)
    headers, body = receiver.deliveries("/headers")[0]
    assert headers["x-ms-dynamics-entity-name"] == CARDS
    assert headers["x-ms-dynamics-request-name"] == "OnExternalCreated"
    assert headers["x-ms-correlation-request-id"] == body["CorrelationId"]
    assert "x-ms-dynamics-organization" in headers and "x-ms-dynamics-msg-size-exceeded" not in headers


def test_updated_without_keys_knob_leaves_the_key_columns_out(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/nokeys"), ["RetailLoyaltyCards"], updated_carries_keys=False)
    create_update_delete(emu, "DE-5")
    drain(emu)
    created, updated, _ = (b for _, b in receiver.deliveries("/nokeys"))
    assert "mserp_cardnumber" in attributes(created) and "mserp_cardnumber" not in attributes(updated)


def test_size_exceeded_knob_cuts_the_body_and_says_so_in_a_header(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/cut"), ["RetailLoyaltyCards"], size_exceeded=True)
    create_update_delete(emu, "DE-6")
    drain(emu)
    for headers, body in receiver.deliveries("/cut"):
        assert headers["x-ms-dynamics-msg-size-exceeded"] == "true"
        assert not {"InputParameters", "PreEntityImages", "PostEntityImages", "ParentContext"} & set(body)
        assert body["PrimaryEntityName"] == CARDS


@pytest.mark.parametrize(("mode", "check"), [("unique", lambda ids: len(set(ids)) == 3 and all(ids)),
                                             ("zero", lambda ids: set(ids) == {"00000000-0000-0000-0000-000000000000"})])
def test_operation_id_knob(emu: CommerceEmulator, receiver: Receiver, mode: str, check: Any) -> None:
    webhook(emu, receiver.url(f"/op-{mode}"), ["RetailLoyaltyCards"], operation_id=mode)
    create_update_delete(emu, f"DE-OP-{mode}")
    drain(emu)
    assert check([b["OperationId"] for _, b in receiver.deliveries(f"/op-{mode}")])


def test_an_unknown_operation_id_mode_is_refused(emu: CommerceEmulator) -> None:
    response = requests.post(f"{emu.url}/_emulator/business-events/config", json={"operation_id": "sometimes"},
                             timeout=10)
    assert response.status_code == 400 and "operation_id" in response.text


def test_duplicate_knob_delivers_each_data_event_twice(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/dup"), ["RetailLoyaltyCards"], duplicate_delivery=True)
    create_update_delete(emu, "DE-7")
    drain(emu)
    bodies = [b for _, b in receiver.deliveries("/dup")]
    assert len(bodies) == 6 and all(bodies[i] == bodies[i + 1] for i in (0, 2, 4))


@pytest.mark.parametrize(("status", "attempts"), [(503, 2), (502, 2), (504, 2), (500, 1), (429, 1), (400, 1)])
def test_a_webhook_is_retried_once_and_only_after_502_503_504(emu: CommerceEmulator, receiver: Receiver,
                                                             status: int, attempts: int) -> None:
    path = f"/fail-{status}"
    receiver.status[path] = status
    webhook(emu, receiver.url(path), ["RetailLoyaltyCards"])
    requests.patch(f"{emu.url}/data/RetailLoyaltyCards('52100000001')", json={"PartyNumber": "1"}, headers=AUTH,
                   timeout=10).raise_for_status()
    drain(emu)
    assert len(receiver.deliveries(path)) == attempts
    [entry] = requests.get(f"{emu.url}/_emulator/business-events/errors", timeout=10).json()["value"]
    assert (entry["attempts"], entry["last_status"], entry["MessageName"]) == (attempts, status, "OnExternalUpdated")
    receiver.status[path] = 200
    requests.post(f"{emu.url}/_emulator/business-events/errors/resend", timeout=10).raise_for_status()
    drain(emu)
    resent_headers, resent = receiver.deliveries(path)[-1]
    assert resent["MessageName"] == "OnExternalUpdated" and resent_headers["x-ms-dynamics-entity-name"] == CARDS


def test_business_event_endpoints_still_get_business_events(emu: CommerceEmulator, receiver: Receiver) -> None:
    webhook(emu, receiver.url("/webhook"), ["RetailLoyaltyCards"])
    requests.post(f"{emu.url}/_emulator/business-events/endpoints", timeout=10,
                  json={"url": receiver.url("/be"), "entity_sets": ["RetailLoyaltyCards"]}).raise_for_status()
    requests.patch(f"{emu.url}/data/RetailLoyaltyCards('52100000002')", json={"PartyNumber": "2"}, headers=AUTH,
                   timeout=10).raise_for_status()
    drain(emu)
    [(_, webhook_body)] = receiver.deliveries("/webhook")
    business = [b for _, b in receiver.deliveries("/be") if "TestEndpointContract" not in b["BusinessEventId"]]
    assert webhook_body["MessageName"] == "OnExternalUpdated"
    assert [(b["BusinessEventId"], b["CardNumber"]) for b in business] == [
        ("RetailLoyaltyCardChangedBusinessEvent", "52100000002")]
