"""Replay of parked records (one, a selection, all) and the automatic retry of recoverable ones."""

from __future__ import annotations

import requests

from shared.runtime import Runtime
from shared.state.store import encode_key
from shared.sync import operations
from tests.e2e.stores import Stores


def park_an_amount_point_in_unknown_currency(runtime: Runtime, stores: Stores, point_id: str = "XTS-AMOUNT") -> None:
    stores.create_in_commerce("RetailLoyaltyRewardPoints", {
        "RewardPointId": point_id, "RewardPointType": "Amount", "RewardPointCurrency": "XTS", "Redeemable": "Yes",
        "RedeemRanking": 1, "ExpirationTimeValue": 0, "ExpirationTimeUnit": "Day", "VestingTimeValue": 0,
        "VestingTimeUnit": "Day", "MaximumLoyaltyRewardPoints": 0})
    runtime.scan("loyalty_reward_points").run()


def add_currency(stores: Stores, code: str) -> None:
    requests.post(f"{stores.dataverse_url}/api/data/v9.2/transactioncurrencies", headers=stores.headers, timeout=10,
                  json={"isocurrencycode": code, "currencyname": code}).raise_for_status()


def test_replaying_before_the_cause_is_fixed_keeps_the_record_and_counts_the_attempt(runtime: Runtime,
                                                                                   stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    [result] = operations.replay(runtime, "loyalty_reward_points", [encode_key(("XTS-AMOUNT",))])
    assert result.outcome == "parked"
    [entry] = list(runtime.state.parked.all("loyalty_reward_points"))
    assert entry["attempts"] == 2


def test_a_dataverse_edit_whose_commerce_write_still_fails_stays_parked_after_a_replay(runtime: Runtime,
                                                                                      stores: Stores) -> None:
    runtime.scan("loyalty_cards").run()
    runtime.inbound("loyalty_cards").run()  # the change-tracking baseline
    card = str(stores.commerce_rows("loyalty_cards")[3]["CardNumber"])
    requests.post(f"{stores.commerce_url}/_emulator/config", timeout=10,
                  json={"validation_failures": {"RetailLoyaltyCards": [card]}}).raise_for_status()
    stores.change_in_dataverse(f"msdyn_loyaltycards(msdyn_cardnumber='{card}')", {"msdyn_partynumber": "AGENT-7"})
    runtime.inbound("loyalty_cards").run()
    [parked] = list(runtime.state.parked.all("loyalty_cards"))

    [result] = operations.replay(runtime, "loyalty_cards", [parked["RowKey"]])

    assert result.outcome == "parked"
    [entry] = list(runtime.state.parked.all("loyalty_cards"))
    assert (entry["RowKey"], entry["direction"], entry["source"]) == (parked["RowKey"], "dataverse_to_fo", "replay")
    assert "Infolog" in entry["error"] and entry["attempts"] == parked["attempts"] + 1 == 2
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] != "AGENT-7"


def test_replaying_one_record_after_the_fix_lands_it_and_clears_it(runtime: Runtime, stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    add_currency(stores, "XTS")
    [result] = operations.replay(runtime, "loyalty_reward_points", [encode_key(("XTS-AMOUNT",))])
    assert result.outcome == "written"
    assert list(runtime.state.parked.all("loyalty_reward_points")) == []
    assert stores.differences("loyalty_reward_points") == []


def test_replaying_a_selection_leaves_the_others_parked(runtime: Runtime, stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores, "XTS-1")
    park_an_amount_point_in_unknown_currency(runtime, stores, "XTS-2")
    add_currency(stores, "XTS")
    operations.replay(runtime, "loyalty_reward_points", [encode_key(("XTS-1",))])
    assert [e["RowKey"] for e in runtime.state.parked.all("loyalty_reward_points")] == ["XTS-2"]


def test_replaying_all_lands_every_fixed_record(runtime: Runtime, stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores, "XTS-1")
    park_an_amount_point_in_unknown_currency(runtime, stores, "XTS-2")
    add_currency(stores, "XTS")
    results = operations.replay(runtime)
    assert sorted(r.outcome for r in results) == ["written", "written"]
    assert stores.differences("loyalty_reward_points") == []


def test_a_parked_record_deleted_in_commerce_since_leaves_the_parked_table_when_replayed(runtime: Runtime,
                                                                                         stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)  # never written: its currency is not in Dataverse
    stores.delete_in_commerce("RetailLoyaltyRewardPoints('XTS-AMOUNT')")
    operations.replay(runtime, "loyalty_reward_points", [encode_key(("XTS-AMOUNT",))])
    assert list(runtime.state.parked.all("loyalty_reward_points")) == []  # nothing is left to sync


def test_a_key_that_is_not_parked_is_reported_not_found(runtime: Runtime) -> None:
    [result] = operations.replay(runtime, "loyalty_cards", ["NO-SUCH"])
    assert result.outcome == "not_found"


def test_the_retry_timer_lands_a_record_once_its_currency_exists(runtime: Runtime, stores: Stores) -> None:
    import function_app
    from devtools.functions_host import invoke_timer

    park_an_amount_point_in_unknown_currency(runtime, stores)
    add_currency(stores, "XTS")
    invoke_timer(function_app.app, "timer_retry_parked")
    assert list(runtime.state.parked.all("loyalty_reward_points")) == []
    assert stores.differences("loyalty_reward_points") == []
