"""Data-event messages: the de-duplication id of a RemoteExecutionContext and the work items it becomes (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.messages.data_events import DataChange, parse_data_event
from shared.messages.events import WorkItem, WorkKind, work_items
from tests.data_events import card_created, data_event, deleted, target_id, without_target

ZERO = "00000000-0000-0000-0000-000000000000"


def dedup(event: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    return parse_data_event(event, headers).dedup_id()


def test_a_redelivery_has_the_same_id_and_another_event_another() -> None:
    event = card_created("A")
    assert dedup(event) == dedup(json.loads(json.dumps(event)))
    assert dedup(event) != dedup(card_created("A"))  # another Target.Id


def test_the_operation_id_decides_whatever_the_time_says_and_in_any_case() -> None:
    record = target_id()
    first = card_created("A", target=record, operation_id="3C47A4CD-6EDC-4319-B893-3F862EED65FD")
    again = card_created("A", target=record, operation_id="3c47a4cd-6edc-4319-b893-3f862eed65fd",
                         created_on="/Date(1784051299000+0000)/")
    assert dedup(first) == dedup(again)
    assert dedup(first) != dedup(card_created("A", target=record, operation_id="3C47A4CD-6EDC-4319-B893-3F862EED65FE"))


def test_without_an_operation_id_message_target_time_and_attributes_decide() -> None:
    record = target_id()
    base = data_event("OnExternalUpdated", target=record, attributes={"mserp_partynumber": "1"})
    assert dedup(base) == dedup(data_event("ONEXTERNALUPDATED", target=record.upper(),
                                           attributes={"mserp_partynumber": "1"}))
    assert dedup(base) != dedup(data_event("OnExternalUpdated", target=record, attributes={"mserp_partynumber": "2"}))
    assert dedup(base) != dedup(data_event("OnExternalUpdated", target=record, attributes={"mserp_partynumber": "1"},
                                           created_on="/Date(1784051294000+0000)/"))
    assert dedup(base) != dedup(data_event("OnExternalCreated", target=record, attributes={"mserp_partynumber": "1"}))


def test_the_empty_operation_id_is_no_identity() -> None:
    record = target_id()
    one = data_event("OnExternalUpdated", target=record, operation_id=ZERO, attributes={"mserp_partynumber": "1"})
    two = data_event("OnExternalUpdated", target=record, operation_id=ZERO, attributes={"mserp_partynumber": "2"})
    assert dedup(one) != dedup(two)


def test_messages_and_ids_are_read_case_insensitively() -> None:
    event = parse_data_event(deleted("{00004951-0000-0000-5E1A-005001000000}"))
    assert (event.change, event.target_id, event.entity) == (
        DataChange.DELETED, "00004951-0000-0000-5e1a-005001000000", "mserp_retailloyaltycardentity")


def test_a_cut_body_is_read_only_with_its_header() -> None:
    cut = without_target(card_created("A"))
    event = parse_data_event(cut, {"X-MS-Dynamics-Msg-Size-Exceeded": "true"})
    assert (event.size_exceeded, event.target) == (True, None)
    for value in ("false", "0", ""):
        with pytest.raises(ValueError, match="InputParameters is missing"):
            parse_data_event(cut, {"x-ms-dynamics-msg-size-exceeded": value})


def item(**fields: Any) -> WorkItem:
    return WorkItem.model_validate({"template": "loyalty_cards", "received_at": "2024-01-01T00:00:00+00:00", **fields})


@pytest.mark.parametrize(("fields", "problem"), [
    ({}, "needs its key"),
    ({"kind": "data_delete"}, "needs a key or a target_id"),
    ({"kind": "data_upsert"}, "needs a key or a target_id"),
    ({"kind": "data_delete", "target_id": "00004951-0000-0000-5E1A-005001000000"}, "lower case"),
    ({"kind": "data_delete", "target_id": "not-a-guid"}, "GUID"),
    ({"kind": "compact"}, "kind"),
])
def test_a_work_item_must_name_what_its_kind_needs(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        item(**fields)


def test_work_items_of_every_kind_round_trip_and_old_messages_are_business_events() -> None:
    items = [item(key={"CardNumber": "A"}), item(kind="data_upsert", target_id=target_id()),
             item(kind="data_delete", target_id=target_id()), item(kind="refresh")]
    message = json.dumps({"items": [json.loads(i.model_dump_json()) for i in items]})
    assert work_items(message) == items
    old = '{"template": "loyalty_cards", "key": {"CardNumber": "A"}, "received_at": "2024-01-01T00:00:00+00:00"}'
    assert work_items(old)[0].kind is WorkKind.BUSINESS_EVENT
