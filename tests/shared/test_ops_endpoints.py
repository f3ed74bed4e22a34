"""The operator endpoints under /api/ops, invoked through the real app object."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from devtools.functions_host import functions, invoke_http
from shared.runtime import Runtime
from tests.e2e.stores import Stores
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency


def call(name: str, method: str = "GET", body: Any = None, **route: str) -> tuple[int, Any]:
    import function_app

    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = func.HttpRequest(method, "http://localhost/api/ops", body=raw, route_params=route)
    response = invoke_http(function_app.app, name, req)
    return response.status_code, json.loads(response.get_body())


def test_operator_endpoints_need_the_admin_key() -> None:
    import function_app

    ops = [fn for name, fn in functions(function_app.app).items() if name.startswith("ops_")]
    assert len(ops) == 16 and {fn.get_trigger().auth_level for fn in ops} == {func.AuthLevel.ADMIN}


def test_each_operator_endpoint_has_a_twin_for_signed_in_operators() -> None:
    """``/api/ops/entra/<route>``: anonymous-level for the host, so App Service Authentication's principal (an
    Entra token) decides, checked in the app as for the status page."""
    import function_app

    found = functions(function_app.app)
    ops = {name: fn for name, fn in found.items() if name.startswith("ops_")}
    for name, fn in ops.items():
        twin = found[f"entra_{name}"]
        assert twin.get_trigger().auth_level == func.AuthLevel.ANONYMOUS
        assert twin.get_trigger().route == "ops/entra/" + fn.get_trigger().route.removeprefix("ops/")


def test_status_shows_watermarks_pause_state_and_counters(runtime: Runtime) -> None:
    runtime.scan("loyalty_cards").run()
    status, body = call("ops_status")
    assert status == 200 and body["paused"] == {"loyalty_cards": False, "loyalty_levels": False,
                                                "loyalty_reward_points": False, "loyalty_card_tiers": False,
                                                "loyalty_card_balances": False}
    assert any(w["template"] == "loyalty_cards" and w["runs"] == 1 for w in body["watermarks"])


def test_status_shows_a_pending_template_refresh_and_how_many_callbacks_asked_for_it(runtime: Runtime) -> None:
    runtime.state.refresh.request("loyalty_cards", "unknown_target_id")
    runtime.state.refresh.request("loyalty_cards", "size_exceeded")
    status, body = call("ops_status")
    refresh = body["refreshes"]["loyalty_cards"]
    assert status == 200 and (refresh["pending"], refresh["requests"], refresh["reason"]) == (
        True, 2, "unknown_target_id")
    assert "loyalty_levels" not in body["refreshes"]


def test_parked_records_can_be_listed_inspected_and_replayed(runtime: Runtime, stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    status, body = call("ops_parked")
    assert status == 200 and [e["row_key"] for e in body["value"]] == ["XTS-AMOUNT"]
    status, entry = call("ops_parked_one", template="loyalty_reward_points", key="XTS-AMOUNT")
    assert status == 200 and entry["error_class"] == "lookup_missing" and "XTS" in entry["payload"]
    add_currency(stores, "XTS")
    status, body = call("ops_replay", "POST", {"template": "loyalty_reward_points", "keys": [["XTS-AMOUNT"]]})
    assert status == 200 and [r["outcome"] for r in body["value"]] == ["written"]


def test_replay_without_keys_or_all_is_a_400(runtime: Runtime) -> None:
    status, body = call("ops_replay", "POST", {"template": "loyalty_cards"})
    assert status == 400 and "'all': true" in body["error"]


def test_replay_with_a_malformed_body_is_a_400(runtime: Runtime) -> None:
    assert call("ops_replay", "POST", b"{nope")[0] == 400


def test_an_unknown_template_is_a_404(runtime: Runtime) -> None:
    status, body = call("ops_pause", "POST", template="loyalty_vouchers")
    assert status == 404 and "loyalty_cards" in body["templates"]


def test_a_missing_parked_record_is_a_404(runtime: Runtime) -> None:
    assert call("ops_parked_one", template="loyalty_cards", key="NOPE")[0] == 404


def test_pause_then_resume_through_the_endpoints(runtime: Runtime) -> None:
    assert call("ops_pause", "POST", template="loyalty_cards") == (200, {"template": "loyalty_cards", "paused": True})
    status, body = call("ops_resume", "POST", template="loyalty_cards")
    assert status == 200 and body["paused"] is False


def test_resume_of_a_template_paused_by_setting_says_the_setting_must_change(runtime: Runtime,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.settings, "paused_templates", ["loyalty_cards"])
    status, body = call("ops_resume", "POST", template="loyalty_cards")
    assert status == 409 and body["paused"] is True
    assert "SYNC_PAUSED_TEMPLATES" in body["error"]


def test_replay_with_malformed_keys_is_a_400_naming_them(runtime: Runtime) -> None:
    for keys in ("XTS-AMOUNT", [1], [{"a": 1}], [[1]]):
        status, body = call("ops_replay", "POST", {"template": "loyalty_cards", "keys": keys})
        assert status == 400 and body["error"] == "keys must be a list of row keys or of key-part lists"


def test_replay_of_a_body_that_is_not_an_object_is_a_400(runtime: Runtime) -> None:
    status, body = call("ops_replay", "POST", [1, 2])
    assert status == 400 and body["error"] == "body must be a JSON object"


def test_replay_of_an_unknown_template_is_a_404_whether_named_in_the_body_or_the_query(runtime: Runtime) -> None:
    assert call("ops_replay", "POST", {"template": "loyalty_vouchers", "all": True})[0] == 404
    import function_app

    req = func.HttpRequest("POST", "http://localhost/api/ops/replay", body=b'{"all": true}',
                           params={"template": "loyalty_vouchers"})
    assert invoke_http(function_app.app, "ops_replay", req).status_code == 404


def test_replay_all_and_a_missing_key(runtime: Runtime, stores: Stores) -> None:
    park_an_amount_point_in_unknown_currency(runtime, stores)
    status, body = call("ops_replay", "POST", {"template": "loyalty_reward_points", "keys": ["NOPE"]})
    assert status == 200 and [(r["key"], r["outcome"]) for r in body["value"]] == [("NOPE", "not_found")]
    add_currency(stores, "XTS")
    status, body = call("ops_replay", "POST", {"all": True})
    assert status == 200 and [(r["key"], r["outcome"]) for r in body["value"]] == [("XTS-AMOUNT", "written")]
    assert call("ops_parked")[1] == {"value": []}


def test_conflicts_and_status_of_an_unknown_template_query_are_404(runtime: Runtime) -> None:
    import function_app

    assert call("ops_conflicts") == (200, {"value": []})
    for name in ("ops_conflicts", "ops_parked", "ops_status"):
        req = func.HttpRequest("GET", "http://localhost/api/ops", body=b"", params={"template": "loyalty_vouchers"})
        assert invoke_http(function_app.app, name, req).status_code == 404


def test_the_routes_and_methods_are_unchanged() -> None:
    import function_app

    routes = {name: (fn.get_trigger().route, fn.get_trigger().methods) for name, fn in functions(function_app.app).items()
              if name.startswith("ops_")}
    get, post = [func.HttpMethod.GET], [func.HttpMethod.POST]
    assert routes == {"ops_status": ("ops/status", get), "ops_parked": ("ops/parked", get),
                      "ops_conflicts": ("ops/conflicts", get), "ops_parked_one": ("ops/parked/{template}/{key}", get),
                      "ops_replay": ("ops/replay", post), "ops_pause": ("ops/templates/{template}/pause", post),
                      "ops_resume": ("ops/templates/{template}/resume", post),
                      "ops_reconcile": ("ops/reconcile", post), "ops_sync": ("ops/sync", post),
                      "ops_resync": ("ops/resync", post),
                      "ops_approve_deletes": ("ops/approve-deletes", post), "ops_break_lease": ("ops/break-lease", post),
                      "ops_poison": ("ops/poison", get), "ops_poison_one": ("ops/poison/{template}/{id}", get),
                      "ops_poison_requeue": ("ops/poison/requeue", post), "ops_check": ("ops/check", get)}


# -- under func start: no host checks the master key, so the app asks for its own ------------------------------

LOCAL_TOKEN = "a-local-token-of-32-characters-or-more"


@pytest.fixture()
def core_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment ``func start`` gives the worker: FUNCTIONS_CORETOOLS_ENVIRONMENT=true, not in Azure."""
    monkeypatch.setenv("FUNCTIONS_CORETOOLS_ENVIRONMENT", "true")
    monkeypatch.setenv("SYNC_DASHBOARD_TOKEN", LOCAL_TOKEN)
    monkeypatch.delenv("WEBSITE_SITE_NAME", raising=False)


