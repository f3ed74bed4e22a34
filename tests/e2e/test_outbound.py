"""Commerce -> Dataverse end to end: emulators over real HTTP, Azurite for state, the real engine."""

from __future__ import annotations

import json

import pytest
import requests

from devtools.functions_host import LocalFunctionsHost, QueuePump
from shared.runtime import Runtime
from shared.state.store import encode_key
from shared.sync.runs import RunSummary
from tests.e2e.stores import Stores

TEMPLATES = ["loyalty_cards", "loyalty_levels", "loyalty_reward_points"]


def sync_all(runtime: Runtime) -> list[RunSummary]:
    return [s for name in TEMPLATES for s in runtime.scan(name).run()]


def total(summaries: list[RunSummary], field: str) -> int:
    return sum(getattr(s, field) for s in summaries)


@pytest.mark.parametrize("template", TEMPLATES)
def test_initial_sync_lands_every_record_exactly(runtime: Runtime, stores: Stores, template: str) -> None:
    summaries = runtime.scan(template).run()
    assert {s.mode for s in summaries} == {"initial"}
    assert stores.differences(template) == []
    assert len(stores.actual(template)) == total(summaries, "written") > 0


def test_a_rerun_writes_nothing_and_duplicates_nothing(runtime: Runtime, stores: Stores) -> None:
    sync_all(runtime)
    writes_before = stores.dataverse_writes()
    again = sync_all(runtime)
    assert stores.dataverse_writes() == writes_before
    assert (total(again, "written"), total(again, "deleted"), total(again, "failed")) == (0, 0, 0)
    assert total(again, "unchanged") == total(again, "seen") > 0
    assert {s.mode for s in again} == {"incremental"}
    assert all(stores.differences(t) == [] for t in TEMPLATES)


def test_a_changed_record_arrives_via_the_timer(runtime: Runtime, stores: Stores) -> None:
    runtime.scan("loyalty_reward_points").run()
    point = stores.commerce_rows("loyalty_reward_points")[0]["RewardPointId"]
    stores.change_in_commerce(f"RetailLoyaltyRewardPoints('{point}')", {"RedeemRanking": 9, "VestingTimeUnit": "Year"})
    [summary] = runtime.scan("loyalty_reward_points").run()
    assert (summary.written, summary.unchanged + summary.written) == (1, summary.seen)
    assert stores.actual("loyalty_reward_points")[(point,)]["msdyn_redeemranking"] == 9
    assert stores.actual("loyalty_reward_points")[(point,)]["msdyn_vestingtimeunit"] == 806380002


def test_a_changed_record_arrives_via_a_business_event_and_the_callback(runtime: Runtime, stores: Stores,
                                                                        commerce_emulator: object, pump: QueuePump) -> None:
    import function_app

    runtime.scan("loyalty_cards").run()
    host = LocalFunctionsHost(function_app.app).start()
    try:
        requests.post(f"{stores.commerce_url}/_emulator/business-events/endpoints", timeout=10, json={
            "url": f"{host.url}/api/callbacks/loyalty_cards", "entity_sets": ["RetailLoyaltyCards"]}).raise_for_status()
        card = stores.commerce_rows("loyalty_cards")[3]["CardNumber"]
        stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "009999", "CardTenderType": "NoTender"})
        assert commerce_emulator.publisher.flush(15)  # type: ignore[attr-defined]
        assert pump.drain() == 1
    finally:
        host.stop()
    deliveries = requests.get(f"{stores.commerce_url}/_emulator/business-events/deliveries", timeout=10).json()
    assert deliveries  # the activation test event and the change event both reached the trigger
    row = stores.actual("loyalty_cards")[(card,)]
    assert (row["msdyn_partynumber"], row["msdyn_cardtendertype"]) == ("009999", 806380002)
    assert stores.differences("loyalty_cards") == []


def test_a_deleted_record_is_deleted_in_dataverse_by_the_timer(runtime: Runtime, stores: Stores) -> None:
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.deleted == 1
    assert (card,) not in stores.actual("loyalty_cards")
    assert stores.differences("loyalty_cards") == []


def test_a_deleted_record_is_deleted_via_the_callback_path(runtime: Runtime, stores: Stores) -> None:
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[1]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    assert runtime.outbound("loyalty_cards").sync_key({"CardNumber": card}) == "deleted"
    assert (card,) not in stores.actual("loyalty_cards")


def test_delete_policy_ignore_keeps_the_dataverse_row(runtime: Runtime, stores: Stores,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = runtime.outbound("loyalty_cards")
    runtime.scan("loyalty_cards").run()
    monkeypatch.setattr(engine, "delete_policy", "ignore")
    card = stores.commerce_rows("loyalty_cards")[2]["CardNumber"]
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.deleted == 1 and (card,) in stores.actual("loyalty_cards")


def test_a_record_whose_currency_is_missing_is_parked_while_the_rest_syncs(runtime: Runtime, stores: Stores) -> None:
    stores.create_in_commerce("RetailLoyaltyRewardPoints", {
        "RewardPointId": "XTS-AMOUNT", "RewardPointType": "Amount", "RewardPointCurrency": "XTS", "Redeemable": "Yes",
        "RedeemRanking": 1, "ExpirationTimeValue": 0, "ExpirationTimeUnit": "Day", "VestingTimeValue": 0,
        "VestingTimeUnit": "Day", "MaximumLoyaltyRewardPoints": 0})
    [summary] = runtime.scan("loyalty_reward_points").run()
    assert summary.failed == 1 and summary.written == summary.seen - 1
    [parked] = list(runtime.state.parked.all("loyalty_reward_points"))
    assert (json.loads(parked["key"]), parked["error_class"]) == (["XTS-AMOUNT"], "lookup_missing")
    assert "XTS" in parked["error"] and json.loads(parked["payload"])["RewardPointCurrency"] == "XTS"
    assert stores.differences("loyalty_reward_points") == ["missing in Dataverse: ('XTS-AMOUNT',)"]


def test_a_parked_record_syncs_once_its_currency_exists(runtime: Runtime, stores: Stores) -> None:
    test_a_record_whose_currency_is_missing_is_parked_while_the_rest_syncs(runtime, stores)
    requests.post(f"{stores.dataverse_url}/api/data/v9.2/transactioncurrencies", headers=stores.headers, timeout=10,
                  json={"isocurrencycode": "XTS", "currencyname": "Testing currency"}).raise_for_status()
    [summary] = runtime.scan("loyalty_reward_points").run()
    assert summary.written == 1
    assert list(runtime.state.parked.all("loyalty_reward_points")) == []
    assert stores.differences("loyalty_reward_points") == []


def test_a_record_dataverse_rejects_is_parked_with_the_server_reason(runtime: Runtime, stores: Stores) -> None:
    card = stores.commerce_rows("loyalty_cards")[0]["CardNumber"]
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "9" * 41})
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.failed == 1 and summary.written == summary.seen - 1
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert parked["error_class"] == "validation" and "msdyn_partynumber" in parked["error"]


