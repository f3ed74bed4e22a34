"""Auto-pause end to end: failing callbacks pause their template; what follows is held, nothing is lost."""

from __future__ import annotations

import pytest
import requests

from devtools.functions_host import QueuePump
from shared.clock import SYSTEM_CLOCK
from shared.messages.events import WorkItem
from shared.runtime import Runtime
from shared.state.autopause import AUTO_PAUSE_BY
from shared.sync import operations, worker
from tests.configured import runtime_with
from tests.e2e.stores import Stores

pytestmark = pytest.mark.e2e


def item(card: str, n: int) -> WorkItem:
    return WorkItem(template="loyalty_cards", key={"CardNumber": card}, event_id=f"E-{n}",
                    business_event_id="RetailLoyaltyCardChangedBusinessEvent", control_number=100 + n,
                    received_at=SYSTEM_CLOCK.now().isoformat(), correlation_id=f"c-{n}")


@pytest.fixture()
def failing_dataverse(stores: Stores) -> None:
    """Every request for loyalty cards is refused with a 400 (an application error: each record is parked)."""
    requests.post(f"{stores.dataverse_url}/_emulator/faults", timeout=10, json={"rules": [
        {"route": "msdyn_loyaltycards", "kind": "status", "status": 400}]}).raise_for_status()


def cards(stores: Stores, n: int) -> list[str]:
    return [str(row["CardNumber"]) for row in stores.commerce_rows("loyalty_cards")[:n]]


def test_failures_past_the_limit_pause_the_template_and_later_callbacks_are_held(
        runtime: Runtime, stores: Stores, failing_dataverse: None, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_with(monkeypatch, SYNC_AUTO_PAUSE_FAILURES="2", SYNC_AUTO_PAUSE_MINUTES="5")
    outcomes = [worker.process(runtime, item(card, n)) for n, card in enumerate(cards(stores, 5))]
    assert outcomes[-1] == "held"
    assert outcomes.count("held") == 2  # the third failure paused the template: the fourth and fifth wait
    record = runtime.state.callbacks.pause_record("loyalty_cards")
    assert record is not None and record["paused"] and record["changed_by"] == AUTO_PAUSE_BY
    assert "3 failures in 5 minutes" in record["reason"]
    assert len(list(runtime.state.parked.all("loyalty_cards"))) == 3


def test_resume_after_an_auto_pause_syncs_what_was_held_and_keeps_the_failures_parked(
        runtime: Runtime, stores: Stores, failing_dataverse: None, pump: QueuePump,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_with(monkeypatch, SYNC_AUTO_PAUSE_FAILURES="2")
    chosen = cards(stores, 5)
    for n, card in enumerate(chosen):
        worker.process(runtime, item(card, n))
    requests.delete(f"{stores.dataverse_url}/_emulator/faults", timeout=10).raise_for_status()  # the cause is fixed
    assert operations.resume(runtime, "loyalty_cards", by="operator") == 2
    assert pump.drain() == 2
    synced = set(stores.actual("loyalty_cards"))
    assert {(card,) for card in chosen[3:]} <= synced  # the held ones
    assert len(list(runtime.state.parked.all("loyalty_cards"))) == 3  # kept for a replay, not lost
    assert not runtime.state.callbacks.is_paused("loyalty_cards")
