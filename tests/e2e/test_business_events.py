"""Business events as F&O delivers them, at least once and in any order (docs/protocol-notes.md §4.1, §5.3): the Commerce
emulator's publisher sends every event twice and lets the next event overtake each one, over HTTP to the callback
trigger served by the local host shim, and the queue worker still leaves Dataverse equal to Commerce."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
import requests

from devtools.functions_host import LocalFunctionsHost, QueuePump
from shared.runtime import Runtime
from tests.e2e.stores import Stores
from tests.otel import Telemetry

ROUNDS = 3  # each card changes twice in a row per round; a round's events are applied before the next round's changes


@pytest.fixture()
def unruly_events(runtime: Runtime, stores: Stores) -> Iterator[str]:
    """The app's card callback registered with the publisher, duplicate and out-of-order delivery on."""
    import function_app

    publisher = f"{stores.commerce_url}/_emulator/business-events"
    host = LocalFunctionsHost(function_app.app).start()
    try:
        requests.post(f"{publisher}/endpoints", timeout=10, json={
            "url": f"{host.url}/api/callbacks/loyalty_cards", "entity_sets": ["RetailLoyaltyCards"]}).raise_for_status()
        requests.post(f"{publisher}/config", json={"duplicate_delivery": True, "out_of_order": True},
                      timeout=10).raise_for_status()
        yield publisher
    finally:
        requests.post(f"{publisher}/reset", timeout=10)  # endpoints, logs and knobs back to their defaults
        host.stop()


def delivered(publisher: str) -> list[dict[str, Any]]:
    """The change events as they reached the callback, in delivery order, each with its card number."""
    cards = {e["EventId"]: e["CardNumber"] for e in requests.get(f"{publisher}/published", timeout=10).json()["value"]}
    deliveries = requests.get(f"{publisher}/deliveries", timeout=10).json()["value"]
    return [d | {"CardNumber": cards[d["EventId"]]} for d in deliveries if d["EventId"] in cards]


def test_events_delivered_twice_and_out_of_order_leave_every_change_in_dataverse(
        runtime: Runtime, stores: Stores, pump: QueuePump, commerce_emulator: Any, unruly_events: str,
        telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    cards = [str(row["CardNumber"]) for row in stores.commerce_rows("loyalty_cards")[:4]]
    for n in range(ROUNDS):
        for card in cards:
            for value in (f"R{n}a-{card[-4:]}", f"R{n}-{card[-4:]}"):
                stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": value})
        assert commerce_emulator.publisher.flush(30)
        assert 1 <= pump.drain() <= 4 * len(cards)  # callbacks that arrive together share a queue message

    events = delivered(unruly_events)
    assert all(d["ok"] for d in events)
    assert set(Counter(d["EventId"] for d in events).values()) == {2}  # every event twice
    order = [d["ControlNumber"] for d in events]
    assert any(later < earlier for earlier, later in pairwise(order))  # and overtaken
    per_card = [[d["ControlNumber"] for d in events if d["CardNumber"] == card] for card in cards]
    assert any(later < earlier for numbers in per_card for earlier, later in pairwise(numbers))

    assert stores.differences("loyalty_cards") == []
    actual = stores.actual("loyalty_cards")
    assert {card: actual[(card,)]["msdyn_partynumber"] for card in cards} == {
        card: f"R{ROUNDS - 1}-{card[-4:]}" for card in cards}
    counters = telemetry.work_items("loyalty_cards")
    assert counters["duplicate"] == 2 * ROUNDS * len(cards)  # the second copy of each event
    # Each round's changes written once per card: the first of a card's two events re-reads the newer value and
    # writes it, the other finds it written.
    assert (counters.get("written"), counters.get("unchanged")) == (ROUNDS * len(cards),) * 2