def call_with(name: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> tuple[
        int, Any]:
    import function_app

    req = func.HttpRequest("GET", "http://localhost:7071/api/ops/status", body=b"", headers=headers or {},
                           params=params or {})
    response = invoke_http(function_app.app, name, req)
    return response.status_code, json.loads(response.get_body())


def test_under_func_start_an_admin_endpoint_without_a_key_is_a_401_saying_which_key(runtime: Runtime,
                                                                                     core_tools: None) -> None:
    status, body = call_with("ops_status")
    assert status == 401 and "x-functions-key" in body["error"] and "SYNC_REMOTE_KEY" in body["error"]


def test_under_func_start_a_wrong_key_is_a_401(runtime: Runtime, core_tools: None) -> None:
    assert call_with("ops_status", {"x-functions-key": "guessed"})[0] == 401


@pytest.mark.parametrize("where", ["header", "query"])
def test_under_func_start_the_printed_token_is_the_key(runtime: Runtime, core_tools: None, where: str) -> None:
    status, body = (call_with("ops_status", {"x-functions-key": LOCAL_TOKEN}) if where == "header"
                    else call_with("ops_status", params={"code": LOCAL_TOKEN}))
    assert status == 200 and "paused" in body


def test_in_azure_the_app_leaves_the_master_key_to_the_host(runtime: Runtime, core_tools: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Where WEBSITE_SITE_NAME says App Service, the host has checked the key before the function runs."""
    monkeypatch.setenv("WEBSITE_SITE_NAME", "loyaltysync-func-abc123")
    assert call_with("ops_status")[0] == 200


def test_under_func_start_a_forged_principal_opens_no_signed_in_route(runtime: Runtime, core_tools: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No App Service strips X-MS-CLIENT-PRINCIPAL in front of func start: easyauth mode is refused there."""
    from tests.shared.ops.dashboard_client import principal

    monkeypatch.setenv("SYNC_DASHBOARD_AUTH", "easyauth")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("SYNC_OPERATORS_ROLE", "LoyaltySync.Operator")
    status, body = call_with("entra_ops_status", {"X-MS-CLIENT-PRINCIPAL": principal(roles=["LoyaltySync.Operator"])})
    assert status == 403 and "func start" in body["error"]


def test_a_typo_in_the_status_pages_setting_leaves_the_master_key_endpoints_alone(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNCTIONS_CORETOOLS_ENVIRONMENT", raising=False)
    monkeypatch.setenv("SYNC_DASHBOARD_AUTH", "locale")
    assert call_with("ops_status")[0] == 200
