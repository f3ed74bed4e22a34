"""The command line tells the truth (guard rails, part 6): a paused template is not synced by accident, status
shows pauses and held callbacks, conflicts and parked records are shown whole and can be found as typed, and
--json prints typed values wherever it is given. In-process against the emulators and Azurite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.cli import EXIT_PARKED, EXIT_PAUSED, main
from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from shared.state.keys import parked_key
from tests.e2e.stores import Stores
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status(capsys: pytest.CaptureFixture[str], code: int = 0) -> dict[str, dict[str, Any]]:
    got, out, _ = cli(capsys, "status", "--json")
    assert got == code
    return {r["template"]: r for r in json.loads(out)}


def pause_by_setting(monkeypatch: pytest.MonkeyPatch, *templates: str) -> Runtime:
    monkeypatch.setenv("SYNC_PAUSED_TEMPLATES", ",".join(templates))
    get_settings.cache_clear()
    get_runtime.cache_clear()
    return get_runtime()


def test_sync_of_a_paused_template_refuses_in_one_line_unless_forced(
        runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "pause", "loyalty_reward_points")[0] == 0
    code, out, err = cli(capsys, "sync", "loyalty_reward_points")
    assert (code, out) == (EXIT_PAUSED, "")
    [line] = err.splitlines()
    assert line.startswith("error: loyalty_reward_points is paused (pause command by cli") and "--force" in line
    assert "resume loyalty_reward_points" in line
    assert status(capsys)["loyalty_reward_points"]["status"] == "never run"  # nothing ran
    code, out, _ = cli(capsys, "--json", "sync", "loyalty_reward_points", "--force")
    assert code == 0 and json.loads(out)[0]["status"] == "completed"


def test_sync_all_leaves_a_paused_template_out_and_says_so(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("loyalty_reward_points", "loyalty_card_balances"):  # not the cards: the card tiers look them up
        cli(capsys, "pause", name)  # (and the balances look the reward points up)
    code, out, err = cli(capsys, "sync", "--all", "--json")
    assert code == EXIT_PAUSED and "loyalty_reward_points is paused" in err
    assert {s["template"] for s in json.loads(out)} == {"loyalty_cards", "loyalty_card_tiers", "loyalty_levels"}


def test_a_template_paused_by_the_setting_is_not_synced_and_resume_says_the_setting_must_change(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pause_by_setting(monkeypatch, "loyalty_reward_points")
    code, _, err = cli(capsys, "sync", "loyalty_reward_points")
    assert code == EXIT_PAUSED and "(setting SYNC_PAUSED_TEMPLATES)" in err
    assert "Remove it from SYNC_PAUSED_TEMPLATES or add --force" in err
    code, out, err = cli(capsys, "resume", "loyalty_reward_points", "--json")
    assert code == EXIT_PAUSED
    assert json.loads(out) == [{"template": "loyalty_reward_points", "paused": True,
                                "paused_by": "setting SYNC_PAUSED_TEMPLATES", "requeued": 0}]
    assert "stays paused: the setting SYNC_PAUSED_TEMPLATES lists it; remove it" in err


def test_status_shows_who_paused_a_template_and_its_held_callbacks(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "pause", "loyalty_cards")
    runtime.state.callbacks.hold("loyalty_cards", "0001", "{}")
    runtime.state.callbacks.hold("loyalty_cards", "0002", "{}")
    pause_by_setting(monkeypatch, "loyalty_levels")
    rows = status(capsys)
    cards, levels, points = rows["loyalty_cards"], rows["loyalty_levels"], rows["loyalty_reward_points"]
    assert (cards["paused"], cards["held_callbacks"]) == (True, 2)
    assert cards["paused_by"].startswith("pause command by cli") and " at " in cards["paused_by"]
    assert (levels["paused"], levels["paused_by"], levels["held_callbacks"]) == (
        True, "setting SYNC_PAUSED_TEMPLATES", 0)
    assert (points["paused"], points["paused_by"]) == (False, "")
    code, out, _ = cli(capsys, "status")  # the table says it too
    assert code == 0 and "paused_by" in out and "held_callbacks" in out and "setting SYNC_PAUSED_TEMPLATES" in out


def test_json_after_the_subcommand_with_typed_values(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "sync", "loyalty_reward_points", "--json")
    [summary] = json.loads(out)
    assert code == 0 and isinstance(summary["seen"], int) and summary["written"] == summary["seen"] > 0
    assert isinstance(summary["seconds"], float)
    points = status(capsys)["loyalty_reward_points"]
    assert points["runs"] == 1 and points["paused"] is False and points["held_callbacks"] == 0
    assert points["counts"]["written"] == summary["written"]  # an object, not JSON text
    assert json.loads(cli(capsys, "--json", "status")[1]) == json.loads(cli(capsys, "status", "--json")[1])


def test_conflicts_show_both_images_whole(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    commerce = {"CardNumber": "LC-1", "PartyNumber": "P" * 120, "CardTenderType": "Blocked"}
    dataverse = {"msdyn_cardnumber": "LC-1", "msdyn_partynumber": "Q" * 120}
    runtime.state.conflicts.record("loyalty_cards", "LC-1", commerce=commerce, dataverse=dataverse,
                                   winner="commerce", detected_by="test", correlation_id="c")
    [row] = json.loads(cli(capsys, "conflicts", "--json")[1])
    assert (json.loads(row["commerce"]), json.loads(row["dataverse"])) == (commerce, dataverse)
    assert "P" * 120 in cli(capsys, "conflicts")[1]


def park_inbound(runtime: Runtime, card: str) -> None:
    """A Dataverse edit of a card that Commerce refused (the row key carries the %in% prefix)."""
    runtime.state.parked.park("loyalty_cards", parked_key(card, "dataverse_to_fo"), direction="dataverse_to_fo",
                              error_class="validation", error=f"Card {card} is blocked for updates.", source="inbound",
                              correlation_id="c")


def test_parked_counts_by_error_class_and_filters(runtime: Runtime, stores: Stores,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    park_inbound(runtime, "LC-1")
    park_inbound(runtime, "LC-2")
    code, out, _ = cli(capsys, "parked", "--summary", "--json")
    assert code == EXIT_PARKED and json.loads(out) == [
        {"template": "loyalty_cards", "direction": "inbound", "error_class": "validation", "count": 2},
        {"template": "loyalty_reward_points", "direction": "outbound", "error_class": "lookup_missing", "count": 1}]
    code, out, _ = cli(capsys, "parked", "--error-class", "lookup_missing", "--json")
    assert [e["row_key"] for e in json.loads(out)] == ["XTS-AMOUNT"]
    code, out, _ = cli(capsys, "parked", "--direction", "inbound", "--json")
    assert sorted(e["row_key"] for e in json.loads(out)) == ["%in%LC-1", "%in%LC-2"]
    assert json.loads(out)[0]["attempts"] == 1
    code, out, _ = cli(capsys, "parked", "--direction", "inbound", "--error-class", "lookup_missing")
    assert (code, out) == (0, "(none)\n")
    code, out, _ = cli(capsys, "parked")
    assert code == EXIT_PARKED and "3 parked, by error class:" in out and "validation      2" in out


@pytest.mark.parametrize("typed", [["LC-1"], ['["LC-1"]'], ["%in%LC-1"]])
def test_parked_show_finds_a_key_as_typed(runtime: Runtime, capsys: pytest.CaptureFixture[str],
                                          typed: list[str]) -> None:
    park_inbound(runtime, "LC-1")
    code, out, _ = cli(capsys, "parked", "--template", "loyalty_cards", "--show", *typed)
    entry = json.loads(out)
    assert code == 0 and (entry["row_key"], entry["error_class"]) == ("%in%LC-1", "validation")


def test_parked_show_finds_a_key_of_several_parts(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    runtime.state.parked.park("loyalty_levels", "usmf|GOLD", direction="fo_to_dataverse", error_class="validation",
                              error="x", source="scan", correlation_id="c")
    for typed in (["usmf", "GOLD"], ["usmf|GOLD"], ['["usmf", "GOLD"]']):
        code, out, _ = cli(capsys, "parked", "--template", "loyalty_levels", "--show", *typed)
        assert code == 0 and json.loads(out)["row_key"] == "usmf|GOLD", typed


# -- status tells what is parked now ---------------------------------------------------------------------------


def test_status_exits_0_once_the_records_a_run_parked_have_been_replayed_and_says_so(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    assert status(capsys, EXIT_PARKED)["loyalty_reward_points"]["parked"] == 1
    add_currency(stores, "XTS")
    assert cli(capsys, "replay", "--all")[0] == 0
    points = status(capsys, 0)["loyalty_reward_points"]
    assert (points["status"], points["parked"], points["parked_note"]) == ("completed", 0,
                                                                           "parked 1, since replayed")


def test_status_exits_5_for_a_record_parked_outside_any_run(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    runtime.scan("loyalty_cards").run()
    park_inbound(runtime, "LC-1")  # a callback's record: the last run itself parked nothing
    code, out, _ = cli(capsys, "status", "--json")
    cards = [r for r in json.loads(out) if r["template"] == "loyalty_cards"]
    assert code == EXIT_PARKED and sum(r["parked"] for r in cards) == 1


def test_a_replay_refused_again_says_why(runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)  # the currency is still missing
    code, out, _ = cli(capsys, "replay", "--all", "--json")
    [result] = json.loads(out)
    assert (code, result["outcome"]) == (EXIT_PARKED, "parked")
    assert result["detail"].startswith("still refused: Couldn't resolve the guid for the field: isocurrencycode")
    assert "still refused: Couldn't resolve" in cli(capsys, "replay", "--all")[1]  # the table says it too
