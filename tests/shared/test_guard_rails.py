"""Safe by default: wrong settings, a template that does not fit the tenant or a run whose records all fail stop
with one clear reason (naming the setting, the template row or the column, and the fix) instead of parking every
record and reporting success. End to end: the CLI and the app object against the emulators and Azurite."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devtools.azurite import Azurite
from devtools.functions_host import QueuePump, invoke_timer
from shared.cli import main
from shared.preflight import PreflightError
from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from tests.e2e.stores import Stores
from tests.shared.sync.test_operations import park_an_amount_point_in_unknown_currency

REPO = Path(__file__).resolve().parents[2]
EXIT_FAILED, EXIT_USAGE, EXIT_PARKED, EXIT_CONFIG = 1, 2, 5, 6


@pytest.fixture(autouse=True)
def app_owned_tables(stores: Stores) -> None:
    """The app-owned tables provisioned, so the preflight of a clean tenant finds nothing missing."""
    stores.provision_app_owned()


def app() -> func.FunctionApp:
    import function_app

    return function_app.app


def configure(monkeypatch: pytest.MonkeyPatch, **settings: str | None) -> None:
    """Change app settings (None: unset) as a new process would see them."""
    for name, value in settings.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def templates_with(tmp_path: Path, name: str, change: Any) -> Path:
    """The repository's template files, with ``change(template)`` applied to ``name``'s."""
    for path in (REPO / "mappings").glob("*.json"):
        template = json.loads(path.read_text(encoding="utf-8"))
        if path.stem == name:
            change(template)
        (tmp_path / path.name).write_text(json.dumps(template), encoding="utf-8")
    return tmp_path


def misspell_party_number_column(template: dict[str, Any]) -> None:
    template["fields"][2]["dataverse_column"] = "msdyn_partynumbr"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dataverse_faults(stores: Stores, *rules: dict[str, Any]) -> None:
    requests.post(f"{stores.dataverse_url}/_emulator/faults", json={"rules": list(rules)}, timeout=10).raise_for_status()


def every_write_refused(stores: Stores) -> None:
    """Dataverse refuses every write as a validation error (a rule on the server side no preflight can see)."""
    refusal = {"kind": "status", "status": 400, "code": "0x80044331", "message": "A validation error occurred."}
    dataverse_faults(stores, {**refusal, "method": "POST"}, {**refusal, "method": "PATCH"})


def whoami_calls(stores: Stores) -> int:
    stats = requests.get(f"{stores.dataverse_url}/_emulator/stats", timeout=10).json()
    return int(stats["by_method_route"].get("GET WhoAmI", 0))


def status_of(capsys: pytest.CaptureFixture[str], template: str) -> list[dict[str, str]]:
    main(["--json", "status"])
    return [r for r in json.loads(capsys.readouterr().out) if r["template"] == template]


# -- settings: normalised, or refused in one line ------------------------------------------------------------


def test_a_dataverse_url_ending_in_the_web_api_path_is_used_as_its_root_with_a_warning(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    configure(monkeypatch, DATAVERSE_URL=f"{stores.dataverse_url}/api/data/v9.2/")
    with caplog.at_level(logging.WARNING, logger="loyaltysync.settings"):
        code, out, _ = cli(capsys, "--json", "sync", "loyalty_reward_points")
    [summary] = json.loads(out)
    assert (code, summary["status"], summary["written"]) == (0, "completed", summary["seen"])
    assert int(summary["seen"]) > 0
    assert get_settings().dataverse_url == stores.dataverse_url
    assert any("DATAVERSE_URL" in r.message and "/api/data/v9.2" in r.message for r in caplog.records)


@pytest.mark.parametrize(("settings", "line"), [
    ({"DATAVERSE_URL": "contoso.crm.dynamics.com"},
     "error: DATAVERSE_URL: 'contoso.crm.dynamics.com' is not an absolute http(s) URL; set DATAVERSE_URL to "
     "https://<org>.crm.dynamics.com"),
    ({"DATAVERSE_URL": None}, "error: DATAVERSE_URL: required; set it to https://<org>.crm.dynamics.com"),
    ({"COMMERCE_URL": "https://contoso.operations.dynamics.com/odata"},
     "error: COMMERCE_URL: 'https://contoso.operations.dynamics.com/odata' has a path (/odata); COMMERCE_URL is the "
     "root URL of the service: set it to https://contoso.operations.dynamics.com"),
    ({"COMMERCE_URL": "https://contoso.operations.dynamics.com/?cmp=usmf&mi=DefaultDashboard"},
     "error: COMMERCE_URL: 'https://contoso.operations.dynamics.com/?cmp=usmf&mi=DefaultDashboard' has a query or "
     "fragment (a browser address?); set COMMERCE_URL to https://contoso.operations.dynamics.com"),
    ({"SYNC_PAGE_SIZE": "lots"},
     "error: SYNC_PAGE_SIZE: Input should be a valid integer, unable to parse string as an integer (got 'lots'); "
     "fix the setting"),
    ({"SYNC_PAUSED_TEMPLATES": "loyalty_card"},
     "error: SYNC_PAUSED_TEMPLATES: 'loyalty_card' is no template (the templates are loyalty_cards, "
     "loyalty_card_tiers, loyalty_levels, loyalty_reward_points, loyalty_card_balances); fix the setting"),
    ({"SYNC_LEGAL_ENTITIES": "usmf usrt"},
     "error: SYNC_LEGAL_ENTITIES: 'usmf usrt' is not a legal entity id (1 to 4 letters or digits, e.g. usmf); set "
     "SYNC_LEGAL_ENTITIES to company ids separated by commas"),
    ({"AzureWebJobsStorage": "not a connection string"},
     "error: AzureWebJobsStorage / SYNC_STORAGE_CONNECTION: Connection string is either blank or malformed. Copy the "
     "connection string from the storage account's Access keys (or, for Azurite, UseDevelopmentStorage=true)"),
])
@pytest.mark.parametrize("command", ["status", "sync"])
def test_a_configuration_error_is_one_line_naming_the_setting_and_the_fix(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        settings: dict[str, str | None], line: str, command: str) -> None:
    configure(monkeypatch, **settings)
    code, out, err = cli(capsys, command, *(["--all"] if command == "sync" else []))
    assert (code, out, err.splitlines()) == (EXIT_CONFIG, "", [line])


def test_a_broken_template_file_is_one_line_too(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def broken(template: dict[str, Any]) -> None:
        template["fields"][1]["value_map"] = "NoSuchEnum"

    configure(monkeypatch, SYNC_MAPPINGS_DIR=str(templates_with(tmp_path, "loyalty_cards", broken)))
    code, out, err = cli(capsys, "status")
    assert (code, out) == (EXIT_CONFIG, "")
    [line] = err.splitlines()
    assert line.startswith("error: loyalty_cards.json: ") and line.endswith(
        "fields[1] (CARDTENDERTYPE): value_map 'NoSuchEnum' is not defined in value_maps")


# -- read-only commands create nothing -------------------------------------------------------------------------


def test_read_only_commands_create_no_table_or_queue(runtime: Runtime, azurite: Azurite,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    prefix = "ro" + uuid.uuid4().hex[:10]
    configure(monkeypatch, SYNC_TABLE_PREFIX=prefix, SYNC_QUEUE_PREFIX=prefix)
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)

    def created() -> tuple[list[str], list[str]]:
        return ([t.name for t in tables.list_tables() if t.name.startswith(prefix)],
                [q.name for q in queues.list_queues(name_starts_with=prefix)])

    for argv in (["status"], ["parked"], ["conflicts"], ["check"], ["parked", "--template", "loyalty_cards"]):
        code, _, err = cli(capsys, "--json", *argv)
        assert (code, err) == (0, ""), argv
    assert created() == ([], [])
    assert cli(capsys, "pause", "loyalty_cards")[0] == 0  # a command that writes creates what it needs
    made_tables, made_queues = created()
    assert f"{prefix}control" in made_tables and f"{prefix}-loyalty-cards" in made_queues


# -- the preflight: `check`, and the start of every run ----------------------------------------------------------


def test_check_passes_against_the_emulators(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "check") == (0, "ok: Dataverse, Commerce, Table Storage and 5 templates (loyalty_cards, "
                                       "loyalty_card_tiers, loyalty_levels, loyalty_reward_points, "
                                       "loyalty_card_balances) checked\n", "")


def _rename(*path: str | int, value: str) -> Any:
    def change(template: dict[str, Any]) -> None:
        node: Any = template
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


def _misspell_party_number_property(template: dict[str, Any]) -> None:
    template["fields"][2].update(fo_field="PARTYNUMBR", fo_property="PartyNumbr")


@pytest.mark.parametrize(("template", "change", "line"), [
    ("loyalty_cards", misspell_party_number_column,
     "template loyalty_cards: fields[2] (PARTYNUMBER): Dataverse table msdyn_loyaltycard has no column "
     "'msdyn_partynumbr' (did you mean 'msdyn_partynumber'?); fix dataverse_column in the template file "
     "loyalty_cards.json"),
    ("loyalty_cards", _misspell_party_number_property,
     "template loyalty_cards: fields[2] (PARTYNUMBR): F&O's RetailLoyaltyCards has no property 'PartyNumbr' (400 : "
     "Could not find a property named 'PartyNumbr' on type 'Microsoft.Dynamics.DataEntities.RetailLoyaltyCard'.); "
     "fix fo_property in the template file loyalty_cards.json"),
    ("loyalty_cards", _rename("dataverse", "logical_name", value="msdyn_loyaltycardz"),
     "template loyalty_cards: dataverse.logical_name: Dataverse has no table 'msdyn_loyaltycardz' (404 0x80040217: "
     "Could not find an entity with name 'msdyn_loyaltycardz'.); fix dataverse.logical_name in the template file "
     "loyalty_cards.json"),
    ("loyalty_cards", _rename("dataverse", "entity_set", value="msdyn_loyaltycard"),
     "template loyalty_cards: dataverse.entity_set: Dataverse refused reading msdyn_loyaltycard with "
     "msdyn_loyaltycardid (404 0x80060888: Resource not found for the segment 'msdyn_loyaltycard'.); fix "
     "dataverse.entity_set in the template file loyalty_cards.json"),
    ("loyalty_reward_points", _rename("fields", 4, "lookup", "entity_set", value="transactioncurrency"),
     "template loyalty_reward_points: fields[4] (REWARDPOINTCURRENCY): Dataverse refused reading transactioncurrency "
     "with transactioncurrencyid, isocurrencycode (404 0x80060888: Resource not found for the segment "
     "'transactioncurrency'.); fix lookup.entity_set, primary_id and match_column in the template file "
     "loyalty_reward_points.json"),
    ("loyalty_levels", _rename("commerce", "entity_set", value="LoyaltyLevel"),
     "template loyalty_levels: commerce.entity_set: F&O has no entity set 'LoyaltyLevel'"),
])
def test_check_names_what_does_not_fit_the_tenant_and_the_fix(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        template: str, change: Any, line: str) -> None:
    configure(monkeypatch, SYNC_MAPPINGS_DIR=str(templates_with(tmp_path, template, change)))
    code, out, err = cli(capsys, "check")
    [problem] = err.splitlines()
    assert (code, out) == (EXIT_CONFIG, "")
    assert problem.startswith(f"error: {line}")


def test_a_misspelt_column_fails_the_run_before_anything_is_written_or_parked(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    configure(monkeypatch, SYNC_MAPPINGS_DIR=str(templates_with(tmp_path, "loyalty_cards", misspell_party_number_column)))
    code, out, err = cli(capsys, "--json", "sync", "loyalty_cards")
    [summary] = json.loads(out)
    assert (code, summary["status"]) == (EXIT_CONFIG, "failed")
    [line] = err.splitlines()
    assert line.startswith("error: loyalty_cards: preflight failed: template loyalty_cards: fields[2] (PARTYNUMBER): "
                           "Dataverse table msdyn_loyaltycard has no column 'msdyn_partynumbr'")
    assert stores.dataverse_writes() == 0 and stores.dataverse_rows("msdyn_loyaltycards") == []
    assert cli(capsys, "--json", "parked") == (0, "[]\n", "")
    [row] = status_of(capsys, "loyalty_cards")
    assert (row["scope"], row["status"]) == ("all", "failed") and "msdyn_partynumbr" in row["reason"]
    assert row["failed_at"]


def test_an_unreachable_dataverse_fails_the_run_and_check_names_the_setting(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    configure(monkeypatch, DATAVERSE_URL=url, SYNC_HTTP_MAX_ATTEMPTS="1")
    code, out, err = cli(capsys, "check")
    [problem] = err.splitlines()  # one line: not the retries before it
    assert (code, out) == (EXIT_FAILED, "")  # the service is down: not a configuration error
    assert problem.startswith(f"error: DATAVERSE_URL: cannot reach {url} (") and problem.endswith(
        "; check DATAVERSE_URL (e.g. https://<org>.crm.dynamics.com) and the network")
    code, out, err = cli(capsys, "--json", "sync", "loyalty_reward_points")
    assert code == EXIT_FAILED and json.loads(out)[0]["status"] == "failed"
    assert f"DATAVERSE_URL: cannot reach {url}" in err
    assert cli(capsys, "--json", "parked") == (0, "[]\n", "")
    [row] = status_of(capsys, "loyalty_reward_points")
    assert row["status"] == "failed" and "DATAVERSE_URL" in row["reason"]


@pytest.mark.parametrize("timer", ["timer_loyalty_cards", "timer_inbound_loyalty_cards"])
@pytest.mark.parametrize("fan_out", ["true", "false"])
def test_the_timers_fail_on_their_preflight_and_record_why(runtime: Runtime, stores: Stores,
                                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          timer: str, fan_out: str) -> None:
    configure(monkeypatch, SYNC_FAN_OUT=fan_out,
              SYNC_MAPPINGS_DIR=str(templates_with(tmp_path, "loyalty_cards", misspell_party_number_column)))
    with pytest.raises(PreflightError) as caught:
        invoke_timer(app(), timer)
    assert "msdyn_partynumbr" in str(caught.value)
    direction = "dataverse_to_fo" if "inbound" in timer else "fo_to_dataverse"
    mark = get_runtime().state.watermarks.get("loyalty_cards", direction, "all")
    assert (mark.last_status, mark.last_error, mark.run_seq) == ("failed", str(caught.value), 0)
    assert stores.dataverse_writes() == 0 and stores.commerce_writes() == 0


def test_a_passed_preflight_is_trusted_for_a_while(runtime: Runtime, stores: Stores,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(2):
        runtime.scan("loyalty_reward_points").run()
    assert whoami_calls(stores) == 1
    again = get_runtime_with(monkeypatch, SYNC_PREFLIGHT_CACHE_S="0")
    requests.post(f"{stores.dataverse_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    for _ in range(2):
        again.scan("loyalty_reward_points").run()
    assert whoami_calls(stores) == 2


def test_a_failed_preflight_is_never_cached_as_passed(runtime: Runtime, stores: Stores,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A second run right after a failed check is refused again (only a check that passed is trusted for a while)."""
    app = get_runtime_with(monkeypatch,
                           SYNC_MAPPINGS_DIR=str(templates_with(tmp_path, "loyalty_cards", misspell_party_number_column)))
    for _ in range(2):
        with pytest.raises(PreflightError, match="msdyn_partynumbr"):
            app.scan("loyalty_cards").run()
    assert stores.dataverse_writes() == 0 and list(app.state.parked.all("loyalty_cards")) == []


