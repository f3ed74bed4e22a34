"""Drift found and repaired: reconcile, a sync's dry run and resync through the command line, against the
emulators and Azurite; progress per record in both directions."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
import requests

from shared.cli import main
from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from tests.e2e.stores import Stores

CARDS = "msdyn_loyaltycards"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip().startswith(("{", "[")) else out)


def reset_stats(stores: Stores) -> None:
    requests.post(f"{stores.dataverse_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    requests.post(f"{stores.commerce_url}/_emulator/stats/reset", timeout=10).raise_for_status()


def sync_cards(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    code, [summary] = cli(capsys, "--json", "sync", "loyalty_cards")
    assert code == 0
    return summary  # type: ignore[no-any-return]


def card_path(card: str) -> str:
    return f"{CARDS}(msdyn_cardnumber='{card}')"


def cards(stores: Stores) -> list[str]:
    return sorted(str(row["CardNumber"]) for row in stores.commerce_rows("loyalty_cards"))


def test_an_emptied_dataverse_table_is_found_by_reconcile_and_repaired(runtime: Runtime, stores: Stores,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    sync_cards(capsys)
    for row in stores.dataverse_rows(CARDS):
        stores.delete_in_dataverse(f"{CARDS}({row['msdyn_loyaltycardid']})")
    assert sync_cards(capsys)["written"] == 0 and stores.dataverse_rows(CARDS) == []  # the hashes say unchanged

    code, report = cli(capsys, "reconcile", "loyalty_cards", "--format", "json")
    [summary] = report["summary"]
    assert code == 1 and (summary["missing"], summary["extra"], summary["different"]) == (60, 0, 0)
    assert sorted(f["key"][0] for f in report["findings"] if f["kind"] == "missing") == cards(stores)
    assert stores.dataverse_rows(CARDS) == []  # without --repair nothing is written

    code, report = cli(capsys, "reconcile", "loyalty_cards", "--repair", "--format", "json")
    [summary] = report["summary"]
    assert code == 0 and (summary["missing"], summary["written"], summary["parked"], summary["left"]) == (60, 60, 0, 0)
    assert stores.differences("loyalty_cards") == []

    reset_stats(stores)
    assert sync_cards(capsys)["written"] == 0 and stores.dataverse_writes() == 0  # the state was recorded
    code, report = cli(capsys, "reconcile", "loyalty_cards", "--format", "json")
    assert code == 0 and report["findings"] == [] and report["summary"][0]["equal"] == 60


def test_a_changed_dataverse_column_is_different_with_the_column_named(runtime: Runtime, stores: Stores,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sync_cards(capsys)
    one_way, two_way = cards(stores)[4], cards(stores)[9]
    commerce = {row["msdyn_cardnumber"]: row for row in stores.dataverse_rows(CARDS)}
    stores.change_in_dataverse(card_path(one_way), {"msdyn_replacementcardnumber": "DRIFT-1"})  # a '>' column
    stores.change_in_dataverse(card_path(two_way), {"msdyn_partynumber": "DRIFT-2"})  # an '=' column

    code, out = cli(capsys, "reconcile", "loyalty_cards", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1
    assert [(r["kind"], r["key"], r["column"], r["commerce"], r["dataverse"]) for r in rows] == [
        ("different", one_way, "msdyn_replacementcardnumber", commerce[one_way]["msdyn_replacementcardnumber"] or "",
         "DRIFT-1"),
        ("different", two_way, "msdyn_partynumber", commerce[two_way]["msdyn_partynumber"], "DRIFT-2")]

    code, report = cli(capsys, "reconcile", "loyalty_cards", "--repair", "--format", "json")
    assert code == 0 and report["summary"][0]["written"] == 2
    assert stores.differences("loyalty_cards") == []
    # The '=' column was changed in Dataverse since the last sync: a conflict, settled by the policy (Commerce wins).
    [conflict] = list(runtime.state.conflicts.all("loyalty_cards"))
    assert (json.loads(conflict["key"]), conflict["winner"]) == ([two_way], "commerce")


def test_an_extra_dataverse_row_is_deleted_only_when_the_policy_and_the_sync_history_allow(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sync_cards(capsys)
    stores.create_in_dataverse(CARDS, {"msdyn_cardnumber": "ZZ-EXTRA", "msdyn_cardtendertype": 806380000})

    code, report = cli(capsys, "reconcile", "loyalty_cards", "--format", "json")
    assert code == 1 and [(f["kind"], f["key"]) for f in report["findings"]] == [("extra", ["ZZ-EXTRA"])]

    code, report = cli(capsys, "reconcile", "loyalty_cards", "--repair", "--format", "json")
    [finding] = report["findings"]
    assert code == 1 and finding["repair"].startswith("kept: no sync state")  # two-way: maybe an agent's new card
    assert stores.actual("loyalty_cards").get(("ZZ-EXTRA",)) is not None

    for name, value in {"SYNC_TWO_WAY": "false", "SYNC_DELETE_POLICY": "ignore"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    code, report = cli(capsys, "reconcile", "loyalty_cards", "--repair", "--format", "json")
    assert code == 1 and report["findings"][0]["repair"] == "kept: SYNC_DELETE_POLICY=ignore"

    monkeypatch.setenv("SYNC_DELETE_POLICY", "delete")
    get_settings.cache_clear()
    get_runtime.cache_clear()
    code, report = cli(capsys, "reconcile", "loyalty_cards", "--repair", "--format", "json")
    assert code == 0 and report["findings"][0]["repair"] == "deleted" and report["summary"][0]["deleted"] == 1
    assert stores.differences("loyalty_cards") == []


def test_reconcile_of_a_company_specific_template_reads_each_company(runtime: Runtime, stores: Stores,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "--json", "sync", "loyalty_levels")[0] == 0
    usrt = stores.company_id("usrt")
    [level] = [r for r in stores.dataverse_rows("msdyn_loyaltylevels") if r["_msdyn_company_value"] == usrt][:1]
    stores.delete_in_dataverse(f"msdyn_loyaltylevels({level['msdyn_loyaltylevelid']})")

    code, report = cli(capsys, "reconcile", "loyalty_levels", "--format", "json")
    assert code == 1 and [(f["kind"], f["key"]) for f in report["findings"]] == [
        ("missing", ["usrt", level["msdyn_levelphrase"]])]
    assert {s["scope"]: s["equal"] + s["missing"] for s in report["summary"]} == {
        s: 3 for s in runtime.commerce.legal_entities()}

    code, report = cli(capsys, "reconcile", "loyalty_levels", "--company", "USRT", "--repair", "--format", "json")
    assert code == 0 and [s["scope"] for s in report["summary"]] == ["usrt"]
    assert stores.differences("loyalty_levels") == []


def test_a_dry_run_lists_what_a_sync_would_write_and_writes_nothing(runtime: Runtime, stores: Stores,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sync_cards(capsys)
    changed, gone = cards(stores)[2], cards(stores)[7]
    before = {r["msdyn_cardnumber"]: r for r in stores.dataverse_rows(CARDS)}[changed]["msdyn_partynumber"]
    stores.change_in_commerce(f"RetailLoyaltyCards('{changed}')", {"PartyNumber": "NEW-PARTY"})
    new = {**stores.commerce_row(f"RetailLoyaltyCards('{changed}')"), "CardNumber": "ZZ-NEW"}
    stores.create_in_commerce("RetailLoyaltyCards", {k: v for k, v in new.items() if not k.startswith("@")})
    stores.delete_in_commerce(f"RetailLoyaltyCards('{gone}')")
    states = sorted((s.row_key, s.etag) for s in runtime.state.synced.iter("loyalty_cards"))
    marks = sorted((m.row_key, m.etag) for m in runtime.state.watermarks.all())
    reset_stats(stores)

    code, report = cli(capsys, "--json", "sync", "loyalty_cards", "--dry-run")

    assert code == 0
    assert sorted((f["kind"], f["key"][0]) for f in report["findings"]) == [
        ("create", "ZZ-NEW"), ("delete", gone), ("update", changed)]
    [update] = [f for f in report["findings"] if f["kind"] == "update"]
    assert update["columns"] == [{"column": "msdyn_partynumber", "commerce": "NEW-PARTY", "dataverse": before}]
    [summary] = report["summary"]
    assert (summary["create"], summary["update"], summary["delete"], summary["unchanged"]) == (1, 1, 1, 58)
    assert (stores.dataverse_writes(), stores.commerce_writes()) == (0, 0)
    assert sorted((s.row_key, s.etag) for s in runtime.state.synced.iter("loyalty_cards")) == states
    assert sorted((m.row_key, m.etag) for m in runtime.state.watermarks.all()) == marks
    assert list(runtime.state.parked.all()) == []

    real = sync_cards(capsys)  # what the dry run listed is what the run writes
    assert (real["written"], real["deleted"]) == (2, 1)


def test_a_dry_run_before_the_first_sync_lists_every_record_as_a_create(runtime: Runtime, stores: Stores,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "sync", "loyalty_reward_points", "--dry-run")
    lines = [line for line in out.splitlines() if line.startswith("create")]
    assert code == 0 and len(lines) == len(stores.commerce_rows("loyalty_reward_points")) == 10
    assert stores.dataverse_writes() == 0 and list(runtime.state.watermarks.all()) == []


def test_resync_rewrites_a_record_whose_hash_says_unchanged(runtime: Runtime, stores: Stores,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sync_cards(capsys)
    card = cards(stores)[5]
    stores.change_in_dataverse(card_path(card), {"msdyn_replacementcardnumber": "DRIFT-3"})
    assert sync_cards(capsys)["written"] == 0  # the hash says unchanged
    assert stores.differences("loyalty_cards") != []

    code, [result] = cli(capsys, "--json", "resync", "loyalty_cards", card)

    assert code == 0 and (result["key"], result["outcome"]) == (card, "written")
    assert stores.differences("loyalty_cards") == []


def test_resync_takes_the_key_in_the_templates_order_and_says_what_it_did(runtime: Runtime, stores: Stores,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    phrase = next(r["LevelPhrase"] for r in stores.commerce_rows("loyalty_levels") if r["dataAreaId"] == "usmf")
    code, [result] = cli(capsys, "--json", "resync", "loyalty_levels", "USMF", phrase)
    assert code == 0 and result["outcome"] == "written" and len(stores.dataverse_rows("msdyn_loyaltylevels")) == 1
    code, [result] = cli(capsys, "--json", "resync", "loyalty_cards", "NO-SUCH-CARD")
    assert code == 1 and result["outcome"] == "not_found"
    with pytest.raises(SystemExit) as caught:
        main(["resync", "loyalty_levels", phrase])
    assert caught.value.code == 2 and "a key of 2 parts (dataAreaId, LevelPhrase)" in capsys.readouterr().err


def test_progress_moves_per_record_in_both_directions(runtime: Runtime, stores: Stores) -> None:
    outbound: list[tuple[int, int | None]] = []
    runtime.scan("loyalty_cards").run(progress=lambda s, total: outbound.append((s.seen, total)))
    assert [seen for seen, _ in outbound][:60] == list(range(1, 61)) and {t for _, t in outbound} == {60}

    inbound: list[int] = []
    summary = runtime.inbound("loyalty_cards").run(progress=lambda s, total: inbound.append(s.seen))
    assert summary.seen == 60 and inbound == list(range(1, 61))
