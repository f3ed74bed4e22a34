"""Bulk writes against the Dataverse emulator: exact requests, fallbacks, isolation of a bad record."""

from __future__ import annotations

import dataclasses
from typing import Any

import requests

from shared.runtime import Runtime
from tests.e2e.stores import Stores


def dataverse_routes(stores: Stores) -> dict[str, int]:
    """Write requests by kind: ``POST bulk`` (UpsertMultiple), ``POST $batch``, ``PATCH resource`` (one record)."""
    stats = requests.get(f"{stores.dataverse_url}/_emulator/stats", timeout=10).json()
    counts: dict[str, int] = {}
    for route, n in stats["by_method_route"].items():
        method, _, name = route.partition(" ")
        if method == "GET":
            continue
        # The outbound side never POSTs a create: any other POST is UpsertMultiple (a request failed by an
        # injected fault is counted under the emulator's generic route name).
        kind = "$batch" if name == "$batch" else "bulk" if method == "POST" else "resource"
        counts[f"{method} {kind}"] = counts.get(f"{method} {kind}", 0) + n
    return counts


def test_an_initial_sync_writes_each_chunk_with_one_upsert_multiple(runtime: Runtime, stores: Stores) -> None:
    [summary] = runtime.scan("loyalty_cards").run()  # 60 cards, chunks of 200
    assert summary.written == 60
    assert dataverse_routes(stores) == {"POST bulk": 1}


def test_chunks_follow_the_bulk_size_setting(runtime: Runtime, stores: Stores, monkeypatch: Any) -> None:
    monkeypatch.setattr(runtime.outbound("loyalty_cards"), "bulk_size", 25)
    runtime.scan("loyalty_cards").run()
    assert dataverse_routes(stores) == {"POST bulk": 3}


def test_a_bad_record_fails_only_itself_through_the_batch_fallback(runtime: Runtime, stores: Stores) -> None:
    card = stores.commerce_rows("loyalty_cards")[10]["CardNumber"]
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "9" * 41})
    [summary] = runtime.scan("loyalty_cards").run()
    assert (summary.written, summary.failed) == (59, 1)
    assert dataverse_routes(stores) == {"POST bulk": 1, "POST $batch": 1}
    assert len(stores.actual("loyalty_cards")) == 59


def test_a_failing_bulk_request_falls_back_to_batch(runtime: Runtime, stores: Stores, dataverse_emulator: Any) -> None:
    dataverse_emulator.faults.add(route="bulk", kind="status", status=500, times=1)
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.written == 60 and stores.differences("loyalty_cards") == []
    assert dataverse_routes(stores) == {"POST bulk": 1, "POST $batch": 1}


def test_when_batch_fails_too_each_record_is_written_alone(runtime: Runtime, stores: Stores,
                                                           dataverse_emulator: Any) -> None:
    dataverse_emulator.faults.add(route="bulk", kind="status", status=500, times=1)
    dataverse_emulator.faults.add(route="$batch", kind="status", status=500, times=1)
    [summary] = runtime.scan("loyalty_cards").run()
    assert summary.written == 60 and stores.differences("loyalty_cards") == []
    assert dataverse_routes(stores)["PATCH resource"] == 60


def test_a_failing_batch_part_parks_only_that_record(runtime: Runtime, stores: Stores, dataverse_emulator: Any) -> None:
    dataverse_emulator.faults.add(route="bulk", kind="status", status=500, times=1)
    dataverse_emulator.faults.add(route="$batch", kind="batch_partial", status=500, operation=5, times=1)
    [summary] = runtime.scan("loyalty_cards").run()
    assert (summary.written, summary.failed) == (59, 1)
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert parked["error_class"] == "server"
    [again] = runtime.scan("loyalty_cards").run()
    assert again.written == 1 and stores.differences("loyalty_cards") == []


def test_a_table_that_keeps_refusing_bulk_messages_stops_getting_them(runtime: Runtime, stores: Stores,
                                                                     dataverse_emulator: Any, monkeypatch: Any) -> None:
    engine = runtime.outbound("loyalty_cards")
    monkeypatch.setattr(engine, "bulk_size", 10)
    monkeypatch.setattr(runtime.dataverse, "limiter", None)  # one chunk at a time: an exact request count
    dataverse_emulator.faults.add(route="bulk", kind="status", status=400, times=3)
    runtime.scan("loyalty_cards").run()
    assert engine.writer.bulk_enabled is False
    assert dataverse_routes(stores) == {"POST bulk": 3, "POST $batch": 6}