def test_levels_sync_per_legal_entity_each_with_its_own_watermark(runtime: Runtime, stores: Stores) -> None:
    summaries = runtime.scan("loyalty_levels").run()
    assert sorted(s.scope for s in summaries) == ["demf", "usmf", "usrt"]
    marks = {m.scope: m for m in runtime.state.watermarks.all() if m.template == "loyalty_levels"}
    assert sorted(marks) == ["demf", "usmf", "usrt"] and all(m.run_seq == 1 for m in marks.values())
    assert {key[0] for key in stores.actual("loyalty_levels")} == {"demf", "usmf", "usrt"}
    assert stores.differences("loyalty_levels") == []


def test_a_level_lands_in_its_own_legal_entity(runtime: Runtime, stores: Stores) -> None:
    stores.create_in_commerce("LoyaltyLevels", {"dataAreaId": "usrt", "LevelPhrase": "Diamond",
                                                "LevelDescription": "Invitation only"})
    runtime.scan("loyalty_levels").run(["usrt"])
    assert stores.actual("loyalty_levels")[("usrt", "Diamond")]["msdyn_description"] == "Invitation only"
    assert not any(key == ("usmf", "Diamond") for key in stores.actual("loyalty_levels"))


def test_an_overlapping_run_of_the_same_scope_is_skipped(runtime: Runtime) -> None:
    assert runtime.state.watermarks.acquire_lease("loyalty_cards", "fo_to_dataverse", "all", "another-run", 600) is not None
    [summary] = runtime.scan("loyalty_cards").run()
    assert (summary.status, summary.written) == ("skipped", 0)


def test_the_watermark_advances_once_per_completed_run(runtime: Runtime) -> None:
    runtime.scan("loyalty_cards").run()
    runtime.scan("loyalty_cards").run()
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (mark.run_seq, mark.last_status, mark.lease_owner) == (2, "completed", "")
    assert json.loads(mark.last_counts)["unchanged"] == json.loads(mark.last_counts)["seen"]


def test_a_stale_concurrent_write_is_corrected_by_a_re_read(runtime: Runtime, stores: Stores) -> None:
    engine = runtime.outbound("loyalty_cards")
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[5]["CardNumber"]
    partition, row_key = engine.partition(None), encode_key((card,))
    stale_state = runtime.state.synced.get(partition, row_key)
    stale_row = next(r for r in stores.commerce_rows("loyalty_cards") if r["CardNumber"] == card)
    # A callback syncs a newer version first ...
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"OmOperatingUnitNumber": "099"})
    assert engine.sync_key({"CardNumber": card}) == "written"
    # ... then a timer run that read the old version (and the old state) writes late.
    outcome = engine._sync_row({**stale_row, "OmOperatingUnitNumber": "001"}, partition, {row_key: stale_state},
                               set(), source="timer")
    assert outcome == "written"
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_operatingunitnumber"] == "099"


def test_a_row_outside_the_value_map_is_parked_with_its_key_while_the_rest_syncs(runtime: Runtime, stores: Stores,
                                                                                commerce_emulator: object) -> None:
    from emulators.commerce.entities import ENTITY_SETS_BY_NAME

    # As if a later F&O release added an enum member the template's value map does not know.
    cards = ENTITY_SETS_BY_NAME["RetailLoyaltyCards"]
    store = commerce_emulator.store  # type: ignore[attr-defined]
    card = stores.commerce_rows("loyalty_cards")[7]["CardNumber"]
    store.update(cards, store.key_of(cards, {"CardNumber": card}), {"CardTenderType": "Suspended"})
    [summary] = runtime.scan("loyalty_cards").run()
    assert (summary.failed, summary.written) == (1, summary.seen - 1)
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert (json.loads(parked["key"]), parked["error_class"]) == ([card], "validation")
    assert "'Suspended' is not in value map RetailLoyaltyTenderTypeBase" in parked["error"]


def test_progress_moves_per_record_with_the_total(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.outbound("loyalty_cards"), "page_size", 25)
    seen: list[tuple[int, int | None]] = []
    runtime.scan("loyalty_cards").run(progress=lambda summary, total: seen.append((summary.seen, total)))
    assert [n for n, _ in seen] == sorted([n for n, _ in seen]) and seen[-1] == (60, 60)
    assert {n for n, _ in seen} == set(range(1, 61))  # per record, not per key range of 25
    assert {total for _, total in seen} == {60}
