"""The operator command line, run in-process against the emulators and Azurite."""

from __future__ import annotations

import json

import pytest

from shared.cli import main
from shared.runtime import Runtime
from tests.e2e.stores import Stores
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_status_lists_never_run_templates(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(capsys, "status")
    assert {r["template"]: r["status"] for r in rows} == {
        "loyalty_cards": "never run", "loyalty_levels": "never run", "loyalty_reward_points": "never run"}


def test_sync_runs_a_template_and_status_shows_its_watermark(runtime: Runtime, stores: Stores,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    [summary] = run(capsys, "sync", "loyalty_reward_points")
    assert (summary["mode"], summary["status"], summary["written"]) == ("initial", "completed", summary["seen"])
    rows = {r["template"]: r for r in run(capsys, "status")}
    assert rows["loyalty_reward_points"]["runs"] == "1"


def test_sync_of_levels_can_name_one_company(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    summaries = run(capsys, "sync", "loyalty_levels", "--company", "USRT")
    assert [s["scope"] for s in summaries] == ["usrt"]


def test_an_unknown_template_is_a_usage_error(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["sync", "loyalty_vouchers"])
    assert caught.value.code == 2 and "unknown template 'loyalty_vouchers'" in capsys.readouterr().err


def test_parked_replay_round_trip(runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    [entry] = run(capsys, "parked", "--template", "loyalty_reward_points")
    assert (entry["row_key"], entry["error_class"]) == ("XTS-AMOUNT", "lookup_missing")
    add_currency(stores, "XTS")
    [result] = run(capsys, "replay", "loyalty_reward_points", "XTS-AMOUNT")
    assert result["outcome"] == "written"
    assert run(capsys, "parked") == []


def test_pause_and_resume(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "pause", "loyalty_cards")
    assert runtime.state.is_paused("loyalty_cards")
    [row] = run(capsys, "resume", "loyalty_cards")
    assert (row["paused"], row["requeued"]) == ("no", "0")
