"""The drift endpoints (reconcile, a sync's dry run, resync) invoked through the real app object."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import requests

from devtools.functions_host import functions, invoke_http
from shared.runtime import Runtime
from tests.e2e.stores import Stores

POINTS = "msdyn_loyaltyrewardpoints"


def call(name: str, body: Any = None, **params: str) -> tuple[int, Any]:
    import function_app

    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = func.HttpRequest("POST", "http://localhost/api/ops", body=raw, params=params)
    response = invoke_http(function_app.app, name, req)
    return response.status_code, json.loads(response.get_body())


def test_the_drift_endpoints_are_registered_with_the_admin_key() -> None:
    import function_app

    found = {name: fn.get_trigger() for name, fn in functions(function_app.app).items()}
    assert {name: (found[name].route, found[name].methods, found[name].auth_level)
            for name in ("ops_reconcile", "ops_sync", "ops_resync")} == {
        f"ops_{n}": (f"ops/{n}", [func.HttpMethod.POST], func.AuthLevel.ADMIN) for n in ("reconcile", "sync", "resync")}


def test_reconcile_finds_a_deleted_row_and_repairs_it(runtime: Runtime, stores: Stores) -> None:
    runtime.scan("loyalty_reward_points").run()
    row = stores.dataverse_rows(POINTS)[3]
    stores.delete_in_dataverse(f"{POINTS}({row['msdyn_loyaltyrewardpointid']})")

    status, body = call("ops_reconcile", {"template": "loyalty_reward_points"})
    assert status == 200 and [(f["kind"], f["key"]) for f in body["findings"]] == [("missing", [row["msdyn_rewardpointid"]])]
    assert body["summary"][0]["missing"] == 1 and body["truncated"] is False

    status, body = call("ops_reconcile", {"template": "loyalty_reward_points", "repair": True})
    assert status == 200 and body["summary"][0]["written"] == 1 and body["summary"][0]["left"] == 0
    assert stores.differences("loyalty_reward_points") == []


def test_reconcile_lists_at_most_limit_findings_and_counts_them_all(runtime: Runtime, stores: Stores) -> None:
    runtime.scan("loyalty_reward_points").run()
    requests.post(f"{stores.dataverse_url}/_emulator/reset", timeout=10).raise_for_status()  # every table emptied
    status, body = call("ops_reconcile", {"limit": 2}, template="loyalty_reward_points")
    assert status == 200 and len(body["findings"]) == 2 and body["truncated"] is True
    assert body["summary"][0]["missing"] == 10


def test_a_dry_run_through_the_endpoint_writes_nothing(runtime: Runtime, stores: Stores) -> None:
    status, body = call("ops_sync", {"template": "loyalty_reward_points"}, dry_run="true")
    assert status == 200 and {f["kind"] for f in body["findings"]} == {"create"} and body["summary"][0]["create"] == 10
    assert stores.dataverse_writes() == 0 and list(runtime.state.watermarks.all()) == []


def test_a_sync_that_is_not_a_dry_run_is_refused(runtime: Runtime) -> None:
    status, body = call("ops_sync", {"template": "loyalty_cards"})
    assert status == 400 and "dry_run=true" in body["error"]


def test_resync_through_the_endpoint(runtime: Runtime, stores: Stores) -> None:
    phrase = next(r["LevelPhrase"] for r in stores.commerce_rows("loyalty_levels") if r["dataAreaId"] == "usrt")
    status, body = call("ops_resync", {"template": "loyalty_levels", "key": ["usrt", phrase]})
    assert status == 200 and body["outcome"] == "written"
    status, body = call("ops_resync", {"template": "loyalty_levels", "key": phrase})
    assert status == 400 and "a key of 2 parts" in body["error"]


def test_bad_drift_requests(runtime: Runtime) -> None:
    assert call("ops_reconcile", {"template": "loyalty_vouchers"})[0] == 404
    assert call("ops_reconcile", {})[0] == 400
    assert call("ops_reconcile", b"{nope")[0] == 400
    assert call("ops_reconcile", {"template": "loyalty_cards", "limit": -1})[0] == 400
    assert call("ops_resync", {"template": "loyalty_cards", "key": [1]})[0] == 400
    assert call("ops_resync", {"template": "loyalty_cards"})[0] == 400
