"""Deletes found by a full scan, against the emulators and Azurite: what Commerce still has, or has again,
is never lost in Dataverse."""

from __future__ import annotations

from typing import Any

import pytest

from shared.runtime import Runtime
from tests.e2e.stores import Stores

CARDS = "loyalty_cards"


def test_a_key_re_created_and_synced_while_the_timer_deletes_it_keeps_its_dataverse_row(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.scan(CARDS).run()
    card = str(stores.commerce_rows(CARDS)[4]["CardNumber"])
    row = {k: v for k, v in stores.commerce_row(f"RetailLoyaltyCards('{card}')").items() if not k.startswith("@")}
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    engine = runtime.outbound(CARDS)
    delete = engine.writer.delete

    def delete_while_a_callback_re_syncs(key: tuple[str, ...]) -> Any:
        # The timer has confirmed the key gone; before its delete lands, the card is re-created in HQ and a
        # callback syncs it.
        stores.create_in_commerce("RetailLoyaltyCards", {**row, "PartyNumber": "RE-CREATED"})
        assert engine.sync_key({"CardNumber": card}) == "written"
        return delete(key)

    monkeypatch.setattr(engine.writer, "delete", delete_while_a_callback_re_syncs)
    runtime.scan(CARDS).run()
    monkeypatch.undo()
    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "RE-CREATED"
    [again] = runtime.scan(CARDS).run()
    assert again.written == 0 and stores.differences(CARDS) == []


def test_a_key_synced_between_the_confirming_read_and_the_delete_is_not_deleted(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.scan(CARDS).run()
    card = str(stores.commerce_rows(CARDS)[5]["CardNumber"])
    row = {k: v for k, v in stores.commerce_row(f"RetailLoyaltyCards('{card}')").items() if not k.startswith("@")}
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    engine = runtime.outbound(CARDS)
    tombstone = engine.state.synced.tombstone

    def re_synced_first(partition: str, previous: Any) -> Any:
        stores.create_in_commerce("RetailLoyaltyCards", {**row, "PartyNumber": "BACK"})
        assert engine.sync_key({"CardNumber": card}) == "written"
        return tombstone(partition, previous)

    monkeypatch.setattr(engine.state.synced, "tombstone", re_synced_first)
    [summary] = runtime.scan(CARDS).run()
    monkeypatch.undo()
    assert summary.deleted == 0
    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "BACK"
    assert stores.differences(CARDS) == []
