"""Hostile input: every case gets a clear 4xx or a parked record with its reason; no crash, no partial
write, and no injection into OData URLs or filters (keys escaped by OData rules, proven end to end)."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from devtools.functions_host import QueuePump, invoke_http
from shared.runtime import Runtime
from tests.builders import as_body, business_event, card_row
from tests.e2e.stores import Stores


def post_callback(body: bytes, template: str = "loyalty_cards") -> tuple[int, dict[str, Any]]:
    import function_app

    req = func.HttpRequest("POST", f"http://localhost/api/callbacks/{template}", body=body)
    response = invoke_http(function_app.app, f"callback_{template}", req)
    return response.status_code, json.loads(response.get_body())


# -- malformed callback bodies: 4xx naming the problem ---------------------------------------------

MALFORMED: list[tuple[str, bytes, int, str]] = [
    ("empty body", b"", 400, "not valid JSON"),
    ("whitespace", b"   ", 400, "not valid JSON"),
    ("truncated object", b'{"BusinessEventId": "X"', 400, "not valid JSON"),
    ("trailing garbage", as_body(business_event(CardNumber="A")) + b"}", 400, "not valid JSON"),
    ("single quotes", b"{'BusinessEventId': 'X'}", 400, "not valid JSON"),
    ("NaN literal", b'{"BusinessEventId": "X", "ControlNumber": NaN, "CardNumber": "A"}', 400, "ControlNumber"),
    ("invalid utf-8", b'{"BusinessEventId": "\xff\xfe"}', 400, "not valid JSON"),
    ("utf-16 body", json.dumps(business_event(CardNumber="A")).encode("utf-16"), 400, "not valid JSON"),
    ("array", b"[]", 400, "JSON object"),
    ("string", b'"event"', 400, "JSON object"),
    ("number", b"42", 400, "JSON object"),
    ("null", b"null", 400, "JSON object"),
    ("true", b"true", 400, "JSON object"),
    ("missing BusinessEventId", as_body({"EventId": "1", "CardNumber": "A"}), 400, "BusinessEventId"),
    ("empty BusinessEventId", as_body(business_event(BusinessEventId="", CardNumber="A")), 400, "BusinessEventId"),
    ("BusinessEventId not a string", as_body(business_event(BusinessEventId=7, CardNumber="A")), 400, "BusinessEventId"),
    ("BusinessEventId too long", as_body(business_event(BusinessEventId="X" * 201, CardNumber="A")), 400,
     "BusinessEventId"),
    ("ControlNumber text", as_body(business_event(ControlNumber="five", CardNumber="A")), 400, "ControlNumber"),
    ("ControlNumber negative", as_body(business_event(ControlNumber=-1, CardNumber="A")), 400, "ControlNumber"),
    ("ControlNumber float", as_body(business_event(ControlNumber=1.5, CardNumber="A")), 400, "ControlNumber"),
    ("ControlNumber object", as_body(business_event(ControlNumber={}, CardNumber="A")), 400, "ControlNumber"),
    ("EventTime ISO instead of WCF", as_body(business_event(EventTime="2024-01-01T00:00:00Z", CardNumber="A")), 400,
     "EventTime"),
    ("EventTime garbage", as_body(business_event(EventTime="/Date(abc)/", CardNumber="A")), 400, "EventTime"),
    ("MajorVersion text", as_body(business_event(MajorVersion="one", CardNumber="A")), 400, "MajorVersion"),
    ("legal entity too long", as_body(business_event(BusinessEventLegalEntity="X" * 11, CardNumber="A")), 400,
     "BusinessEventLegalEntity"),
    ("key missing", as_body(business_event()), 400, "missing key field(s) CardNumber"),
    ("key empty", as_body(business_event(CardNumber="")), 400, "missing key field(s) CardNumber"),
    ("key null", as_body(business_event(CardNumber=None)), 400, "missing key field(s) CardNumber"),
    ("key number", as_body(business_event(CardNumber=12345)), 400, "must be a string"),
    ("key array", as_body(business_event(CardNumber=["A"])), 400, "must be a string"),
    ("key object", as_body(business_event(CardNumber={"$ne": ""})), 400, "must be a string"),
    ("key bool", as_body(business_event(CardNumber=True)), 400, "must be a string"),
    ("key with newline", as_body(business_event(CardNumber="A\nB")), 400, "control characters"),
    ("key with carriage return", as_body(business_event(CardNumber="A\rB")), 400, "control characters"),
    ("key with NUL", as_body(business_event(CardNumber="A\u0000B")), 400, "control characters"),
    ("key with tab", as_body(business_event(CardNumber="A\tB")), 400, "control characters"),
    ("key too long", as_body(business_event(CardNumber="A" * 256)), 400, "longer than 255"),
    ("body over 64 KiB", as_body(business_event(CardNumber="A", Filler="x" * 70_000)), 413, "limit"),
    ("deeply nested", b'{"BusinessEventId": "X", "CardNumber": "A", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400,
     "nested too deeply"),
]


@pytest.mark.parametrize(("body", "status", "problem"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_callback_gets_a_clear_4xx_and_queues_nothing(runtime: Runtime, body: bytes, status: int,
                                                                  problem: str) -> None:
    got, answer = post_callback(body)
    assert got == status
    assert problem in str(answer["error"])
    assert runtime.queues.client("loyalty_cards").get_queue_properties().approximate_message_count == 0


def test_a_level_event_without_company_falls_back_to_the_legal_entity(runtime: Runtime) -> None:
    status, answer = post_callback(as_body(business_event(LevelPhrase="Gold", BusinessEventLegalEntity="USRT")),
                                   "loyalty_levels")
    assert (status, answer["key"]) == (202, {"dataAreaId": "USRT", "LevelPhrase": "Gold"})


# -- hostile keys: escaped by OData rules end to end -----------------------------------------------

HOSTILE_KEYS = [
    ("single quote", "O'Brien-01"),
    ("two quotes", "''"),
    ("quote at the end", "LC-1'"),
    ("odata or-injection", "x') or true or ('"),
    ("odata key-injection", "A',CardNumber='B"),
    ("slash", "LC/2024/01"),
    ("backslash", "LC\\01"),
    ("percent", "100%"),
    ("percent-encoded text", "LC%2701"),
    ("hash", "LC#01"),
    ("question mark", "LC?x=1"),
    ("ampersand", "LC&$filter=true"),
    ("plus", "LC+01"),
    ("spaces", "  LC 01  "),
    ("equals and comma", "a=b,c=d"),
    ("parentheses", "LC(01)"),
    ("dollar option", "$top=1"),
    ("unicode", "Kärtchen-Ωmega-✓"),
    ("emoji", "LC-🎟️-01"),
    ("right-to-left", "LC-\u202e10"),
    ("pipe", "LC|01"),
    ("asterisk wildcard", "*"),
]


@pytest.mark.parametrize("card", [k[1] for k in HOSTILE_KEYS], ids=[k[0] for k in HOSTILE_KEYS])
def test_a_hostile_card_number_syncs_exactly_and_only_itself(runtime: Runtime, stores: Stores, card: str) -> None:
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                     if k != "ReplacementCardNumber"})
    [summary] = runtime.outbound("loyalty_cards").run()
    assert summary.failed == 0
    assert stores.differences("loyalty_cards") == []
    assert (card,) in stores.actual("loyalty_cards")


@pytest.mark.parametrize("card", [k[1] for k in HOSTILE_KEYS[:6]], ids=[k[0] for k in HOSTILE_KEYS[:6]])
def test_a_callback_naming_a_hostile_key_rereads_exactly_that_record(runtime: Runtime, stores: Stores,
                                                                     pump: QueuePump, card: str) -> None:
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                     if k != "ReplacementCardNumber"})
    status, _ = post_callback(as_body(business_event(CardNumber=card)))
    assert status == 202 and pump.drain() == 1
    assert list(stores.actual("loyalty_cards")) == [(card,)]


def test_an_injection_shaped_key_that_matches_nothing_writes_nothing(runtime: Runtime, stores: Stores,
                                                                     pump: QueuePump) -> None:
    post_callback(as_body(business_event(CardNumber="x') or true or ('")))
    pump.drain()
    assert stores.dataverse_writes() == 0 and stores.actual("loyalty_cards") == {}


def test_a_hostile_key_can_be_deleted(runtime: Runtime, stores: Stores) -> None:
    card = "O'Brien/100%#1"
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                     if k != "ReplacementCardNumber"})
    runtime.outbound("loyalty_cards").run()
    stores.delete_in_commerce("RetailLoyaltyCards('O''Brien%2F100%25%231')")
    [summary] = runtime.outbound("loyalty_cards").run()
    assert summary.deleted == 1 and (card,) not in stores.actual("loyalty_cards")


# -- hostile values: parked with their reason, the rest of the batch syncs --------------------------

HOSTILE_VALUES = [
    ("int32 overflow", "RetailLoyaltyRewardPoints", "RedeemRanking", 2**31, "outside the range"),
    ("int32 underflow", "RetailLoyaltyRewardPoints", "VestingTimeValue", -(2**31) - 1, "outside the range"),
    ("int64 overflow", "RetailLoyaltyRewardPoints", "MaximumLoyaltyRewardPoints", 2**63, "outside the range"),
    ("number as text", "RetailLoyaltyRewardPoints", "ExpirationTimeValue", "12", "expected an integer"),
    ("unknown enum member", "RetailLoyaltyRewardPoints", "RewardPointType", "Bonus", "not in value map"),
    ("enum as integer", "RetailLoyaltyRewardPoints", "Redeemable", 1, "not in value map"),
    ("date before 1753", "RetailLoyaltyCards", "LoyaltyEnrollmentDate", "1600-01-01T00:00:00Z", "date range"),
    ("date not a date", "RetailLoyaltyCards", "LoyaltyEnrollmentDateLocal", "yesterday", "not an ISO 8601"),
    ("text too long for Dataverse", "RetailLoyaltyCards", "OmOperatingUnitNumber", "9" * 300, "maximum allowed length"),
]


@pytest.mark.parametrize(("entity_set", "prop", "value", "reason"), [v[1:] for v in HOSTILE_VALUES],
                         ids=[v[0] for v in HOSTILE_VALUES])
def test_a_hostile_value_is_parked_with_its_reason_while_the_rest_syncs(runtime: Runtime, stores: Stores,
                                                                        commerce_emulator: object, entity_set: str,
                                                                        prop: str, value: Any, reason: str) -> None:
    from emulators.commerce.entities import ENTITY_SETS_BY_NAME

    template = {"RetailLoyaltyCards": "loyalty_cards", "RetailLoyaltyRewardPoints": "loyalty_reward_points"}[entity_set]
    plan = runtime.catalog.plan(template)
    victim = stores.commerce_rows(template)[0]
    key = {p: victim[p] for p in plan.key_properties}
    store, entity = commerce_emulator.store, ENTITY_SETS_BY_NAME[entity_set]  # type: ignore[attr-defined]
    store.update(entity, store.key_of(entity, key), {prop: value})  # bypasses F&O validation, like bad data would
    [summary] = runtime.outbound(template).run()
    assert (summary.failed, summary.written) == (1, summary.seen - 1)
    [parked] = list(runtime.state.list_parked(template))
    assert reason in parked["error"] and tuple(json.loads(parked["key"])) == tuple(key.values())
    assert tuple(key.values()) not in stores.actual(template)  # nothing partial was written
