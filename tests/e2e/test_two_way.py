"""Two-way sync end to end: Dataverse edits reach Commerce, nothing echoes, conflicts follow the policy."""

from __future__ import annotations

import json

import pytest
import requests

from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from tests.e2e.stores import Stores

pytestmark = pytest.mark.two_way


def synced(runtime: Runtime, template: str = "loyalty_cards") -> None:
    """Outbound first (initial sync), then the inbound baseline that sees only echoes."""
    runtime.scan(template).run()
    runtime.inbound(template).run()


def card_path(card: str) -> str:
    return f"msdyn_loyaltycards(msdyn_cardnumber='{card}')"


def test_a_dataverse_edit_lands_in_commerce(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-1", "msdyn_cardtendertype": 806380003})
    summary = runtime.inbound("loyalty_cards").run()
    assert (summary.written, summary.failed, summary.conflicts) == (1, 0, 0)
    row = stores.commerce_row(f"RetailLoyaltyCards('{card}')")
    assert (row["PartyNumber"], row["CardTenderType"]) == ("AGENT-1", "Blocked")  # value map run backwards
    assert stores.differences("loyalty_cards") == []


def test_only_the_changed_fields_are_patched_into_commerce(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    stores.change_in_dataverse(card_path(card), {"msdyn_operatingunitnumber": "077"})
    stores.clear_commerce_write_log()
    runtime.inbound("loyalty_cards").run()
    [write] = stores.commerce_write_log()  # one PATCH; no POST, no second write
    assert (write["method"], write["path"]) == ("PATCH", f"/data/RetailLoyaltyCards('{card}')")
    assert write["body"] == {"OmOperatingUnitNumber": "077"}


def test_a_string_cleared_in_dataverse_is_sent_to_commerce_as_empty_not_null(runtime: Runtime, stores: Stores) -> None:
    """F&O has no null strings (docs/protocol-notes.md §3.3): a column an agent cleared is PATCHed as "" (the
    Commerce emulator refuses null for a string, as a tenant may)."""
    synced(runtime)
    card = next(row for row in stores.commerce_rows("loyalty_cards") if row["OmOperatingUnitNumber"])["CardNumber"]
    stores.change_in_dataverse(card_path(card), {"msdyn_operatingunitnumber": None})
    stores.clear_commerce_write_log()
    summary = runtime.inbound("loyalty_cards").run()
    assert (summary.written, summary.failed) == (1, 0)
    [write] = stores.commerce_write_log()
    assert (write["method"], write["body"]) == ("PATCH", {"OmOperatingUnitNumber": ""})
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["OmOperatingUnitNumber"] == ""
    assert stores.differences("loyalty_cards") == []


def test_a_commerce_edit_lands_in_dataverse_and_does_not_echo_back(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[1]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "FROM-HQ"})
    runtime.scan("loyalty_cards").run()
    requests.post(f"{stores.commerce_url}/_emulator/stats/reset", timeout=10)
    summary = runtime.inbound("loyalty_cards").run()
    assert summary.seen >= 1 and summary.written == 0  # the change feed returned our own write: dropped
    assert stores.commerce_writes() == 0
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "FROM-HQ"


def test_both_sides_edited_commerce_wins_and_the_conflict_is_recorded(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[2]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "HQ-EDIT"})
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-EDIT"})
    summary = runtime.inbound("loyalty_cards").run()
    assert summary.conflicts == 1
    [conflict] = list(runtime.state.conflicts.all("loyalty_cards"))
    assert json.loads(conflict["key"]) == [card] and conflict["winner"] == "commerce"
    assert json.loads(conflict["commerce"])["PartyNumber"] == "HQ-EDIT"
    assert json.loads(conflict["dataverse"])["PartyNumber"] == "AGENT-EDIT"
    assert conflict["detected_at"]
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "HQ-EDIT"
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "HQ-EDIT"


def test_both_sides_edited_with_dataverse_wins_policy(runtime: Runtime, stores: Stores,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_CONFLICT_POLICY", "dataverse_wins")
    get_settings.cache_clear()
    get_runtime.cache_clear()
    runtime = get_runtime()
    stores = Stores(runtime, stores.dataverse_url, stores.commerce_url, stores.token)
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[2]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "HQ-EDIT"})
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-EDIT"})
    runtime.inbound("loyalty_cards").run()
    [conflict] = list(runtime.state.conflicts.all("loyalty_cards"))
    assert conflict["winner"] == "dataverse"
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "AGENT-EDIT"
    runtime.scan("loyalty_cards").run()
    assert stores.differences("loyalty_cards") == []


