"""Keys holding characters a key URL cannot carry, end to end (docs/protocol-notes.md §2.5, §3.1).

Dataverse: alternate-key data with ``/ < > * % & : \\ ? +`` is never put in a key URL, ``@odata.id`` or
``@odata.bind``; the row is found with ``$filter`` and written by its primary key. F&O: a key with ``/`` or
``\\`` has no OData route; it is read with ``$filter`` and matched exactly, and a write into F&O that would
need its path is parked with a reason that says so. The emulators refuse what the services refuse, so each
test here fails against a client that addresses such a key by URL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.functions_host import QueuePump, invoke_http
from shared.runtime import Runtime
from tests.builders import as_body, business_event, card_row, level_row
from tests.e2e.stores import Stores

pytestmark = pytest.mark.two_way

SPECIAL = ["/", "<", ">", "*", "%", "&", ":", "\\", "?", "+"]
CARDS = [f"SK{char}{i}" for i, char in enumerate(SPECIAL)]
NO_FO_ROUTE = {card for card in CARDS if "/" in card or "\\" in card}


def create_cards(stores: Stores, cards: list[str] = CARDS) -> None:
    for card in cards:
        stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in card_row(CardNumber=card).items()
                                                         if k != "ReplacementCardNumber"})


def commerce_card(stores: Stores, card: str) -> dict[str, Any] | None:
    return next((row for row in stores.commerce_rows("loyalty_cards") if row["CardNumber"] == card), None)


def dataverse_id(stores: Stores, card: str) -> str:
    [row] = [r for r in stores.dataverse_rows("msdyn_loyaltycards") if r["msdyn_cardnumber"] == card]
    return str(row["msdyn_loyaltycardid"])


def synced(runtime: Runtime, template: str = "loyalty_cards") -> None:
    [summary] = runtime.scan(template).run()
    assert summary.failed == 0
    runtime.inbound(template).run()


def test_the_timer_creates_every_special_character_key_in_dataverse(runtime: Runtime, stores: Stores) -> None:
    create_cards(stores)
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.failed == 0
    assert stores.differences("loyalty_cards") == []
    assert {card for (card,) in stores.actual("loyalty_cards")} >= set(CARDS)


def test_the_timer_updates_and_deletes_special_character_keys(runtime: Runtime, stores: Stores) -> None:
    create_cards(stores)
    runtime.scan("loyalty_cards").run()
    for card in CARDS[:5]:
        stores.edit_in_hq("RetailLoyaltyCards", {"CardNumber": card}, {"PartyNumber": "HQ-EDIT"})
    for card in CARDS[5:]:
        stores.edit_in_hq("RetailLoyaltyCards", {"CardNumber": card}, delete=True)
    [summary] = runtime.scan("loyalty_cards").run()
    assert (summary.failed, summary.deleted) == (0, 5)
    actual = stores.actual("loyalty_cards")
    assert all(actual[(card,)]["msdyn_partynumber"] == "HQ-EDIT" for card in CARDS[:5])
    assert not any((card,) in actual for card in CARDS[5:])
    assert stores.differences("loyalty_cards") == []


def test_a_callback_syncs_exactly_the_special_character_key_it_names(runtime: Runtime, stores: Stores,
                                                                    pump: QueuePump) -> None:
    import azure.functions as func

    import function_app

    create_cards(stores)
    for card in CARDS:
        req = func.HttpRequest("POST", "http://localhost/api/callbacks/loyalty_cards",
                               body=as_body(business_event(CardNumber=card)))
        assert invoke_http(function_app.app, "callback_loyalty_cards", req).status_code == 202
    assert pump.drain() == len(CARDS)  # one message per callback: each was answered before the next
    assert sorted(card for (card,) in stores.actual("loyalty_cards")) == sorted(CARDS)
    assert list(runtime.state.parked.all("loyalty_cards")) == []


def test_a_callback_for_a_special_character_key_deleted_in_commerce_deletes_its_dataverse_row(
        runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    import azure.functions as func

    import function_app

    create_cards(stores)
    runtime.scan("loyalty_cards").run()
    assert {(card,) for card in CARDS} <= set(stores.actual("loyalty_cards"))
    for card in CARDS:
        stores.edit_in_hq("RetailLoyaltyCards", {"CardNumber": card}, delete=True)
        req = func.HttpRequest("POST", "http://localhost/api/callbacks/loyalty_cards",
                               body=as_body(business_event(CardNumber=card)))
        assert invoke_http(function_app.app, "callback_loyalty_cards", req).status_code == 202
    assert pump.drain() == len(CARDS)  # one message per callback: each was answered before the next
    assert not set(stores.actual("loyalty_cards")) & {(card,) for card in CARDS}
    assert stores.differences("loyalty_cards") == []


def test_a_level_phrase_with_special_characters_is_created_with_its_company_in_the_body(
        runtime: Runtime, stores: Stores) -> None:
    for i, char in enumerate(SPECIAL):
        stores.create_in_commerce("LoyaltyLevels", level_row(dataAreaId="usrt", LevelPhrase=f"Tier{char}{i}"))
    summaries = runtime.scan("loyalty_levels").run()
    assert sum(s.failed for s in summaries) == 0
    assert stores.differences("loyalty_levels") == []
    assert {("usrt", f"Tier{char}{i}") for i, char in enumerate(SPECIAL)} <= set(stores.actual("loyalty_levels"))


def test_a_dataverse_edit_of_a_special_key_reaches_commerce_or_is_parked_when_f_and_o_has_no_route(
        runtime: Runtime, stores: Stores) -> None:
    create_cards(stores)
    synced(runtime)
    for card in CARDS:
        stores.change_in_dataverse(f"msdyn_loyaltycards({dataverse_id(stores, card)})", {"msdyn_partynumber": "AGENT"})
    summary = runtime.inbound("loyalty_cards").run()
    assert (summary.written, summary.failed) == (len(CARDS) - len(NO_FO_ROUTE), len(NO_FO_ROUTE))
    for card in CARDS:
        row = commerce_card(stores, card)
        assert row is not None
        assert row["PartyNumber"] == ("004512" if card in NO_FO_ROUTE else "AGENT")
    parked = {json.loads(p["key"])[0]: p for p in runtime.state.parked.all("loyalty_cards")}
    assert set(parked) == NO_FO_ROUTE
    assert all(p["error_class"] == "unaddressable_key" and "cannot route" in p["error"] for p in parked.values())


def test_a_special_key_created_in_dataverse_is_created_in_commerce(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    for card in CARDS:
        stores.create_in_dataverse("msdyn_loyaltycards", {"msdyn_cardnumber": card, "msdyn_partynumber": "DV"})
    summary = runtime.inbound("loyalty_cards").run()
    assert summary.failed == 0
    assert all((commerce_card(stores, card) or {}).get("PartyNumber") == "DV" for card in CARDS)


def test_a_conflict_on_a_special_key_is_won_by_commerce(runtime: Runtime, stores: Stores) -> None:
    create_cards(stores)
    synced(runtime)
    for card in CARDS:
        stores.change_in_dataverse(f"msdyn_loyaltycards({dataverse_id(stores, card)})", {"msdyn_partynumber": "AGENT"})
        stores.edit_in_hq("RetailLoyaltyCards", {"CardNumber": card}, {"PartyNumber": "HQ"})
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.failed == 0
    actual = stores.actual("loyalty_cards")
    assert all(actual[(card,)]["msdyn_partynumber"] == "HQ" for card in CARDS)
    assert len(list(runtime.state.conflicts.all("loyalty_cards"))) == len(CARDS)


def test_an_agents_delete_of_a_special_key_deletes_it_in_commerce_or_parks_it_when_f_and_o_has_no_route(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.inbound("loyalty_cards"), "delete_policy", "delete")
    create_cards(stores)
    synced(runtime)
    for card in CARDS:
        stores.delete_in_dataverse(f"msdyn_loyaltycards({dataverse_id(stores, card)})")
    summary = runtime.inbound("loyalty_cards").run()
    assert summary.failed == len(NO_FO_ROUTE)
    remaining = {row["CardNumber"] for row in stores.commerce_rows("loyalty_cards")}
    assert remaining & set(CARDS) == NO_FO_ROUTE


def test_a_key_read_by_filter_holding_a_star_never_takes_another_row_that_matches_it_as_a_wildcard(
        runtime: Runtime, stores: Stores) -> None:
    """``eq 'SK/*'`` is a wildcard match in F&O: it finds SK/OTHER. The key ``SK/*`` is not in Commerce, so nothing
    is written (not SK/OTHER's data, under either key)."""
    create_cards(stores, ["SK/OTHER"])
    assert runtime.outbound("loyalty_cards").commerce.get("RetailLoyaltyCards", {"CardNumber": "SK/*"}) is None
    assert runtime.outbound("loyalty_cards").sync_key({"CardNumber": "SK/*"}) == "unchanged"
    assert stores.dataverse_writes() == 0


def test_a_key_read_by_filter_holding_a_star_finds_its_own_row_among_the_wildcard_matches(
        runtime: Runtime, stores: Stores) -> None:
    create_cards(stores, ["SK/!", "SK/*"])  # "!" sorts before "*": the wildcard's first match is the other row
    row = runtime.outbound("loyalty_cards").commerce.get("RetailLoyaltyCards", {"CardNumber": "SK/*"})
    assert row is not None and row["CardNumber"] == "SK/*"