def get_runtime_with(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Runtime:
    configure(monkeypatch, **settings)
    return get_runtime()


# -- fail fast: the first records all fail the same way ---------------------------------------------------------


def test_a_run_whose_first_records_all_fail_the_same_way_stops_as_failed(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    every_write_refused(stores)
    code, out, _ = cli(capsys, "--json", "sync", "loyalty_cards")  # 60 cards
    [summary] = json.loads(out)
    assert (code, summary["status"], summary["parked"]) == (EXIT_FAILED, "failed", 20)
    assert summary["detail"].startswith("RunAborted: the first 20 records all failed with error class validation "
                                        "(the last: A validation error occurred.)")
    assert len(list(runtime.state.parked.all("loyalty_cards"))) == 20
    [row] = status_of(capsys, "loyalty_cards")
    assert row["status"] == "failed" and "SYNC_FAIL_FAST_RECORDS=0" in row["reason"] and row["failed_at"]


def test_unchanged_records_disarm_fail_fast_so_a_re_run_parks_its_failing_changed_records(
        runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    """An ordinary re-run: its first records are unchanged (they landed before, so the template fits and the services
    answer), then 25 changed records fail the same way. That is their data, not the configuration: they are parked
    and the run completes (docs: fail fast)."""
    assert cli(capsys, "sync", "loyalty_cards")[0] == 0
    changed = [str(row["CardNumber"]) for row in stores.commerce_rows("loyalty_cards")][-25:]
    for card in changed:
        stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": f"P-{card}"})
    every_write_refused(stores)
    code, out, _ = cli(capsys, "--json", "sync", "loyalty_cards")
    [summary] = json.loads(out)
    assert (code, summary["status"], summary["parked"], summary["unchanged"]) == (
        EXIT_PARKED, "completed", 25, 35)
    assert sorted(json.loads(e["key"])[0] for e in runtime.state.parked.all("loyalty_cards")) == sorted(changed)


def test_with_fail_fast_off_every_record_is_parked_and_the_exit_code_says_so(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    configure(monkeypatch, SYNC_FAIL_FAST_RECORDS="0")
    every_write_refused(stores)
    code, out, _ = cli(capsys, "--json", "sync", "loyalty_cards")
    [summary] = json.loads(out)
    assert (code, summary["status"], summary["parked"]) == (EXIT_PARKED, "completed", 60)


def test_a_fanned_out_range_that_fails_fast_fails_the_run_and_the_next_run_resumes_it(
        runtime: Runtime, stores: Stores, pump: QueuePump) -> None:
    every_write_refused(stores)
    invoke_timer(app(), "timer_loyalty_cards")
    pump.drain()
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (mark.last_status, mark.lease_owner, mark.run_seq) == ("failed", "", 0)
    assert mark.last_error.startswith("RunAborted: the first 20 records all failed with error class validation")
    assert mark.open_run and len(list(runtime.state.parked.all("loyalty_cards"))) == 20
    requests.delete(f"{stores.dataverse_url}/_emulator/faults", timeout=10).raise_for_status()
    invoke_timer(app(), "timer_loyalty_cards")
    pump.drain()
    mark = runtime.state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    assert (mark.last_status, mark.last_error, mark.run_seq) == ("completed", "", 1)
    assert stores.differences("loyalty_cards") == [] and list(runtime.state.parked.all("loyalty_cards")) == []


# -- exit codes ------------------------------------------------------------------------------------------------


def test_parked_records_make_sync_status_parked_and_replay_exit_5(runtime: Runtime, stores: Stores,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    stores.create_in_commerce("RetailLoyaltyRewardPoints", {
        "RewardPointId": "XTS-AMOUNT", "RewardPointType": "Amount", "RewardPointCurrency": "XTS", "Redeemable": "Yes",
        "RedeemRanking": 1, "ExpirationTimeValue": 0, "ExpirationTimeUnit": "Day", "VestingTimeValue": 0,
        "VestingTimeUnit": "Day", "MaximumLoyaltyRewardPoints": 0})
    code, out, _ = cli(capsys, "--json", "sync", "loyalty_reward_points")
    assert (code, json.loads(out)[0]["status"], json.loads(out)[0]["parked"]) == (EXIT_PARKED, "completed", 1)
    assert cli(capsys, "status")[0] == EXIT_PARKED
    assert cli(capsys, "parked")[0] == EXIT_PARKED
    assert cli(capsys, "replay", "loyalty_reward_points", "XTS-AMOUNT")[0] == EXIT_PARKED
    assert cli(capsys, "replay", "loyalty_reward_points", "NO-SUCH-KEY")[0] == EXIT_FAILED


def test_a_clean_run_exits_0_everywhere(runtime: Runtime, stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    runtime.state.parked.unpark("loyalty_reward_points", "XTS-AMOUNT")
    stores.delete_in_commerce("RetailLoyaltyRewardPoints('XTS-AMOUNT')")
    for argv in (["sync", "--all"], ["status"], ["parked"], ["conflicts"], ["check"]):
        assert cli(capsys, *argv)[0] == 0, argv


# -- names checked against what exists ----------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "problem"), [
    (["sync", "loyalty_levels", "--company", "usmx"], "unknown company 'usmx'; F&O's LegalEntities lists: demf, usmf, "
                                                       "usrt"),
    (["sync", "loyalty_cards", "--company", "usmf"], "--company applies to company-specific templates "
                                                      "(loyalty_levels); loyalty_cards runs across companies"),
    (["parked", "--template", "loyalty_card"], "unknown template 'loyalty_card'"),
    (["conflicts", "--template", "loyalty_card"], "unknown template 'loyalty_card'"),
    (["check", "--template", "loyalty_card"], "unknown template 'loyalty_card'"),
])
def test_template_and_company_arguments_must_exist(runtime: Runtime, stores: Stores,
                                                   capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   problem: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE and f"python -m shared.cli: error: {problem}\n" in capsys.readouterr().err
    assert stores.dataverse_writes() == 0


def test_a_legal_entity_setting_that_f_and_o_does_not_list_fails_the_run_and_check(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    configure(monkeypatch, SYNC_LEGAL_ENTITIES="usmf,usmx")
    problem = ("SYNC_LEGAL_ENTITIES: 'usmx' is not a legal entity in F&O (LegalEntities lists demf, usmf, usrt); fix "
               "SYNC_LEGAL_ENTITIES")
    assert cli(capsys, "check") == (EXIT_CONFIG, "", f"error: {problem}\n")
    code, out, err = cli(capsys, "--json", "sync", "loyalty_levels")
    assert (code, [s["status"] for s in json.loads(out)]) == (EXIT_CONFIG, ["failed"])
    assert err == f"error: loyalty_levels: preflight failed: {problem}\n"
    assert stores.dataverse_rows("msdyn_loyaltylevels") == []
    rows = status_of(capsys, "loyalty_levels")  # under the companies the run was to sync, each
    assert [(r["scope"], r["status"], r["reason"]) for r in rows] == [
        (company, "failed", f"preflight failed: {problem}") for company in ("usmf", "usmx")]


def test_the_legal_entity_setting_still_stands_in_for_an_unreadable_legal_entities(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rule = {"route": "LegalEntities", "kind": "status", "status": 403}
    requests.post(f"{stores.commerce_url}/_emulator/faults", json={"rules": [rule]}, timeout=10).raise_for_status()
    configure(monkeypatch, SYNC_LEGAL_ENTITIES="usmf")
    code, out, _ = cli(capsys, "--json", "sync", "loyalty_levels")
    assert (code, [(s["scope"], s["status"]) for s in json.loads(out)]) == (0, [("usmf", "completed")])


# -- first contact: every expected failure is one line ---------------------------------------------------------


def test_every_missing_setting_is_reported_at_once(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    configure(monkeypatch, DATAVERSE_URL=None, COMMERCE_URL=None, AzureWebJobsStorage=None,
              SYNC_STORAGE_CONNECTION=None, SYNC_STORAGE_TABLE_ENDPOINT=None, SYNC_STORAGE_QUEUE_ENDPOINT=None)
    code, out, err = cli(capsys, "check")
    assert (code, out) == (EXIT_CONFIG, "")
    lines = err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["DATAVERSE_URL", "COMMERCE_URL",
                                                              "AzureWebJobsStorage"]


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.mark.parametrize("argv", [["status"], ["parked"], ["conflicts"], ["poison", "list"], ["check"],
                                  ["pause", "loyalty_cards"], ["sync", "loyalty_cards"],
                                  ["replay", "loyalty_cards", "--all"]])
def test_storage_that_cannot_be_reached_is_one_line_with_the_hint_for_every_command(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    port = closed_port()
    endpoints = ";".join(f"{kind}Endpoint=http://127.0.0.1:{port}/devstoreaccount1" for kind in ("Blob", "Queue",
                                                                                                 "Table"))
    configure(monkeypatch, AzureWebJobsStorage=f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                               f"AccountKey={AZURITE_KEY};{endpoints};")
    code, _, err = cli(capsys, *argv)
    [line] = err.splitlines()
    assert code == EXIT_FAILED and "Traceback" not in err
    assert line.startswith("error: AzureWebJobsStorage: cannot reach Table Storage (")
    assert "is Azurite running?" in line and "check AzureWebJobsStorage" in line


def test_a_preflight_failure_for_one_company_is_recorded_under_that_company(
        runtime: Runtime, stores: Stores, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    def misspell_level_column(template: dict[str, Any]) -> None:
        template["fields"][1]["dataverse_column"] = "msdyn_nosuchcolumn"

    configure(monkeypatch, SYNC_MAPPINGS_DIR=str(templates_with(tmp_path, "loyalty_levels", misspell_level_column)))
    code, _, _ = cli(capsys, "sync", "loyalty_levels", "--company", "usmf")
    assert code == EXIT_CONFIG
    assert [(r["scope"], r["status"]) for r in status_of(capsys, "loyalty_levels")] == [("usmf", "failed")]