def test_the_outbound_side_detects_a_conflict_too(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[3]["CardNumber"])
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "HQ-EDIT"})
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-EDIT"})
    runtime.scan("loyalty_cards").run()  # the timer of this direction happens to run first
    [conflict] = list(runtime.state.conflicts.all("loyalty_cards"))
    assert conflict["winner"] == "commerce" and conflict["detected_by"].startswith("fo_to_dataverse")
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "HQ-EDIT"


def test_repeated_runs_in_both_directions_converge_with_zero_writes(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[4]["CardNumber"])
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-2"})
    stores.change_in_commerce(f"RetailLoyaltyCards('{stores.commerce_rows('loyalty_cards')[5]['CardNumber']}')",
                              {"OmOperatingUnitNumber": "088"})
    for _ in range(2):
        runtime.inbound("loyalty_cards").run()
        runtime.scan("loyalty_cards").run()
    requests.post(f"{stores.commerce_url}/_emulator/stats/reset", timeout=10)
    requests.post(f"{stores.dataverse_url}/_emulator/stats/reset", timeout=10)
    for _ in range(2):
        runtime.inbound("loyalty_cards").run()
        runtime.scan("loyalty_cards").run()
    assert (stores.commerce_writes(), stores.dataverse_writes()) == (0, 0)
    assert stores.differences("loyalty_cards") == []


def test_a_dataverse_to_commerce_field_is_never_written_from_a_one_way_column(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])
    before = stores.commerce_row(f"RetailLoyaltyCards('{card}')")["ReplacementCardNumber"]
    stores.change_in_dataverse(card_path(card), {"msdyn_replacementcardnumber": "AGENT-SAYS-SO"})
    requests.post(f"{stores.commerce_url}/_emulator/stats/reset", timeout=10)
    runtime.inbound("loyalty_cards").run()
    assert stores.commerce_writes() == 0
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["ReplacementCardNumber"] == before


def test_an_expired_delta_token_rebaselines_and_converges(runtime: Runtime, stores: Stores,
                                                          dataverse_emulator: object) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[6]["CardNumber"])
    dataverse_emulator.expire_delta_tokens()  # type: ignore[attr-defined]
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AFTER-EXPIRY"})
    summary = runtime.inbound("loyalty_cards").run()
    assert (summary.mode, summary.status, summary.written) == ("rebaseline", "completed", 1)
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "AFTER-EXPIRY"
    assert runtime.inbound("loyalty_cards").run().written == 0


def test_a_level_edited_in_dataverse_lands_in_its_own_legal_entity(runtime: Runtime, stores: Stores) -> None:
    synced(runtime, "loyalty_levels")
    usrt = stores.company_id("USRT")
    stores.change_in_dataverse(f"msdyn_loyaltylevels(msdyn_levelphrase='Gold',_msdyn_company_value={usrt})",
                               {"msdyn_description": "Gold, edited by an agent"})
    runtime.inbound("loyalty_levels").run()
    assert stores.commerce_row("LoyaltyLevels(dataAreaId='usrt',LevelPhrase='Gold')")["LevelDescription"] == (
        "Gold, edited by an agent")
    assert stores.commerce_row("LoyaltyLevels(dataAreaId='usmf',LevelPhrase='Gold')")["LevelDescription"] != (
        "Gold, edited by an agent")


