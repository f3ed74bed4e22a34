"""Hostile input: every case gets a clear 4xx (or, for a well-formed event this template does not handle,
200 ``ignored``) or a parked record with its reason; never a 5xx, no crash, no partial write, and no injection
into OData URLs or filters (keys escaped by OData rules, proven end to end)."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from devtools.functions_host import QueuePump, invoke_http
from shared.runtime import Runtime
from tests.builders import as_body, business_event, business_event_without, card_row
from tests.e2e.stores import Stores
from tests.otel import Telemetry


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
    ("NaN literal", b'{"BusinessEventId": "X", "ControlNumber": NaN, "CardNumber": "A"}', 400, "NaN is not a JSON"),
    ("NaN in a field the app never reads", as_body(business_event(CardNumber="A"))[:-1] + b', "Amount": NaN}', 400,
     "NaN is not a JSON value"),
    ("Infinity in a field the app never reads", as_body(business_event(CardNumber="A"))[:-1] + b', "Amount": Infinity}',
     400, "Infinity is not a JSON value"),
    ("-Infinity nested in an array", as_body(business_event(CardNumber="A"))[:-1] + b', "Amounts": [1, -Infinity]}',
     400, "-Infinity is not a JSON value"),
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
    ("key empty", as_body(business_event(CardNumber="")), 400, "key field CardNumber is empty"),
    ("key null", as_body(business_event(CardNumber=None)), 400, "key field CardNumber must be a string, got null"),
    ("key number", as_body(business_event(CardNumber=12345)), 400, "must be a string"),
    ("key array", as_body(business_event(CardNumber=["A"])), 400, "must be a string"),
    ("key object", as_body(business_event(CardNumber={"$ne": ""})), 400, "must be a string"),
    ("key bool", as_body(business_event(CardNumber=True)), 400, "must be a string"),
    ("key with newline", as_body(business_event(CardNumber="A\nB")), 400, "control character"),
    ("key with carriage return", as_body(business_event(CardNumber="A\rB")), 400, "control character"),
    ("key with NUL", as_body(business_event(CardNumber="A\u0000B")), 400, "control character"),
    ("key with tab", as_body(business_event(CardNumber="A\tB")), 400, "control character"),
    ("key too long", as_body(business_event(CardNumber="A" * 256)), 400, "longer than 255"),
    ("body over 64 KiB", as_body(business_event(CardNumber="A", Filler="x" * 70_000)), 413, "limit"),
    ("deeply nested", b'{"BusinessEventId": "X", "CardNumber": "A", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400,
     "nested too deeply"),
    ("number of 5,000 digits", b'{"BusinessEventId": "X", "CardNumber": "A", "x": ' + b"9" * 5000 + b"}", 400,
     "too many digits"),
    ("repeated member name", b'{"CardNumber": "A", "CardNumber": "B", ' + as_body(business_event())[1:], 400,
     "repeats the member name"),
]

# -- the base contract fields (docs/protocol-notes.md section 4.2): present, exact JSON types, no coercion -----

CONTRACT_VIOLATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("EventId missing", business_event_without("EventId", CardNumber="A"), "EventId"),
    ("EventId empty", business_event(EventId="", CardNumber="A"), "EventId"),
    ("EventId not a GUID", business_event(EventId="1", CardNumber="A"), "EventId"),
    ("EventId with a newline after the GUID",
     business_event(EventId="3C47A4CD-6EDC-4319-B893-3F862EED65FD\n", CardNumber="A"), "EventId"),
    ("ControlNumber missing", business_event_without("ControlNumber", CardNumber="A"), "ControlNumber"),
    ("ControlNumber 2^63", business_event(ControlNumber=2**63, CardNumber="A"), "ControlNumber"),
    ("ControlNumber 2^64", business_event(ControlNumber=2**64, CardNumber="A"), "ControlNumber"),
    ("ControlNumber Infinity", business_event(ControlNumber=float("inf"), CardNumber="A"), "Infinity is not a JSON value"),
    ("legal entity missing", business_event_without("BusinessEventLegalEntity", CardNumber="A"),
     "BusinessEventLegalEntity"),
    ("legal entity empty", business_event(BusinessEventLegalEntity="", CardNumber="A"), "BusinessEventLegalEntity"),
    ("legal entity of 5 characters", business_event(BusinessEventLegalEntity="USMF1", CardNumber="A"),
     "BusinessEventLegalEntity"),
    ("legal entity with punctuation", business_event(BusinessEventLegalEntity="U'1", CardNumber="A"),
     "BusinessEventLegalEntity"),
    ("EventTime missing", business_event_without("EventTime", CardNumber="A"), "EventTime"),
    ("EventTime after year 9999", business_event(EventTime="/Date(253402300800000)/", CardNumber="A"), "EventTime"),
    ("EventTime of 20 digits", business_event(EventTime="/Date(99999999999999999999)/", CardNumber="A"), "EventTime"),
    ("EventTime with a newline after it", business_event(EventTime="/Date(1672408275000)/\n", CardNumber="A"),
     "EventTime"),
    ("EventTime in Arabic-Indic digits", business_event(EventTime="/Date(\u0661\u0666\u0667\u0662)/", CardNumber="A"),
     "EventTime"),
    ("MajorVersion missing", business_event_without("MajorVersion", CardNumber="A"), "MajorVersion"),
    ("MinorVersion missing", business_event_without("MinorVersion", CardNumber="A"), "MinorVersion"),
    ("MinorVersion negative", business_event(MinorVersion=-1, CardNumber="A"), "MinorVersion"),
    ("EventTimeIso8601 not a time", business_event(EventTimeIso8601="yesterday", CardNumber="A"), "EventTimeIso8601"),
    ("EventTimeIso8601 a WCF date", business_event(EventTimeIso8601="/Date(1672408275000)/", CardNumber="A"),
     "EventTimeIso8601"),
    ("EventTimeIso8601 a date only", business_event(EventTimeIso8601="2022-12-30", CardNumber="A"), "EventTimeIso8601"),
    ("EventTimeIso8601 without its offset", business_event(EventTimeIso8601="2022-12-30T13:51:15", CardNumber="A"),
     "EventTimeIso8601"),
    ("EventTimeIso8601 month 13", business_event(EventTimeIso8601="2022-13-30T13:51:15Z", CardNumber="A"),
     "EventTimeIso8601"),
    ("EventTimeIso8601 a number", business_event(EventTimeIso8601=1672408275, CardNumber="A"), "EventTimeIso8601"),
    ("EventTimeIso8601 null", business_event(EventTimeIso8601=None, CardNumber="A"), "EventTimeIso8601"),
    ("BusinessEventId only whitespace", business_event(BusinessEventId="   ", CardNumber="A"), "BusinessEventId"),
    ("BusinessEventId with a control character", business_event(BusinessEventId="X\u0085Y", CardNumber="A"),
     "BusinessEventId"),
    ("BusinessEventId with a lone surrogate", business_event(BusinessEventId="X\ud800", CardNumber="A"),
     "BusinessEventId"),
]


@pytest.mark.parametrize(("event", "field"), [c[1:] for c in CONTRACT_VIOLATIONS],
                         ids=[c[0] for c in CONTRACT_VIOLATIONS])
def test_an_event_breaking_the_base_contract_gets_400_naming_the_field(runtime: Runtime, event: dict[str, Any],
                                                                       field: str) -> None:
    got, answer = post_callback(as_body(event))
    assert got == 400
    assert field in str(answer["error"])
    assert runtime.queues.client("loyalty_cards").get_queue_properties().approximate_message_count == 0


WITHIN_THE_CONTRACT: list[tuple[str, dict[str, Any]]] = [
    ("ControlNumber 0", business_event(ControlNumber=0, CardNumber="A")),
    ("ControlNumber 2^63-1", business_event(ControlNumber=2**63 - 1, CardNumber="A")),
    ("EventId in lower case", business_event(EventId="3c47a4cd-6edc-4319-b893-3f862eed65fd", CardNumber="A")),
    ("legal entity in lower case", business_event(BusinessEventLegalEntity="usmf", CardNumber="A")),
    ("legal entity of one digit", business_event(BusinessEventLegalEntity="1", CardNumber="A")),
    ("EventTime the empty date", business_event(EventTime="/Date(-2208988800000)/", CardNumber="A")),
    ("EventTime with a UTC offset", business_event(EventTime="/Date(1672408275000+0100)/", CardNumber="A")),
    ("no EventTimeIso8601", business_event_without("EventTimeIso8601", CardNumber="A")),
    ("EventTimeIso8601 the empty date", business_event(EventTimeIso8601="1900-01-01T00:00:00Z", CardNumber="A")),
    ("EventTimeIso8601 with an offset", business_event(EventTimeIso8601="2022-12-30T14:51:15.29+01:00",
                                                       CardNumber="A")),
    ("key with spaces around it", business_event(CardNumber="  LC 01  ")),
    ("key of 255 characters", business_event(CardNumber="A" * 255)),
    ("key an emoji (a surrogate pair in JSON)", business_event(CardNumber="LC-\U0001f39f")),
    ("key Dataverse cannot address", business_event(CardNumber="LC/2024:01*%&<>?+\\")),
    ("key field in another case", business_event(cardNUMBER="A")),
]


@pytest.mark.parametrize("event", [c[1] for c in WITHIN_THE_CONTRACT], ids=[c[0] for c in WITHIN_THE_CONTRACT])
def test_an_event_at_the_edges_of_the_contract_is_queued(runtime: Runtime, event: dict[str, Any]) -> None:
    got, answer = post_callback(as_body(event))
    assert (got, answer["status"]) == (202, "queued")


WRONG_JSON_TYPES: dict[str, list[Any]] = {
    "text": [None, True, 7, 7.5, [], {}],
    "integer": [None, True, False, 7.0, "7", [], {}],
}
BASE_FIELDS = {"BusinessEventId": "text", "EventId": "text", "BusinessEventLegalEntity": "text", "EventTime": "text",
               "ControlNumber": "integer", "MajorVersion": "integer", "MinorVersion": "integer"}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, kind in BASE_FIELDS.items() for v in WRONG_JSON_TYPES[kind]],
                         ids=[f"{f}={json.dumps(v)}" for f, kind in BASE_FIELDS.items() for v in WRONG_JSON_TYPES[kind]])
def test_a_base_field_of_another_json_type_gets_400_and_is_never_coerced(runtime: Runtime, field: str,
                                                                         value: Any) -> None:
    got, answer = post_callback(as_body(business_event(CardNumber="A", **{field: value})))
    assert (got, field in str(answer["error"])) == (400, True)


# -- key values: never blank, no control character (C0, DEL, C1), no lone surrogate -----------------

UNUSABLE_KEYS: list[tuple[str, Any, str]] = [
    ("only spaces", "   ", "empty or only whitespace"),
    ("only a no-break space", "\u00a0", "empty or only whitespace"),
    ("only a line separator", "\u2028", "empty or only whitespace"),
    ("DEL", "A\u007fB", "control character"),
    ("C1 next line", "A\u0085B", "control character"),
    ("C1 control sequence introducer", "A\u009bB", "control character"),
    ("right-to-left override", "LC\u202e10", "format character (U+202E"),
    ("left-to-right isolate", "\u2066LC-1\u2069", "format character (U+2066"),
    ("zero-width space", "LC\u200b1", "format character (U+200B"),
    ("byte order mark", "\ufeffLC-1", "format character (U+FEFF"),
    ("escape", "A\u001b[31mB", "control character"),
    ("lone high surrogate", "A\ud800", "lone surrogate"),
    ("lone low surrogate", "\udc00B", "lone surrogate"),
    ("reversed surrogate pair", "\udf9f\ud83c", "lone surrogate"),
]


@pytest.mark.parametrize(("card", "problem"), [c[1:] for c in UNUSABLE_KEYS], ids=[c[0] for c in UNUSABLE_KEYS])
def test_a_key_value_that_cannot_name_a_record_gets_400(runtime: Runtime, card: str, problem: str) -> None:
    got, answer = post_callback(as_body(business_event(CardNumber=card)))
    assert (got, problem in str(answer["error"])) == (400, True)
    assert runtime.queues.client("loyalty_cards").get_queue_properties().approximate_message_count == 0


def test_a_lone_surrogate_in_a_key_is_reported_as_bad_input_not_as_an_outage(runtime: Runtime,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    got, _ = post_callback(as_body(business_event(CardNumber="A\ud800")))
    assert got == 400
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_two_fields_naming_the_key_in_different_case_get_400(runtime: Runtime) -> None:
    got, answer = post_callback(as_body(business_event(CardNumber="A", cardnumber="B")))
    assert got == 400 and "more than one field" in str(answer["error"])


def test_a_level_company_that_is_not_a_data_area_id_gets_400(runtime: Runtime) -> None:
    got, answer = post_callback(as_body(business_event(LevelPhrase="Gold", dataAreaId="usmf-1")), "loyalty_levels")
    assert got == 400 and "dataAreaId" in str(answer["error"])


# -- events this template does not handle: 200 ignored and counted, so F&O does not retry them ------

NOT_FOR_THIS_TEMPLATE: list[tuple[str, dict[str, Any]]] = [
    ("another business event", business_event(BusinessEventId="SalesInvoicePostedBusinessEvent", InvoiceId="INV-1")),
    ("the card event without a card number", business_event()),
    ("a key field of another template", business_event(RewardPointId="USD-AMOUNT")),
]


@pytest.mark.parametrize("event", [c[1] for c in NOT_FOR_THIS_TEMPLATE], ids=[c[0] for c in NOT_FOR_THIS_TEMPLATE])
def test_a_well_formed_event_naming_no_record_of_the_template_is_acknowledged_and_ignored(
        runtime: Runtime, event: dict[str, Any]) -> None:
    got, answer = post_callback(as_body(event))
    assert (got, answer["status"]) == (200, "ignored")
    assert runtime.queues.client("loyalty_cards").get_queue_properties().approximate_message_count == 0


def test_an_ignored_event_is_counted(runtime: Runtime, telemetry: Telemetry) -> None:
    post_callback(as_body(business_event(BusinessEventId="SalesInvoicePostedBusinessEvent", InvoiceId="INV-1")))
    assert telemetry.callbacks("loyalty_cards") == {"ignored": 1}


def test_a_level_event_with_a_company_but_no_level_phrase_is_ignored(runtime: Runtime) -> None:
    got, answer = post_callback(as_body(business_event(dataAreaId="usmf")), "loyalty_levels")
    assert (got, answer["status"]) == (200, "ignored")


def test_a_malformed_event_naming_no_record_still_gets_400(runtime: Runtime) -> None:
    got, _ = post_callback(as_body(business_event_without("EventId")))
    assert got == 400


# -- ControlNumber: no event can silence a key -----------------------------------------------------


def test_an_event_with_the_largest_control_number_does_not_silence_its_card(runtime: Runtime, stores: Stores,
                                                                           pump: QueuePump) -> None:
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    assert post_callback(as_body(business_event(CardNumber=card, ControlNumber=2**63 - 1)))[0] == 202
    assert pump.drain() == 1
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000777"})
    assert post_callback(as_body(business_event(CardNumber=card, ControlNumber=5637611090)))[0] == 202
    assert pump.drain() == 1
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "000777"


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
    [summary] = runtime.scan("loyalty_cards").run()
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
    assert pump.drain() == 1
    assert stores.dataverse_writes() == 0 and stores.actual("loyalty_cards") == {}


def test_a_hostile_key_can_be_deleted(runtime: Runtime, stores: Stores) -> None:
    card = "O'Brien/100%#1"
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                     if k != "ReplacementCardNumber"})
    runtime.scan("loyalty_cards").run()
    stores.edit_in_hq("RetailLoyaltyCards", {"CardNumber": card}, delete=True)  # '/' has no OData route
    [summary] = runtime.scan("loyalty_cards").run()
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
    [summary] = runtime.scan(template).run()
    assert (summary.failed, summary.written) == (1, summary.seen - 1)
    [parked] = list(runtime.state.parked.all(template))
    assert reason in parked["error"] and tuple(json.loads(parked["key"])) == tuple(key.values())
    assert tuple(key.values()) not in stores.actual(template)  # nothing partial was written
