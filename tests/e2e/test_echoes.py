"""Echoes of this app's own writes, end to end: an echo that arrives after Commerce changed again is still
an echo, not a conflict, under either conflict policy, and Commerce's newer value survives it."""

from __future__ import annotations

import pytest

from shared.runtime import Runtime
from tests.configured import runtime_with
from tests.e2e.stores import Stores

pytestmark = pytest.mark.two_way

CARDS = "loyalty_cards"


@pytest.fixture(params=["commerce_wins", "dataverse_wins"])
def runtime(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Runtime:
    """Every test here runs once per ``SYNC_CONFLICT_POLICY``, set as the app reads it."""
    configured = runtime_with(monkeypatch, SYNC_CONFLICT_POLICY=request.param)
    assert configured.settings.conflict_policy == request.param
    return configured


def echo_after_a_newer_commerce_edit(runtime: Runtime, stores: Stores) -> str:
    """Synced both ways; Commerce edit A reaches Dataverse (this app's write); Commerce is edited again (B)
    before the inbound side reads the change feed, which then returns the write of A. Returns the card."""
    runtime.scan(CARDS).run()
    runtime.inbound(CARDS).run()
    card = str(stores.commerce_rows(CARDS)[1]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "HQ-EDIT-A"})
    runtime.scan(CARDS).run()
    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "HQ-EDIT-A"
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "HQ-EDIT-B"})
    runtime.inbound(CARDS).run()
    return card


def test_an_echo_arriving_after_commerce_changed_again_is_no_conflict(runtime: Runtime, stores: Stores) -> None:
    echo_after_a_newer_commerce_edit(runtime, stores)

    assert list(runtime.state.conflicts.all(CARDS)) == []


def test_an_echo_arriving_after_commerce_changed_again_keeps_commerces_newer_value(runtime: Runtime,
                                                                                  stores: Stores) -> None:
    card = echo_after_a_newer_commerce_edit(runtime, stores)

    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "HQ-EDIT-B"
    runtime.scan(CARDS).run()
    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "HQ-EDIT-B"
    assert stores.differences(CARDS) == []
