"""``python -m shared.cli --remote <app URL>``: the CLI drives an app through its /api/ops endpoints, served here by
the local Functions host (devtools/functions_host.py, which checks the master key as the host does) over the
emulators and Azurite. Remote and local mode print the same and exit the same."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools.functions_host import LocalFunctionsHost
from shared.cli import EXIT_PARKED, EXIT_PAUSED, main
from shared.runtime import Runtime
from tests.configured import runtime_with
from tests.e2e.stores import Stores
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency

MASTER_KEY = "local-master-key-for-the-remote-cli-test"


@pytest.fixture()
def host(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFunctionsHost]:
    import function_app

    monkeypatch.delenv("SYNC_REMOTE_APP_ID", raising=False)
    monkeypatch.delenv("SYNC_REMOTE_TOKEN", raising=False)
    monkeypatch.setenv("SYNC_REMOTE_KEY", MASTER_KEY)
    served = LocalFunctionsHost(function_app.app, master_key=MASTER_KEY).start()
    yield served
    served.stop()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def both(capsys: pytest.CaptureFixture[str], host: LocalFunctionsHost, *argv: str) -> tuple[tuple[int, str, str],
                                                                                              tuple[int, str, str]]:
    return cli(capsys, *argv), cli(capsys, "--remote", host.url, *argv)


def test_remote_mode_is_named_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--remote APP_URL" in out and "SYNC_REMOTE_KEY" in out and "--app-id" in out


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["parked"], ["parked", "--json"],
                                  ["parked", "--summary"], ["conflicts"], ["poison", "list"]])
def test_reads_print_the_same_and_exit_the_same_as_local_mode(
        runtime: Runtime, stores: Stores, host: LocalFunctionsHost, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    local, remote = both(capsys, host, *argv)
    assert remote == local
    assert local[0] in (0, EXIT_PARKED)


def test_status_exit_code_is_the_same_remotely(runtime: Runtime, stores: Stores, host: LocalFunctionsHost,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    assert cli(capsys, "--remote", host.url, "status")[0] == EXIT_PARKED
    add_currency(stores, "XTS")
    assert cli(capsys, "--remote", host.url, "replay", "--all")[0] == 0
    assert cli(capsys, "--remote", host.url, "status")[0] == 0


def test_a_remote_replay_prints_and_exits_as_a_local_one(runtime: Runtime, stores: Stores, host: LocalFunctionsHost,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    remote = cli(capsys, "--remote", host.url, "replay", "loyalty_reward_points", "XTS-AMOUNT")
    local = cli(capsys, "replay", "loyalty_reward_points", "XTS-AMOUNT")
    assert remote == local and remote[0] == EXIT_PARKED and "still refused: " in remote[1]
    add_currency(stores, "XTS")
    code, out, _ = cli(capsys, "--remote", host.url, "--json", "replay", "loyalty_reward_points", "XTS-AMOUNT")
    assert code == 0 and [r["outcome"] for r in json.loads(out)] == ["written"]
    assert list(runtime.state.parked.all()) == []


def test_remote_pause_and_resume(runtime: Runtime, host: LocalFunctionsHost, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "--remote", host.url, "pause", "loyalty_cards")[0] == 0
    assert runtime.state.callbacks.is_paused("loyalty_cards")
    code, out, _ = cli(capsys, "--remote", host.url, "--json", "resume", "loyalty_cards")
    assert code == 0 and json.loads(out) == [{"template": "loyalty_cards", "paused": False, "requeued": 0}]


def test_a_remote_resume_of_a_template_paused_by_setting_says_so_and_exits_7(
        runtime: Runtime, host: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    runtime_with(monkeypatch, SYNC_PAUSED_TEMPLATES="loyalty_cards")
    local, remote = both(capsys, host, "resume", "loyalty_cards")
    assert remote == local and remote[0] == EXIT_PAUSED and "stays paused" in remote[2]


def test_remote_dry_run_and_check_print_as_local_ones(runtime: Runtime, stores: Stores, host: LocalFunctionsHost,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    local, remote = both(capsys, host, "sync", "loyalty_reward_points", "--dry-run", "--json")
    assert remote[0] == local[0] == 0
    assert json.loads(remote[1])["findings"] == json.loads(local[1])["findings"]
    assert both(capsys, host, "check")[1][0] == 0


def test_an_unknown_template_is_the_same_usage_error_remotely(host: LocalFunctionsHost,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--remote", host.url, "pause", "loyalty_vouchers"])
    assert caught.value.code == 2 and "unknown template 'loyalty_vouchers'" in capsys.readouterr().err


def test_a_real_sync_is_refused_remotely_in_one_line(host: LocalFunctionsHost, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--remote", host.url, "sync", "loyalty_cards"])
    assert caught.value.code == 2 and "not with --remote" in capsys.readouterr().err


def test_a_wrong_master_key_is_one_line_naming_the_setting(host: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SYNC_REMOTE_KEY", "not-the-key")
    code, out, err = cli(capsys, "--remote", host.url, "status")
    assert (code, out) == (1, "")
    [line] = err.splitlines()
    assert line.startswith(f"error: {host.url} answered 401: ") and "SYNC_REMOTE_KEY" in line


def test_no_credentials_is_one_line_saying_what_to_set(host: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SYNC_REMOTE_KEY")
    code, _, err = cli(capsys, "--remote", host.url, "status")
    [line] = err.splitlines()
    assert code == 1 and "--app-id" in line and "az functionapp keys list" in line


def test_an_app_that_cannot_be_reached_is_one_line(runtime: Runtime, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.shared.test_guard_rails import closed_port

    monkeypatch.setenv("SYNC_REMOTE_KEY", MASTER_KEY)
    url = f"http://127.0.0.1:{closed_port()}"
    code, _, err = cli(capsys, "--remote", url, "status")
    assert code == 1 and err.splitlines() == [f"error: cannot reach {url} (ConnectionError); check --remote (the "
                                              "app's URL) and the network"]


@pytest.fixture()
def behind_easy_auth(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFunctionsHost]:
    """The app as in Azure: App Service Authentication in front (tokens of Ann, an operator, and Bob, who is
    not), the operators' app role configured, no local mode."""
    import function_app
    from tests.shared.ops.dashboard_client import principal

    for name in ("SYNC_REMOTE_KEY", "SYNC_REMOTE_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYNC_DASHBOARD_AUTH", "easyauth")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("SYNC_OPERATORS_ROLE", "LoyaltySync.Operator")
    served = LocalFunctionsHost(function_app.app, master_key=MASTER_KEY, easy_auth={
        "ann-token": principal(roles=["LoyaltySync.Operator"], name="ann@contoso.com"),
        "bob-token": principal(roles=["Reader"], name="bob@contoso.com")}).start()
    yield served
    served.stop()


