"""The operator command line, run in-process against the emulators and Azurite."""

from __future__ import annotations

import json

import pytest
import requests

from shared.cli import main
from shared.runtime import Runtime
from tests.e2e.stores import Stores
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> list[dict[str, str]]:
    assert main(["--json", *argv]) == code
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_status_lists_never_run_templates(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(capsys, "status")
    assert {r["template"]: r["status"] for r in rows} == {
        "loyalty_cards": "never run", "loyalty_levels": "never run", "loyalty_reward_points": "never run",
        "loyalty_card_tiers": "never run", "loyalty_card_balances": "never run"}


def test_sync_runs_a_template_and_status_shows_its_watermark(runtime: Runtime, stores: Stores,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    [summary] = run(capsys, "sync", "loyalty_reward_points")
    assert (summary["mode"], summary["status"], summary["written"]) == ("initial", "completed", summary["seen"])
    rows = {r["template"]: r for r in run(capsys, "status")}
    assert rows["loyalty_reward_points"]["runs"] == 1


def test_sync_of_levels_can_name_one_company(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    summaries = run(capsys, "sync", "loyalty_levels", "--company", "USRT")
    assert [s["scope"] for s in summaries] == ["usrt"]


def test_an_unknown_template_is_a_usage_error(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["sync", "loyalty_vouchers"])
    assert caught.value.code == 2 and "unknown template 'loyalty_vouchers'" in capsys.readouterr().err


def test_parked_replay_round_trip(runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    [entry] = run(capsys, "parked", "--template", "loyalty_reward_points", code=5)  # 5: records are parked
    assert (entry["row_key"], entry["error_class"]) == ("XTS-AMOUNT", "lookup_missing")
    add_currency(stores, "XTS")
    [result] = run(capsys, "replay", "loyalty_reward_points", "XTS-AMOUNT")
    assert result["outcome"] == "written"
    assert run(capsys, "parked") == []


def test_pause_and_resume(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "pause", "loyalty_cards")
    assert runtime.state.callbacks.is_paused("loyalty_cards")
    [row] = run(capsys, "resume", "loyalty_cards")
    assert (row["paused"], row["requeued"]) == (False, 0)


def fail_legal_entities_read(stores: Stores) -> None:
    """The app's F&O user may not read LegalEntities (403), and SYNC_LEGAL_ENTITIES is not set."""
    rule = {"route": "LegalEntities", "kind": "status", "status": 403}
    requests.post(f"{stores.commerce_url}/_emulator/faults", json={"rules": [rule]}, timeout=10).raise_for_status()


def sync_all(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, str]], str]:
    code = main(["--json", "sync", "--all"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_sync_all_carries_on_past_a_template_whose_legal_entities_cannot_be_read(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    assert runtime.settings.legal_entities == []
    fail_legal_entities_read(stores)
    code, summaries, _ = sync_all(capsys)
    assert code == 1
    assert [(s["template"], s["status"]) for s in summaries] == [
        ("loyalty_cards", "completed"), ("loyalty_card_tiers", "completed"), ("loyalty_levels", "failed"),
        ("loyalty_reward_points", "completed"), ("loyalty_card_balances", "completed")]


def test_an_unreadable_legal_entities_is_one_error_line_naming_the_entity_set_and_the_setting(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    fail_legal_entities_read(stores)
    _, _, err = sync_all(capsys)
    [line] = [line for line in err.splitlines() if "LegalEntities" in line]
    assert line.startswith("error: loyalty_levels: ") and "LegalEntities" in line and "SYNC_LEGAL_ENTITIES" in line


def test_status_shows_the_legal_entities_failure_with_its_reason(runtime: Runtime, stores: Stores,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fail_legal_entities_read(stores)
    sync_all(capsys)
    [levels] = [r for r in run(capsys, "status", code=1) if r["template"] == "loyalty_levels"]  # 1: a run failed
    assert (levels["scope"], levels["status"]) == ("all", "failed")
    assert "LegalEntities" in levels["reason"] and "SYNC_LEGAL_ENTITIES" in levels["reason"]


def test_the_legal_entities_failure_leaves_status_once_the_companies_are_known(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    fail_legal_entities_read(stores)
    sync_all(capsys)
    run(capsys, "sync", "loyalty_levels", "--company", "usmf")
    levels = [r for r in run(capsys, "status") if r["template"] == "loyalty_levels"]
    assert [(r["scope"], r["status"], r["reason"]) for r in levels] == [("usmf", "completed", "")]


@pytest.mark.parametrize(("argv", "problem"), [
    (["pause", "loyalty_vouchers"], "unknown template 'loyalty_vouchers'"),
    (["resume", "loyalty_vouchers"], "unknown template 'loyalty_vouchers'"),
    (["replay", "loyalty_vouchers", "K"], "unknown template 'loyalty_vouchers'"),
    (["replay", "loyalty_cards"], "name ROW_KEYs (see 'parked') or use --all"),
    (["parked", "--show", "K"], "--show needs --template"),
    (["sync"], "unknown template None; known: loyalty_cards, loyalty_card_tiers, loyalty_levels, "
               "loyalty_reward_points, loyalty_card_balances"),
])
def test_usage_errors_name_the_problem(runtime: Runtime, capsys: pytest.CaptureFixture[str], argv: list[str],
                                       problem: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2 and f"python -m shared.cli: error: {problem}" in capsys.readouterr().err


def test_parked_show_prints_one_record_in_full_or_fails(runtime: Runtime, stores: Stores,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    assert main(["parked", "--template", "loyalty_reward_points", "--show", "XTS-AMOUNT"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert (entry["row_key"], entry["error_class"]) == ("XTS-AMOUNT", "lookup_missing") and "XTS" in entry["payload"]
    assert main(["parked", "--template", "loyalty_reward_points", "--show", "NOPE"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "no parked record 'NOPE' in loyalty_reward_points\n"


def test_without_json_a_table_is_printed(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conflicts"]) == 0
    assert capsys.readouterr().out == "(none)\n"
    assert main(["pause", "loyalty_cards"]) == 0
    assert capsys.readouterr().out.splitlines() == ["template       paused", "-------------  ------",
                                                    "loyalty_cards  yes   "]


def test_verbose_logs_the_syncs_steps_without_the_storage_sdks_request_dumps(
        runtime: Runtime, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    caplog.set_level(logging.INFO)
    assert main(["-v", "status"]) == 0
    assert [r.name for r in caplog.records if r.name.startswith("azure")] == []


def test_width_cuts_the_widest_column_of_a_table_to_fit(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    runtime.state.parked.park("loyalty_cards", "LC-1", direction="fo_to_dataverse", error_class="validation",
                              error="x" * 300, source="scan", correlation_id="c")
    assert main(["--width", "100", "parked"]) == 5
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) == 100 and lines[2].rstrip().endswith("x…")
    assert main(["parked"]) == 5  # not on a terminal, no --width: as wide as it is
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) > 100


def test_width_cuts_columns_below_the_narrowest_width_when_cutting_the_widest_is_not_enough() -> None:
    from shared.cli import fit

    widths = {"template": 13, "row_key": 15, "key": 15, "error_class": 11, "attempts": 8, "last_failed": 20,
              "retry": 40, "error": 12}
    fitted = fit(widths, 80)
    assert sum(fitted.values()) + 2 * (len(fitted) - 1) <= 80
    assert all(fitted[c] >= len(c) for c in fitted)  # a header is never cut



def test_ctrl_c_ends_the_command_line_with_one_line_and_exit_130() -> None:
    """A real Ctrl-C (SIGINT) while the CLI waits for an app that accepted the connection and never answers."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        env = {**os.environ, "SYNC_REMOTE_KEY": "k"}
        env.pop("SYNC_REMOTE_TOKEN", None)
        env.pop("SYNC_REMOTE_APP_ID", None)
        proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "--remote", url, "status"], env=env,
                                cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        connection, _ = server.accept()  # the request is on its way: the CLI now waits for the answer
        with connection:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert out == "" and err.startswith("interrupted: ") and "Traceback" not in err and len(err.splitlines()) == 1
