"""The operator endpoints under /api/ops, invoked through the real app object."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

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
    assert len(ops) == 7 and {fn.get_trigger().auth_level for fn in ops} == {func.AuthLevel.ADMIN}


def test_status_shows_watermarks_pause_state_and_counters(runtime: Runtime) -> None:
    runtime.scan("loyalty_cards").run()
    status, body = call("ops_status")
    assert status == 200 and body["paused"] == {"loyalty_cards": False, "loyalty_levels": False,
                                                "loyalty_reward_points": False}
    assert any(w["template"] == "loyalty_cards" and w["runs"] == "1" for w in body["watermarks"])


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
