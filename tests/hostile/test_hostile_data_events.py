"""Hostile input in the data-event format (docs/protocol-notes.md §4.4): the same answers as for business events. A body that
is neither format, or a data event the app cannot read, is a 400 naming the problem; a data event of another table
or another message is 200 ``ignored`` and counted; key columns get exactly the checks business-event key fields
get (the same cases as ``test_hostile_input``), and hostile key values are escaped end to end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.functions_host import QueuePump, invoke_http
from shared.runtime import Runtime
from tests.builders import as_body, card_row
from tests.data_events import (
    CARDS_TABLE,
    LEVELS_TABLE,
    SIZE_EXCEEDED,
    card_created,
    data_event,
    deleted,
    option_set,
    webhook_request,
    without_target,
)
from tests.e2e.stores import Stores
from tests.hostile.test_hostile_input import HOSTILE_KEYS, UNUSABLE_KEYS
from tests.otel import Telemetry


def post(body: bytes, template: str = "loyalty_cards", headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any]]:
    import function_app

    response = invoke_http(function_app.app, f"callback_{template}", webhook_request(template, body, headers))
    return response.status_code, json.loads(response.get_body())


def queued(runtime: Runtime, template: str = "loyalty_cards") -> int:
    return int(runtime.queues.client(template).get_queue_properties().approximate_message_count)


def with_target(**changes: Any) -> dict[str, Any]:
    event = card_created("A")
    event["InputParameters"][0]["value"].update(changes)
    return event


# -- neither format, or a data event the app cannot read: 400 naming the problem -----------------------------

def with_constant(event: dict[str, Any], constant: str) -> bytes:
    """A data event whose last attribute value is the literal ``constant`` (not JSON; Python's reader takes it)."""
    event["InputParameters"][0]["value"]["Attributes"].append({"key": "mserp_amount", "value": "@CONSTANT@"})
    return as_body(event).replace(b'"@CONSTANT@"', constant.encode())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_non_json_number_anywhere_in_a_data_event_gets_400(runtime: Runtime, constant: str) -> None:
    got, answer = post(with_constant(card_created("A"), constant))
    assert (got, f"{constant} is not a JSON value" in str(answer["error"])) == (400, True), answer
    assert queued(runtime) == 0


NOT_READABLE: list[tuple[str, Any, str]] = [
    ("neither format", {"CardNumber": "A", "Something": 1}, "neither a business event nor a data event"),
    ("MessageName a number", data_event(MessageName=7), "MessageName must be a string"),
    ("MessageName empty", data_event(MessageName=""), "MessageName is empty"),
    ("MessageName with a control character", data_event(MessageName="OnExternalCreated\n"), "control character"),
    ("no MessageName", {k: v for k, v in card_created("A").items() if k != "MessageName"}, "MessageName is missing"),
    ("InputParameters an object", data_event(InputParameters={"Target": {}}), "InputParameters must be an array"),
    ("InputParameters a string", data_event(InputParameters="Target"), "InputParameters must be an array"),
    ("InputParameters pair without key", data_event(InputParameters=[{"value": {}}]), "InputParameters[0]"),
    ("InputParameters pair with a numeric key", data_event(InputParameters=[{"key": 1, "value": {}}]),
     "InputParameters[0]"),
    ("Target twice", data_event(InputParameters=card_created("A")["InputParameters"] * 2), "names 'Target' twice"),
    ("no Target", data_event(InputParameters=[{"key": "Other", "value": 1}]), "holds no Target"),
    ("no InputParameters and no size header", without_target(card_created("A")), "InputParameters is missing"),
    ("Target an array", data_event(InputParameters=[{"key": "Target", "value": []}]), "Target must be an Entity"),
    ("Target null", data_event(InputParameters=[{"key": "Target", "value": None}]), "Target must be an Entity"),
    ("Attributes an object", with_target(Attributes={"mserp_cardnumber": "A"}), "Target.Attributes must be an array"),
    ("attribute without value", with_target(Attributes=[{"key": "mserp_cardnumber"}]), "Target.Attributes[0]"),
    ("attribute a bare string", with_target(Attributes=["mserp_cardnumber"]), "Target.Attributes[0]"),
    ("Target.Id not a GUID", with_target(Id="5637151326"), "Target.Id must be a GUID"),
    ("Target.Id a number", with_target(Id=5637151326), "Target.Id must be a GUID"),
    ("Target.Id with a newline", with_target(Id="00004951-0000-0000-5e1a-005001000000\n"), "Target.Id must be a GUID"),
    ("OperationId not a GUID", card_created("A", operation_id="op-1"), "OperationId must be a GUID"),
    ("OperationCreatedOn a number", card_created("A", OperationCreatedOn=1784051293000),
     "OperationCreatedOn must be a string"),
    ("tables disagree", with_target(LogicalName="mserp_custcustomergroupentity"), "name different tables"),
    ("no table named", {k: v for k, v in with_target(LogicalName=None).items() if k != "PrimaryEntityName"},
     "names no table"),
    ("Deleted without Target.Id", deleted("00000000-0000-0000-0000-000000000000"), "no Target.Id"),
    ("Created naming no record", data_event(attributes={"mserp_partynumber": "1"}, target=None) | {
        "InputParameters": [{"key": "Target", "value": {"Attributes": [], "LogicalName": CARDS_TABLE}}]},
     "names no record"),
    ("key column twice", data_event(attributes=[{"key": "mserp_cardnumber", "value": "A"},
                                                {"key": "MSERP_CardNumber", "value": "B"}]), "more than one attribute"),
]


@pytest.mark.parametrize(("event", "problem"), [c[1:] for c in NOT_READABLE], ids=[c[0] for c in NOT_READABLE])
def test_a_data_event_the_app_cannot_read_gets_400_naming_the_problem(runtime: Runtime, event: Any,
                                                                     problem: str) -> None:
    template = "loyalty_levels" if json.dumps(event).count(LEVELS_TABLE) else "loyalty_cards"
    got, answer = post(as_body(event), template, headers={"x-ms-dynamics-entity-name": ""})
    assert (got, problem in str(answer["error"])) == (400, True), answer
    assert queued(runtime, template) == 0


# -- key columns: exactly the business-event key rules --------------------------------------------------------

KEY_VALUES: list[tuple[str, Any, str]] = [
    ("empty", "", "key field CardNumber is empty"),
    ("null", None, "key field CardNumber must be a string, got null"),
    ("number", 12345, "must be a string"),
    ("array", ["A"], "must be a string"),
    ("object", {"$ne": ""}, "must be a string"),
    ("an option set", option_set(200000000), "must be a string"),
    ("bool", True, "must be a string"),
    ("newline", "A\nB", "control character"),
    ("NUL", "A\u0000B", "control character"),
    ("too long", "A" * 256, "longer than 255"),
    *UNUSABLE_KEYS,
]


@pytest.mark.parametrize(("card", "problem"), [c[1:] for c in KEY_VALUES], ids=[c[0] for c in KEY_VALUES])
def test_an_unusable_key_column_value_gets_400_as_in_a_business_event(runtime: Runtime, card: Any,
                                                                      problem: str) -> None:
    got, answer = post(as_body(card_created(card)))
    assert (got, problem in str(answer["error"]), "mserp_cardnumber" in str(answer["error"])) == (400, True, True)
    assert queued(runtime) == 0


def test_a_level_company_that_is_not_a_data_area_id_gets_400(runtime: Runtime) -> None:
    event = data_event(table=LEVELS_TABLE, attributes={"mserp_levelphrase": "Gold", "mserp_dataareaid": "usmf-1"})
    got, answer = post(as_body(event), "loyalty_levels")
    assert got == 400 and "dataAreaId" in str(answer["error"])


WITHIN_THE_CONTRACT: list[tuple[str, dict[str, Any]]] = [
    ("key of 255 characters", card_created("A" * 255)),
    ("key with spaces around it", card_created("  LC 01  ")),
    ("key Dataverse cannot address", card_created("LC/2024:01*%&<>?+\\")),
    ("key column in another case", data_event(attributes={"MSERP_CARDNUMBER": "A"})),
    ("table in another case", data_event(table="MSERP_RetailLoyaltyCardEntity", attributes={"mserp_cardnumber": "A"})),
    ("message in another case", data_event("onexternalupdated", attributes={"mserp_cardnumber": "A"})),
    ("Target.Id in braces and upper case", data_event(attributes={"mserp_cardnumber": "A"},
                                                      target="{00004951-0000-0000-5E1A-005001000000}")),
    ("no OperationCreatedOn", {k: v for k, v in card_created("A").items() if k != "OperationCreatedOn"}),
    ("the empty OperationId", card_created("A", operation_id="00000000-0000-0000-0000-000000000000")),
    ("no PrimaryEntityName", {k: v for k, v in card_created("A").items() if k != "PrimaryEntityName"}),
    ("Deleted naming only its id", deleted("00004951-0000-0000-5e1a-005001000000")),
    ("Updated naming only its id", data_event("OnExternalUpdated", attributes={"mserp_partynumber": "1"})),
    ("Deleted as an EntityReference", data_event("OnExternalDeleted", InputParameters=[{"key": "Target", "value": {
        "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id":
        "00004951-0000-0000-5e1a-005001000000", "LogicalName": CARDS_TABLE, "Name": None}}])),
]


@pytest.mark.parametrize("event", [c[1] for c in WITHIN_THE_CONTRACT], ids=[c[0] for c in WITHIN_THE_CONTRACT])
def test_a_data_event_at_the_edges_of_the_contract_is_queued(runtime: Runtime, event: dict[str, Any]) -> None:
    got, answer = post(as_body(event))
    assert (got, answer["status"]) == (202, "queued"), answer


def test_a_cut_body_with_the_size_header_is_queued_as_a_scan(runtime: Runtime) -> None:
    got, answer = post(as_body(without_target(card_created("A"))), headers=SIZE_EXCEEDED)
    assert (got, answer["kind"], answer["key"]) == (202, "refresh", None)


def test_a_data_event_over_64_kib_is_accepted_and_one_over_512_kib_is_413(runtime: Runtime) -> None:
    """Dataverse sends bodies up to 256 KB whole: the business events' 64 KiB limit does not apply."""
    big = data_event(attributes={"mserp_cardnumber": "A", "mserp_partynumber": "x" * 200_000})
    assert post(as_body(big))[0] == 202
    huge = data_event(attributes={"mserp_cardnumber": "A", "mserp_partynumber": "x" * 600_000})
    got, answer = post(as_body(huge))
    assert got == 413 and "limit" in str(answer["error"])


# -- another table or another message: 200 ignored, counted ---------------------------------------------------

NOT_FOR_THIS_TEMPLATE: list[tuple[str, dict[str, Any]]] = [
    ("a data event of another entity", data_event(table="mserp_custcustomergroupentity",
                                                  attributes={"mserp_customergroupid": "Default"})),
    ("a data event of another template's table", data_event(table=LEVELS_TABLE, attributes={"mserp_levelphrase": "G"})),
    ("a Dataverse Update message", data_event("Update", attributes={"mserp_cardnumber": "A"})),
    ("a cut event of another entity", without_target(data_event(table="mserp_custcustomergroupentity"))),
]


@pytest.mark.parametrize("event", [c[1] for c in NOT_FOR_THIS_TEMPLATE], ids=[c[0] for c in NOT_FOR_THIS_TEMPLATE])
def test_a_data_event_for_another_table_is_acknowledged_ignored_and_counted(runtime: Runtime, event: dict[str, Any],
                                                                            telemetry: Telemetry) -> None:
    got, answer = post(as_body(event), headers=SIZE_EXCEEDED if "InputParameters" not in event else None)
    assert (got, answer["status"]) == (200, "ignored")
    assert queued(runtime) == 0
    assert telemetry.callbacks("loyalty_cards") == {"ignored": 1}


# -- hostile keys in data events: escaped end to end ----------------------------------------------------------


@pytest.mark.parametrize("card", [k[1] for k in HOSTILE_KEYS[:6]], ids=[k[0] for k in HOSTILE_KEYS[:6]])
def test_a_data_event_naming_a_hostile_key_rereads_exactly_that_record(runtime: Runtime, stores: Stores,
                                                                       pump: QueuePump, card: str) -> None:
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                     if k != "ReplacementCardNumber"})
    status, _ = post(as_body(card_created(card)))
    assert status == 202 and pump.drain() == 1
    assert list(stores.actual("loyalty_cards")) == [(card,)]


def test_an_injection_shaped_key_in_a_data_event_writes_nothing(runtime: Runtime, stores: Stores,
                                                                pump: QueuePump) -> None:
    post(as_body(card_created("x') or true or ('")))
    assert pump.drain() == 1
    assert stores.dataverse_writes() == 0 and stores.actual("loyalty_cards") == {}


def test_a_forged_deleted_event_for_a_hostile_key_deletes_nothing_commerce_has(runtime: Runtime, stores: Stores,
                                                                              pump: QueuePump) -> None:
    card = "O'Brien/100%#1"
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                     if k != "ReplacementCardNumber"})
    record = "00004951-0000-0000-5e1a-005001000000"
    assert post(as_body(card_created(card, target=record)))[0] == 202 and pump.drain() == 1
    assert post(as_body(deleted(record)))[0] == 202 and pump.drain() == 1
    assert (card,) in stores.actual("loyalty_cards")