def test_a_card_created_in_dataverse_is_created_in_commerce(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    stores.create_in_dataverse("msdyn_loyaltycards", {
        "msdyn_cardnumber": "DV-NEW-1", "msdyn_cardtendertype": 806380002, "msdyn_partynumber": "P-9",
        "msdyn_operatingunitnumber": "052", "msdyn_enrollmentdate": "2025-01-01T00:00:00Z",
        "msdyn_effectivedate": "2025-01-01T00:00:00Z"})
    summary = runtime.inbound("loyalty_cards").run()
    assert summary.written == 1
    assert stores.commerce_row("RetailLoyaltyCards('DV-NEW-1')")["CardTenderType"] == "NoTender"
    runtime.scan("loyalty_cards").run()
    assert stores.differences("loyalty_cards") == []


def test_an_infolog_validation_error_is_parked_per_record(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    bad, good = (str(r["CardNumber"]) for r in stores.commerce_rows("loyalty_cards")[7:9])
    requests.post(f"{stores.commerce_url}/_emulator/config", timeout=10,
                  json={"validation_failures": {"RetailLoyaltyCards": [bad]}}).raise_for_status()
    stores.change_in_dataverse(card_path(bad), {"msdyn_partynumber": "X1"})
    stores.change_in_dataverse(card_path(good), {"msdyn_partynumber": "X2"})
    summary = runtime.inbound("loyalty_cards").run()
    assert (summary.written, summary.failed) == (1, 1)
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert parked["direction"] == "dataverse_to_fo" and "Infolog" in parked["error"]
    assert stores.commerce_row(f"RetailLoyaltyCards('{good}')")["PartyNumber"] == "X2"


def test_a_row_deleted_in_dataverse_stays_in_commerce_by_default(runtime: Runtime, stores: Stores) -> None:
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[9]["CardNumber"])
    stores.delete_in_dataverse(card_path(card))
    runtime.inbound("loyalty_cards").run()
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["CardNumber"] == card


def test_a_row_deleted_in_dataverse_is_deleted_in_commerce_with_the_delete_policy(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.inbound("loyalty_cards"), "delete_policy", "delete")
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[9]["CardNumber"])
    stores.delete_in_dataverse(card_path(card))
    runtime.inbound("loyalty_cards").run()
    assert (card,) not in {tuple(r.values()) for r in [{"c": r["CardNumber"]} for r in stores.commerce_rows("loyalty_cards")]}
    assert runtime.scan("loyalty_cards").run()[0].written == 0


def test_a_parked_dataverse_edit_outlives_commerce_runs_and_replays_into_commerce(runtime: Runtime,
                                                                                   stores: Stores) -> None:
    from shared.sync import operations

    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[7]["CardNumber"])
    requests.post(f"{stores.commerce_url}/_emulator/config", timeout=10,
                  json={"validation_failures": {"RetailLoyaltyCards": [card]}}).raise_for_status()
    stores.change_in_dataverse(card_path(card), {"msdyn_partynumber": "AGENT-9"})
    runtime.inbound("loyalty_cards").run()
    runtime.scan("loyalty_cards").run()  # Commerce unchanged: must not clear the other direction's failure
    [parked] = list(runtime.state.parked.all("loyalty_cards"))
    assert parked["direction"] == "dataverse_to_fo" and json.loads(parked["key"]) == [card]
    requests.post(f"{stores.commerce_url}/_emulator/config", json={"validation_failures": {}},
                  timeout=10).raise_for_status()
    [result] = operations.replay(runtime, "loyalty_cards", [parked["RowKey"]])
    assert result.outcome == "written"
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "AGENT-9"
    assert list(runtime.state.parked.all("loyalty_cards")) == []


def test_this_apps_own_delete_does_not_come_back_to_delete_a_card_re_created_in_commerce(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.inbound("loyalty_cards"), "delete_policy", "delete")
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[8]["CardNumber"])
    row = stores.commerce_row(f"RetailLoyaltyCards('{card}')")
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    assert runtime.scan("loyalty_cards").run()[0].deleted == 1  # this app deletes the Dataverse row
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in row.items() if not k.startswith("@")})
    summary = runtime.inbound("loyalty_cards").run()  # the change feed returns that delete
    assert summary.deleted == 0
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["CardNumber"] == card


def test_the_delete_of_an_older_dataverse_row_leaves_a_key_synced_again_since(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.inbound("loyalty_cards"), "delete_policy", "delete")
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[8]["CardNumber"])
    row = stores.commerce_row(f"RetailLoyaltyCards('{card}')")
    stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    runtime.scan("loyalty_cards").run()
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in row.items() if not k.startswith("@")})
    runtime.scan("loyalty_cards").run()  # re-created and synced: a new Dataverse row
    runtime.inbound("loyalty_cards").run()
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["CardNumber"] == card
    assert stores.differences("loyalty_cards") == []


def test_an_agents_delete_keeps_a_commerce_card_changed_since_the_last_sync_and_writes_it_back(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.inbound("loyalty_cards"), "delete_policy", "delete")
    synced(runtime)
    card = str(stores.commerce_rows("loyalty_cards")[8]["CardNumber"])
    stores.delete_in_dataverse(card_path(card))
    stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": "CHANGED-IN-HQ"})
    summary = runtime.inbound("loyalty_cards").run()
    assert summary.deleted == 0
    assert stores.commerce_row(f"RetailLoyaltyCards('{card}')")["PartyNumber"] == "CHANGED-IN-HQ"
    assert stores.actual("loyalty_cards")[(card,)]["msdyn_partynumber"] == "CHANGED-IN-HQ"
