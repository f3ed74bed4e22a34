"""The queue worker: duplicates and stale events dropped and counted, pause holds, resume drains in order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from pydantic import ValidationError

from devtools.azurite import Azurite
from devtools.functions_host import QueuePump
from shared.clock import SYSTEM_CLOCK
from shared.messages.events import MAX_CONTROL_NUMBER, WorkItem, work_items
from shared.runtime import Runtime
from shared.sync import operations, worker
from tests.configured import runtime_with
from tests.e2e.stores import Stores
from tests.otel import Telemetry


def item(card: str, *, event_id: str = "E-1", control_number: int = 100, received_at: str | None = None) -> WorkItem:
    return WorkItem(template="loyalty_cards", key={"CardNumber": card}, event_id=event_id,
                    business_event_id="RetailLoyaltyCardChangedBusinessEvent", control_number=control_number,
                    received_at=received_at or SYSTEM_CLOCK.now().isoformat(), correlation_id="c-1")


def first_card(stores: Stores) -> str:
    return str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])


def test_the_same_event_delivered_twice_is_applied_once(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    card = first_card(stores)
    assert worker.process(runtime, item(card)) == "written"
    writes = stores.dataverse_writes()
    assert worker.process(runtime, item(card)) == "duplicate"
    assert stores.dataverse_writes() == writes
    assert telemetry.work_items("loyalty_cards")["duplicate"] == 1


def test_an_event_id_differing_only_in_case_is_the_same_event(runtime: Runtime, stores: Stores) -> None:
    card = first_card(stores)
    worker.process(runtime, item(card, event_id="3c47a4cd-6edc-4319-b893-3f862eed65fd"))
    assert worker.process(runtime, item(card, event_id="3C47A4CD-6EDC-4319-B893-3F862EED65FD")) == "duplicate"


def test_an_event_with_the_control_number_already_applied_to_its_key_is_dropped(runtime: Runtime, stores: Stores,
                                                                                telemetry: Telemetry) -> None:
    card = first_card(stores)
    worker.process(runtime, item(card, event_id="E-1", control_number=200))
    writes = stores.dataverse_writes()
    assert worker.process(runtime, item(card, event_id="E-2", control_number=200)) == "duplicate"
    assert stores.dataverse_writes() == writes
    assert telemetry.work_items("loyalty_cards")["duplicate"] == 1


def test_an_event_one_control_number_above_the_applied_one_is_applied(runtime: Runtime, stores: Stores) -> None:
    card = first_card(stores)
    worker.process(runtime, item(card, event_id="E-1", control_number=200))
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000780"})
    assert worker.process(runtime, item(card, event_id="E-2", control_number=201)) == "written"
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "000780"


def test_an_event_older_than_the_applied_one_still_syncs_the_current_record(runtime: Runtime,
                                                                            stores: Stores) -> None:
    card = first_card(stores)
    worker.process(runtime, item(card, event_id="E-new", control_number=200))
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000778"})
    assert worker.process(runtime, item(card, event_id="E-old", control_number=150)) == "written"
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "000778"


def test_an_event_with_the_largest_control_number_does_not_silence_later_events(runtime: Runtime,
                                                                               stores: Stores) -> None:
    card = first_card(stores)
    worker.process(runtime, item(card, event_id="E-max", control_number=MAX_CONTROL_NUMBER))
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000779"})
    assert worker.process(runtime, item(card, event_id="E-next", control_number=5637611090)) == "written"
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "000779"


def test_an_old_event_arriving_last_cannot_write_old_data(runtime: Runtime, stores: Stores) -> None:
    card = first_card(stores)
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "000777"})
    worker.process(runtime, item(card, event_id="E-2", control_number=300))
    worker.process(runtime, item(card, event_id="E-1", control_number=200))
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "000777"


def test_while_paused_work_items_are_held_and_nothing_is_written(runtime: Runtime, stores: Stores) -> None:
    operations.pause(runtime, "loyalty_cards", by="test")
    assert worker.process(runtime, item(first_card(stores))) == "held"
    assert stores.dataverse_writes() == 0
    assert len(list(runtime.state.callbacks.held_items("loyalty_cards"))) == 1


def test_a_setting_pauses_a_template_too(runtime: Runtime, stores: Stores) -> None:
    runtime.settings.paused_templates.append("loyalty_cards")
    try:
        assert worker.process(runtime, item(first_card(stores))) == "held"
    finally:
        runtime.settings.paused_templates.remove("loyalty_cards")


def test_resume_requeues_the_backlog_in_arrival_order(runtime: Runtime, stores: Stores) -> None:
    cards = [str(r["CardNumber"]) for r in stores.commerce_rows("loyalty_cards")[:3]]
    operations.pause(runtime, "loyalty_cards", by="test")
    stamps = ["2026-01-01T00:00:03", "2026-01-01T00:00:01", "2026-01-01T00:00:02"]
    for card, stamp in zip(cards, stamps, strict=True):
        worker.process(runtime, item(card, event_id=f"E-{card}", received_at=stamp))
    assert operations.resume(runtime, "loyalty_cards", by="test") == 3
    client = runtime.queues.client("loyalty_cards")
    queued = [WorkItem.model_validate_json(m.content).key["CardNumber"] for m in client.receive_messages(max_messages=10)]
    assert queued == [cards[1], cards[2], cards[0]]
    assert list(runtime.state.callbacks.held_items("loyalty_cards")) == []


# -- work items are validated, and a write is never repeated in a loop -------------------------------


def test_a_queued_item_with_a_control_number_beyond_int64_is_refused_before_any_work(runtime: Runtime,
                                                                                    stores: Stores) -> None:
    message = item(first_card(stores)).model_dump() | {"control_number": MAX_CONTROL_NUMBER + 1}
    with pytest.raises(ValidationError, match="control_number"):
        work_items(json.dumps(message))


@pytest.mark.parametrize("card", ["A\ud800", "A\u0085B", "   "], ids=["lone surrogate", "C1 control", "blank"])
def test_a_queued_item_with_an_unusable_key_is_refused_before_any_work(card: str) -> None:
    message = json.dumps({"template": "loyalty_cards", "key": {"CardNumber": card}, "received_at": "2026-01-01"})
    with pytest.raises(ValidationError, match="CardNumber"):
        work_items(message)


@pytest.fixture()
def redelivering_pump(runtime: Runtime, azurite: Azurite) -> Iterator[QueuePump]:
    """The host's queue listener with a one-second visibility timeout: a failed message comes back a second
    later, up to five times, then goes to the poison queue."""
    import function_app

    queue_pump = QueuePump(function_app.app, azurite.connection_string, visibility_timeout_s=1)
    yield queue_pump
    queue_pump.stop()


def poisoned(runtime: Runtime) -> int:
    client = runtime.queues.service.get_queue_client(runtime.queues.client("loyalty_cards").queue_name + "-poison")
    try:
        return int(client.get_queue_properties().approximate_message_count)
    except ResourceNotFoundError:
        return 0


def fail_with(error: Exception) -> Any:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise error

    return fail


def test_an_unexpected_error_after_the_write_parks_the_record_instead_of_writing_it_again(
        runtime: Runtime, stores: Stores, redelivering_pump: QueuePump, monkeypatch: pytest.MonkeyPatch,
        telemetry: Telemetry) -> None:
    card = first_card(stores)
    monkeypatch.setattr(runtime.state.synced, "put", fail_with(TypeError("value too large for Int64")))
    runtime.queues.send(item(card))
    assert redelivering_pump.drain() == 1
    assert stores.dataverse_writes() == 1 and poisoned(runtime) == 0
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert (parked["error_class"], parked["source"], parked["correlation_id"]) == ("unexpected", "callback", "c-1")
    assert telemetry.work_items("loyalty_cards")["failed"] == 1


def test_an_unexpected_error_is_logged_with_the_key_and_correlation_id(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    card = first_card(stores)
    monkeypatch.setattr(runtime.state.synced, "put", fail_with(TypeError("value too large for Int64")))
    assert worker.process(runtime, item(card)) == "failed"
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert card in error and "correlation_id=c-1" in error and "TypeError" in error


def test_a_failure_to_record_a_finished_event_does_not_redeliver_it(
        runtime: Runtime, stores: Stores, redelivering_pump: QueuePump, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.state.callbacks, "remember_event", fail_with(ServiceRequestError("storage unreachable")))
    runtime.queues.send(item(first_card(stores), control_number=0))  # no ControlNumber to catch a redelivery
    assert redelivering_pump.drain() == 1
    assert stores.dataverse_writes() == 1 and poisoned(runtime) == 0


def test_an_event_whose_work_failed_is_processed_again_on_redelivery(
        runtime: Runtime, stores: Stores, redelivering_pump: QueuePump, monkeypatch: pytest.MonkeyPatch,
        telemetry: Telemetry) -> None:
    runtime = runtime_with(monkeypatch, SYNC_HTTP_MAX_ATTEMPTS="1")  # Commerce's 503 fails the delivery at once
    card = first_card(stores)
    requests.post(f"{stores.commerce_url}/_emulator/faults", timeout=10, json={"rules": [
        {"route": "odata.resource", "method": "GET", "kind": "status", "status": 503, "times": 1}]}).raise_for_status()
    runtime.queues.send(item(card))
    assert redelivering_pump.drain(allow_failures=True) == 1
    [failure] = redelivering_pump.failures  # the first delivery: Commerce unavailable before anything was written
    assert (failure.dequeue_count, "ServerError" in failure.error) == (1, True)
    assert (card,) in stores.actual("loyalty_cards")  # written by the redelivery: the event was not taken as done
    assert telemetry.work_items("loyalty_cards") == {"written": 1}


def test_an_outage_before_the_write_leaves_the_message_for_the_host_to_retry(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.state.synced, "get", fail_with(ServiceRequestError("storage unreachable")))
    with pytest.raises(ServiceRequestError):
        worker.process(runtime, item(first_card(stores)))