@pytest.mark.parametrize("argv", [["status"], ["parked"], ["replay", "--all"]])
def test_an_operator_with_the_app_role_is_served_through_app_service_authentication(
        runtime: Runtime, stores: Stores, behind_easy_auth: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """A token (SYNC_REMOTE_TOKEN, or one DefaultAzureCredential gets for --app-id) goes to /api/ops/entra/, where
    no key is needed: App Service Authentication's principal and the app role decide."""
    park_an_amount_point_in_unknown_currency(runtime, stores)
    monkeypatch.setenv("SYNC_REMOTE_TOKEN", "ann-token")
    remote = cli(capsys, "--remote", behind_easy_auth.url, *argv)
    assert remote == cli(capsys, *argv)


def test_a_signed_in_user_without_the_role_is_refused_in_one_line(
        behind_easy_auth: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SYNC_REMOTE_TOKEN", "bob-token")
    code, out, err = cli(capsys, "--remote", behind_easy_auth.url, "status")
    [line] = err.splitlines()
    assert (code, out) == (1, "") and line.startswith(f"error: {behind_easy_auth.url} answered 403: bob@contoso.com")
    assert "app role" in line


def test_a_token_app_service_does_not_accept_is_a_401_in_one_line(
        behind_easy_auth: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SYNC_REMOTE_TOKEN", "forged")
    code, _, err = cli(capsys, "--remote", behind_easy_auth.url, "status")
    assert code == 1 and err.startswith(f"error: {behind_easy_auth.url} answered 401: the token was not accepted")


@pytest.mark.parametrize("argv", [["resync", "loyalty_reward_points", "XTS-AMOUNT"],
                                  ["approve-deletes", "loyalty_cards"],
                                  ["break-lease", "loyalty_cards"],
                                  ["parked", "--template", "loyalty_reward_points", "--show", "XTS-AMOUNT"]])
def test_the_other_actions_print_and_exit_as_local_ones(runtime: Runtime, stores: Stores, host: LocalFunctionsHost,
                                                        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    remote = cli(capsys, "--remote", host.url, *argv)
    local = cli(capsys, *argv)
    assert remote == local


def test_a_remote_reconcile_finds_what_a_local_one_finds(runtime: Runtime, stores: Stores, host: LocalFunctionsHost,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    remote = cli(capsys, "--remote", host.url, "reconcile", "loyalty_reward_points", "--format", "json")
    local = cli(capsys, "reconcile", "loyalty_reward_points", "--format", "json")
    assert remote[0] == local[0] == 1  # drift: the parked record is missing in Dataverse

    def timeless(out: str) -> dict[str, object]:
        answer = json.loads(out)
        return {**answer, "summary": [{k: v for k, v in s.items() if k != "duration_s"} for s in answer["summary"]]}

    assert timeless(remote[1]) == timeless(local[1])


def test_an_app_id_asks_for_one_token_per_command_and_sends_it_to_the_entra_routes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.ops import source

    asked: list[str] = []
    monkeypatch.setattr(source, "entra_token", lambda app_id: asked.append(app_id) or "t-1")
    credentials = source.Credentials(app_id="11111111-2222-3333-4444-555555555555")
    client = source.OpsClient("https://app.example.net/any/path", credentials)
    assert client.prefix == "/api/ops/entra/" and client.base_url == "https://app.example.net"
    assert credentials.headers() == credentials.headers() == {"Authorization": "Bearer t-1"}
    assert asked == ["11111111-2222-3333-4444-555555555555"]
    assert source.OpsClient("https://app.example.net", source.Credentials(key="k")).prefix == "/api/ops/"


def test_against_func_start_the_printed_token_is_the_remote_key(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Core Tools checks no keys (the local host here has no master key, as func start): the app asks for the
    token it printed at start, which SYNC_REMOTE_KEY carries; without it the CLI says what answered 401."""
    import function_app

    token = "the-token-func-start-printed-at-its-start"
    monkeypatch.setenv("FUNCTIONS_CORETOOLS_ENVIRONMENT", "true")
    monkeypatch.setenv("SYNC_DASHBOARD_TOKEN", token)
    for name in ("SYNC_REMOTE_APP_ID", "SYNC_REMOTE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    served = LocalFunctionsHost(function_app.app).start()
    try:
        monkeypatch.setenv("SYNC_REMOTE_KEY", "not-the-token")
        code, _, err = cli(capsys, "--remote", served.url, "status")
        assert code == 1 and f"{served.url} answered 401" in err
        monkeypatch.setenv("SYNC_REMOTE_KEY", token)
        assert cli(capsys, "--remote", served.url, "status") == cli(capsys, "status")
    finally:
        served.stop()
