"""The queue worker: duplicates and stale events dropped and counted, pause holds, resume drains in order."""

from __future__ import annotations

from shared.runtime import Runtime
from shared.state.store import now
from shared.sync import operations, worker
from shared.sync.events import WorkItem
from tests.e2e.stores import Stores


def item(card: str, *, event_id: str = "E-1", control_number: int = 100, received_at: str | None = None) -> WorkItem:
    return WorkItem(template="loyalty_cards", key={"CardNumber": card}, event_id=event_id,
                    business_event_id="RetailLoyaltyCardChangedBusinessEvent", control_number=control_number,
                    received_at=received_at or now().isoformat(), correlation_id="c-1")


def first_card(stores: Stores) -> str:
    return str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])


def test_the_same_event_delivered_twice_is_applied_once(runtime: Runtime, stores: Stores) -> None:
    card = first_card(stores)
    assert worker.process(runtime, item(card)) == "written"
    writes = stores.dataverse_writes()
    assert worker.process(runtime, item(card)) == "duplicate"
    assert stores.dataverse_writes() == writes
    assert runtime.state.counters("loyalty_cards")["duplicates_dropped"] == 1


def test_an_event_older_than_the_applied_one_is_dropped(runtime: Runtime, stores: Stores) -> None:
    card = first_card(stores)
    worker.process(runtime, item(card, event_id="E-new", control_number=200))
    assert worker.process(runtime, item(card, event_id="E-old", control_number=150)) == "stale"
    assert runtime.state.counters("loyalty_cards")["stale_dropped"] == 1


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
    assert len(list(runtime.state.held_items("loyalty_cards"))) == 1


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
    assert list(runtime.state.held_items("loyalty_cards")) == []