def test_bulk_chunks_are_spread_over_several_application_users(runtime: Runtime, stores: Stores, monkeypatch: Any) -> None:
    from shared.runtime import get_runtime
    from shared.settings import get_settings

    requests.post(f"{stores.dataverse_url}/_emulator/service-protection", timeout=10,
                  json={"window_s": 300, "max_requests": 100000, "max_execution_s": 100000.0}).raise_for_status()
    monkeypatch.setenv("SYNC_DATAVERSE_CLIENT_IDS", "writer-a,writer-b")
    monkeypatch.setenv("SYNC_BULK_SIZE", "5")
    get_settings.cache_clear()
    get_runtime.cache_clear()
    several = get_runtime()
    assert len(several.identities) == 3
    [summary] = several.scan("loyalty_cards").run()
    users = requests.get(f"{stores.dataverse_url}/_emulator/service-protection", timeout=10).json()["users"]
    assert summary.written == 60 and stores.differences("loyalty_cards") == []
    assert len(users) == 3  # the app's identity (reads, lookups) and both extra ones wrote chunks


def test_a_chunk_throttled_past_its_retries_is_parked_whole_without_splitting(
        runtime: Runtime, stores: Stores, dataverse_emulator: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(runtime.dataverse.core, "retry", dataclasses.replace(runtime.dataverse.core.retry, max_attempts=2))
    # The whole (first) chunk is throttled: without this, the fail-fast guard would stop the run after 20 records.
    monkeypatch.setattr(runtime.outbound("loyalty_cards"), "fail_fast", 0)
    dataverse_emulator.faults.add(route="bulk", kind="status", status=429, retry_after=1, times=2)

    [summary] = runtime.scan("loyalty_cards").run()

    assert (summary.written, summary.failed) == (0, 60)
    assert dataverse_routes(stores) == {"POST bulk": 2}  # no $batch, no 60 single PATCHes into the throttle
    assert {p["error_class"] for p in runtime.state.parked.all("loyalty_cards")} == {"throttled"}


def dataverse_card(stores: Stores, card: str) -> dict[str, Any]:
    url = f"{stores.dataverse_url}/api/data/v9.2/msdyn_loyaltycards(msdyn_cardnumber='{card}')"
    row: dict[str, Any] = requests.get(url, headers=stores.headers, timeout=10).json()
    return row


def test_a_changed_record_sends_only_its_changed_columns_as_an_update(runtime: Runtime, stores: Stores,
                                                                      monkeypatch: Any) -> None:
    monkeypatch.setattr(runtime.outbound("loyalty_cards"), "two_way", False)
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[3]["CardNumber"]
    stores.change_in_dataverse(f"msdyn_loyaltycards(msdyn_cardnumber='{card}')", {"msdyn_operatingunitnumber": "DV-ONLY"})
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "NEW-PARTY"})

    [summary] = runtime.scan("loyalty_cards").run()

    assert summary.written == 1
    row = dataverse_card(stores, card)
    assert row["msdyn_partynumber"] == "NEW-PARTY"
    assert row["msdyn_operatingunitnumber"] == "DV-ONLY"  # not sent: it did not change in Commerce
    assert dataverse_routes(stores) == {"POST bulk": 1, "PATCH resource": 1, "POST $batch": 1}


def test_a_partial_update_of_a_row_deleted_in_dataverse_writes_it_whole(runtime: Runtime, stores: Stores,
                                                                        monkeypatch: Any) -> None:
    monkeypatch.setattr(runtime.outbound("loyalty_cards"), "two_way", False)
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[3]["CardNumber"]
    stores.delete_in_dataverse(f"msdyn_loyaltycards(msdyn_cardnumber='{card}')")
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "NEW-PARTY"})

    [summary] = runtime.scan("loyalty_cards").run()

    assert summary.written == 1
    assert stores.differences("loyalty_cards") == []  # back with every column, not half-empty
    assert dataverse_routes(stores)["POST $batch"] == 1 and dataverse_routes(stores)["POST bulk"] == 2


def test_a_conflict_commerce_wins_sends_the_whole_record(runtime: Runtime, stores: Stores) -> None:
    runtime.scan("loyalty_cards").run()
    card = stores.commerce_rows("loyalty_cards")[3]["CardNumber"]
    stores.change_in_dataverse(f"msdyn_loyaltycards(msdyn_cardnumber='{card}')", {"msdyn_operatingunitnumber": "DV-EDIT"})
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "NEW-PARTY"})

    runtime.scan("loyalty_cards").run()

    assert len(list(runtime.state.conflicts.all("loyalty_cards"))) == 1
    assert stores.differences("loyalty_cards") == []  # Dataverse's edit overwritten: Commerce won


def test_new_levels_go_out_in_upsert_multiple_with_the_company_only_in_odata_id(runtime: Runtime, stores: Stores) -> None:
    summaries = runtime.scan("loyalty_levels").run()  # every level is new: UpsertMultiple's create path
    assert sum(s.written for s in summaries) > 0 and sum(s.failed for s in summaries) == 0
    assert set(dataverse_routes(stores)) == {"POST bulk"}  # no fallback to $batch: Dataverse took each request
    assert runtime.outbound("loyalty_levels").writer.bulk_enabled
    assert stores.differences("loyalty_levels") == []
