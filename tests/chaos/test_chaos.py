"""Chaos: 10,000+ records under throttling, server errors, slow answers and dropped connections, with the
worker process killed mid-run and Azurite restarted mid-run; then both stores compared record by record.

The figures (records, faults injected by kind, retries, missing, duplicated, stale) are printed on every
run (``-s``) and carried in the assertion message on failure; the README's reliability section quotes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.azurite import start_azurite
from devtools.demo import STATIC_TOKEN, emulator_settings
from devtools.functions_host import LocalFunctionsHost
from emulators.commerce.server import start_commerce
from emulators.dataverse.server import start_dataverse
from shared.runtime import get_runtime
from shared.settings import get_settings
from tests.e2e.stores import Stores

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parents[2]
CARDS = 10_000  # plus 200 reward points and 60 levels
TEMPLATES = ["loyalty_cards", "loyalty_levels", "loyalty_reward_points"]

DATAVERSE_FAULTS = [
    # Bulk requests (UpsertMultiple): throttled, failing (-> $batch fallback), slow, dropped.
    {"route": "bulk", "kind": "status", "status": 429, "retry_after": 1, "probability": 0.05, "times": 3, "seed": 11},
    {"route": "bulk", "kind": "status", "status": 500, "probability": 0.1, "times": 6, "seed": 12},
    {"route": "bulk", "kind": "status", "status": 503, "probability": 0.1, "times": 6, "seed": 13},
    {"route": "bulk", "kind": "drop", "probability": 0.05, "times": 3, "seed": 14},
    {"route": "bulk", "kind": "delay", "delay_s": 2.5, "probability": 0.03, "times": 2, "seed": 15},
    # $batch fallbacks with a failing inner operation (only that record is parked, then retried).
    {"route": "$batch", "kind": "batch_partial", "status": 500, "operation": 7, "probability": 0.5, "times": 4,
     "seed": 16},
    # Single requests (callbacks, replays, per-record isolation).
    {"route": "resource", "method": "PATCH", "kind": "status", "status": 429, "retry_after": 1, "probability": 0.002,
     "times": 6, "seed": 1},
    {"route": "resource", "method": "PATCH", "kind": "status", "status": 503, "probability": 0.01, "times": 80, "seed": 2},
    {"route": "resource", "method": "PATCH", "kind": "status", "status": 500, "probability": 0.002, "times": 10,
     "seed": 3},
    {"route": "resource", "method": "PATCH", "kind": "delay", "delay_s": 2.5, "probability": 0.001, "times": 4, "seed": 4},
    {"route": "resource", "kind": "drop", "probability": 0.004, "times": 30, "seed": 5},
]
COMMERCE_FAULTS = [
    {"route": "odata.resource", "method": "GET", "kind": "status", "status": 503, "probability": 0.02, "times": 8,
     "seed": 6},
    {"route": "odata.resource", "method": "GET", "kind": "drop", "probability": 0.01, "times": 5, "seed": 7},
]


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    azurite = start_azurite(tmp_path / "azurite")
    dataverse = start_dataverse(port=0)
    commerce = start_commerce(port=0, cards=CARDS, reward_points=200, levels_per_company=20, page_size=1000,
                              publisher_options={"retry_wait": 0.2, "timeout": 5.0})
    env = {**emulator_settings(dataverse.url, commerce.url, azurite.connection_string, "chaos"),
           "SYNC_HTTP_READ_TIMEOUT_S": "1", "SYNC_HTTP_BACKOFF_BASE_S": "0.05", "SYNC_HTTP_MAX_ATTEMPTS": "8",
           "SYNC_RUN_LEASE_S": "5"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    state: dict[str, Any] = {"azurite": azurite, "dataverse": dataverse, "commerce": commerce, "env": env}
    yield state
    get_settings.cache_clear()
    get_runtime.cache_clear()
    commerce.stop()
    dataverse.stop()
    state["azurite"].stop()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "devtools.worker", "--idle-s", "2"], cwd=REPO,
                            env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def mutate_commerce(stores: Stores) -> dict[str, int]:
    """What people do in Commerce meanwhile: edits, deletes and new cards (each sends a business event)."""
    cards = [str(r["CardNumber"]) for r in stores.commerce_rows("loyalty_cards")]
    for card in cards[100:400]:
        stores.change_in_commerce(f"RetailLoyaltyCards('{card}')", {"PartyNumber": f"CHAOS-{card[-4:]}"})
    for card in cards[500:530]:
        stores.delete_in_commerce(f"RetailLoyaltyCards('{card}')")
    for n in range(20):
        stores.create_in_commerce("RetailLoyaltyCards", {
            "CardNumber": f"CHAOS-NEW-{n:03d}", "CardTenderType": "AsCardTender", "PartyNumber": f"P{n}",
            "OmOperatingUnitNumber": "052", "LoyaltyEnrollmentDate": "2026-11-22T00:00:00Z",
            "LoyaltyEnrollmentDateLocal": "2026-11-22T00:00:00Z"})
    return {"edited": 300, "deleted": 30, "created": 20}


def fired(url: str) -> dict[str, int]:
    counts: dict[str, int] = requests.get(f"{url}/_emulator/faults", timeout=10).json()["fired"]
    return counts


def test_ten_thousand_records_survive_faults_kills_and_a_storage_restart(world: dict[str, Any], tmp_path: Path) -> None:
    import function_app

    dataverse, commerce = world["dataverse"], world["commerce"]
    requests.post(f"{dataverse.url}/_emulator/faults", json={"rules": DATAVERSE_FAULTS}, timeout=10).raise_for_status()
    requests.post(f"{commerce.url}/_emulator/faults", json={"rules": COMMERCE_FAULTS}, timeout=10).raise_for_status()
    stores = Stores(get_runtime(), dataverse.url, commerce.url, STATIC_TOKEN)
    host = LocalFunctionsHost(function_app.app).start()
    routes = {"RetailLoyaltyCards": "loyalty_cards", "RetailLoyaltyRewardPoints": "loyalty_reward_points",
              "LoyaltyLevels": "loyalty_levels"}
    for entity_set, template in routes.items():
        requests.post(f"{commerce.url}/_emulator/business-events/endpoints", timeout=10, json={
            "url": f"{host.url}/api/callbacks/{template}", "entity_sets": [entity_set]}).raise_for_status()
    log = tmp_path / "worker.log"
    figures: dict[str, Any] = {"records": 0, "worker_kills": 0, "azurite_restarts": 0, "worker_runs": 0}
    try:
        # 1. The first worker dies mid-way through the initial sync.
        worker = start_worker(world["env"], log)
        figures["worker_runs"] += 1
        time.sleep(8)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        figures["worker_kills"] += 1
        # 2. Commerce keeps changing; a second worker takes over and Azurite restarts under it.
        figures["commerce_changes"] = mutate_commerce(stores)
        worker = start_worker(world["env"], log)
        figures["worker_runs"] += 1
        time.sleep(5)
        world["azurite"] = world["azurite"].restart()
        figures["azurite_restarts"] += 1
        worker.wait(timeout=600)
        # 3. Start it again until a run completes, as the timer would.
        for _ in range(6):
            worker = start_worker(world["env"], log)
            figures["worker_runs"] += 1
            if worker.wait(timeout=600) == 0:
                break
        assert commerce.publisher.flush(30)
        final = start_worker(world["env"], log)  # the next timer run, with every event delivered
        figures["worker_runs"] += 1
        assert final.wait(timeout=600) == 0
    finally:
        host.stop()
    logs = log.read_text(errors="replace")
    figures["faults_injected"] = {"dataverse": fired(dataverse.url), "commerce": fired(commerce.url)}
    figures["retries"] = logs.count("http retry")
    missing = duplicated = stale = extra = 0
    problems: list[str] = []
    for template in TEMPLATES:
        expected, actual = stores.expected(template), stores.actual(template)  # actual() fails on a duplicate key
        figures["records"] += len(expected)
        missing += len(expected.keys() - actual.keys())
        extra += len(actual.keys() - expected.keys())
        stale += sum(1 for k in expected.keys() & actual.keys() if expected[k] != actual[k])
        problems += stores.differences(template)[:5]
    figures.update({"missing": missing, "duplicated": duplicated, "stale": stale, "not_deleted": extra,
                    "parked": len(list(get_runtime().state.parked.all()))})
    print("chaos figures:", json.dumps(figures))
    assert figures["records"] >= CARDS
    assert sum(figures["faults_injected"]["dataverse"].values()) > 0, figures
    assert (missing, duplicated, stale, extra) == (0, 0, 0, 0), (figures, problems)
