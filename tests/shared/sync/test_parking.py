"""Parked records back off per error class: a write refused for a reason in the record's own data (validation) is
not sent again by every scan, only once its row changes in Commerce or an operator replays it; anything else is
retried as before. Against the emulators and Azurite, requests counted at the Dataverse emulator."""

from __future__ import annotations

import pytest
import requests

from shared.ops import queries
from shared.runtime import Runtime
from shared.sync import operations
from shared.sync.parking import WAITING
from tests.configured import runtime_with
from tests.e2e.stores import Stores

CARDS = "loyalty_cards"
TOO_LONG = "9" * 41  # msdyn_partynumber holds 40 characters: Dataverse refuses the write (validation)


def reset_requests(stores: Stores) -> None:
    requests.post(f"{stores.dataverse_url}/_emulator/stats/reset", timeout=10).raise_for_status()


def refused_card(runtime: Runtime, stores: Stores) -> str:
    """Every card synced, then one card changed in HQ to a value Dataverse refuses, and a scan parks it."""
    runtime.scan(CARDS).run()
    card = str(stores.commerce_rows(CARDS)[7]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": TOO_LONG})
    reset_requests(stores)
    [summary] = runtime.scan(CARDS).run()
    assert summary.failed == 1 and stores.dataverse_writes() >= 1
    return card


def parked_card(runtime: Runtime) -> dict[str, object]:
    [entry] = queries.parked(runtime, CARDS)
    return entry


def test_a_record_refused_for_its_data_says_it_waits_for_a_change_or_a_replay(runtime: Runtime, stores: Stores) -> None:
    refused_card(runtime, stores)
    entry = parked_card(runtime)
    assert (entry["error_class"], entry["retry"]) == ("validation", WAITING)


def test_the_next_scan_sends_no_write_for_a_refused_record_that_did_not_change(runtime: Runtime,
                                                                              stores: Stores) -> None:
    refused_card(runtime, stores)
    reset_requests(stores)
    [summary] = runtime.scan(CARDS).run()
    assert stores.dataverse_writes() == 0
    assert summary.failed == 1  # still parked, still counted
    assert runtime.state.watermarks.get(CARDS, "fo_to_dataverse", "all").last_status == "completed_with_parked"
    assert parked_card(runtime)["attempts"] == 1


def test_a_refused_record_that_changes_in_commerce_is_tried_again(runtime: Runtime, stores: Stores) -> None:
    card = refused_card(runtime, stores)
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "8" * 41})
    reset_requests(stores)
    runtime.scan(CARDS).run()
    assert stores.dataverse_writes() >= 1
    assert parked_card(runtime)["attempts"] == 2
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "FIXED"})
    runtime.scan(CARDS).run()
    assert queries.parked(runtime, CARDS) == []
    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "FIXED"


def test_a_replay_tries_a_refused_record_again(runtime: Runtime, stores: Stores) -> None:
    refused_card(runtime, stores)
    reset_requests(stores)
    [result] = operations.replay(runtime, CARDS)
    assert result.outcome == "parked" and stores.dataverse_writes() >= 1
    assert parked_card(runtime)["attempts"] == 2


@pytest.mark.parametrize("status", [500, 503])
def test_a_record_that_failed_for_a_passing_cause_is_retried_by_the_next_scan(stores: Stores,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             status: int) -> None:
    runtime = runtime_with(monkeypatch, SYNC_HTTP_MAX_ATTEMPTS="1")
    runtime.scan(CARDS).run()
    card = str(stores.commerce_rows(CARDS)[7]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "CHANGED"})
    failure = {"kind": "status", "status": status}
    requests.post(f"{stores.dataverse_url}/_emulator/faults", timeout=10,
                  json={"rules": [{**failure, "method": "POST"}, {**failure, "method": "PATCH"}]}).raise_for_status()
    runtime.scan(CARDS).run()
    assert parked_card(runtime)["retry"] != WAITING
    requests.delete(f"{stores.dataverse_url}/_emulator/faults", timeout=10).raise_for_status()
    reset_requests(stores)
    runtime.scan(CARDS).run()
    assert stores.dataverse_writes() >= 1 and queries.parked(runtime, CARDS) == []
    assert stores.actual(CARDS)[(card,)]["msdyn_partynumber"] == "CHANGED"


def test_records_parked_by_a_run_that_fail_fast_stopped_go_with_the_next_run(runtime: Runtime, stores: Stores) -> None:
    """Their cause was one for all (here every write refused), and fixing it changes nothing in Commerce."""
    refusal = {"kind": "status", "status": 400, "code": "0x80044331", "message": "A validation error occurred."}
    requests.post(f"{stores.dataverse_url}/_emulator/faults", timeout=10, json={"rules": [
        {**refusal, "method": "POST"}, {**refusal, "method": "PATCH"}]}).raise_for_status()
    [stopped] = runtime.scan(CARDS).run()
    assert stopped.status == "failed" and len(queries.parked(runtime, CARDS)) == 20
    assert all(entry["retry"] != WAITING for entry in queries.parked(runtime, CARDS))
    requests.delete(f"{stores.dataverse_url}/_emulator/faults", timeout=10).raise_for_status()
    runtime.scan(CARDS).run()
    assert queries.parked(runtime, CARDS) == [] and stores.differences(CARDS) == []
