"""Chaos: 10,000+ records under throttling, server errors, slow answers and dropped connections, with the
worker process killed mid-run twice (once scanning in place, once fanned out: page tasks on the pages queue and
page workers) and Azurite restarted mid-run; then both stores compared record by record.

Kills and the restart are placed by observed progress (key ranges checkpointed done), not by the clock, and each
kill is checked to have interrupted a run: the scan's run is still open in its watermark with ranges not done.

The figures (records, faults injected by kind, retries, kills with the progress they interrupted, queue function
failures, missing, duplicated, stale, not deleted, parked, poisoned) are printed on every run (``-s``) and carried
in the assertion message on failure; docs/design.md's reliability section quotes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError

from devtools.azurite import start_azurite
from devtools.demo import STATIC_TOKEN, emulator_settings
from devtools.functions_host import LocalFunctionsHost
from emulators.commerce.server import start_commerce
from emulators.dataverse.server import start_dataverse
from shared.mapping.catalog import DEFAULT_MAPPINGS_DIR
from shared.runtime import get_runtime
from shared.settings import get_settings
from tests.e2e.stores import Stores

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parents[2]
CARDS = 10_000  # plus 200 reward points and 60 levels
RANGE = 500  # keys per checkpointed key range: 21 ranges of cards, so progress is seen range by range
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
# Once the fanned-out worker that is killed has planned its ranges: the next reads of card ranges (collection reads,
# not the callbacks' reads by key) are slow, so that the kill lands inside a key range before its writes, not
# between two ranges.
SLOW_CARD_RANGES = {"route": "/RetailLoyaltyCards$", "method": "GET", "kind": "delay", "delay_s": 0.5, "times": 4}
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
    mappings = tmp_path / "mappings"  # the three dual-write templates this test holds to their counts; the app-owned
    mappings.mkdir()                   # tables of the tier and balance templates have their own tests (tests/e2e)
    for name in TEMPLATES:
        shutil.copy(DEFAULT_MAPPINGS_DIR / f"{name}.json", mappings)
    env = {**emulator_settings(dataverse.url, commerce.url, azurite.connection_string, "chaos"),
           "SYNC_MAPPINGS_DIR": str(mappings), "SYNC_HTTP_READ_TIMEOUT_S": "1", "SYNC_HTTP_BACKOFF_BASE_S": "0.05",
           "SYNC_HTTP_MAX_ATTEMPTS": "8",
           "SYNC_RUN_LEASE_S": "5", "SYNC_PAGE_SIZE": str(RANGE)}
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


def start_worker(env: dict[str, str], log: Path, *, fan_out: bool = True, since: datetime | None = None,
                 settle: bool = False) -> subprocess.Popen[bytes]:
    """A worker process; ``since``: runs completed since then count as done (a restarted worker finishes the run
    it resumes and starts no fresh scan, which would repair what the crash broke and hide it)."""
    settings = {**os.environ, **env, "SYNC_FAN_OUT": "true" if fan_out else "false"}
    command = [sys.executable, "-m", "devtools.worker", "--idle-s", "2", "--max-wait-s", "300",
               *(["--since", since.isoformat()] if since else []), *(["--settle"] if settle else [])]
    return subprocess.Popen(command, cwd=REPO, env=settings, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def card_scan() -> dict[str, Any]:
    """Where the cards scan stands, from its watermark and its run's checkpoints."""
    state = get_runtime().state
    mark = state.watermarks.get("loyalty_cards", "fo_to_dataverse", "all")
    plan = state.checkpoints.get_plan("loyalty_cards", "all", mark.open_run) if mark.open_run else None
    pages = state.checkpoints.pages(plan) if plan is not None else []
    return {"open_run": mark.open_run, "lease_live": mark.lease_live(datetime.now(UTC)),
            "ranges_done": sum(page.status == "done" for page in pages), "ranges_planned": len(pages),
            "planning_done": bool(plan and plan.planning_done)}


def last_runs_changes() -> dict[str, int]:
    """What the last completed outbound run of every template and scope wrote and deleted, summed."""
    marks = [m for m in get_runtime().state.watermarks.all() if m.direction == "fo_to_dataverse" and m.last_run_id]
    return {"runs": len(marks), "written": sum(m.counts.get("written", 0) for m in marks),
            "deleted": sum(m.counts.get("deleted", 0) for m in marks)}


def queued_pages() -> int:
    client = get_runtime().queues.client("loyalty_cards", pages=True)
    return int(client.get_queue_properties().approximate_message_count)


def wait_for(condition: Callable[[dict[str, Any]], bool], what: str, worker: subprocess.Popen[bytes],
             timeout_s: float = 180.0) -> dict[str, Any]:
    """Poll the cards scan until ``condition`` holds; fail if the worker exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        scan = card_scan()
        if condition(scan):
            return scan
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode}) before {what}: {scan}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout_s} s: {card_scan()}")


def kill(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait()


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


def poisoned() -> int:
    """Messages the host gave up on (``<queue>-poison``), over every queue of the app."""
    queues = get_runtime().queues
    total = 0
    for template in TEMPLATES:
        for pages in (False, True):
            name = queues.client(template, pages=pages).queue_name + "-poison"
            try:
                total += int(queues.service.get_queue_client(name).get_queue_properties().approximate_message_count)
            except ResourceNotFoundError:
                continue
    return total


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
    env = world["env"]
    figures: dict[str, Any] = {"records": 0, "kills": [], "azurite_restart": {}, "worker_runs": 0}
    try:
        # 1. The first worker scans in place (SYNC_FAN_OUT=false) and dies a few key ranges into the cards.
        began = datetime.now(UTC)
        worker = start_worker(env, log, fan_out=False)
        figures["worker_runs"] += 1
        wait_for(lambda scan: scan["ranges_done"] >= 3, "three card ranges checkpointed in place", worker)
        kill(worker)
        at_kill = card_scan()
        assert at_kill["open_run"] and not at_kill["planning_done"], at_kill  # the kill interrupted the run
        figures["kills"].append({"path": "in place", **at_kill})
        # 2. Commerce keeps changing. A fanned-out worker resumes the run (once the dead run's lease expired): its
        #    timer queues the ranges not done as page tasks, its page workers take them; it dies half-way.
        figures["commerce_changes"] = mutate_commerce(stores)
        worker = start_worker(env, log, since=began)
        figures["worker_runs"] += 1
        wait_for(lambda scan: scan["open_run"] == at_kill["open_run"] and scan["planning_done"],
                 "the resumed run's ranges planned and queued", worker)
        requests.post(f"{commerce.url}/_emulator/faults", json={"rules": [SLOW_CARD_RANGES]}, timeout=10).raise_for_status()
        resumed = wait_for(lambda scan: scan["open_run"] == at_kill["open_run"] and scan["planning_done"]
                           and scan["ranges_done"] >= at_kill["ranges_done"] + 2,
                           "two more card ranges done by page workers", worker)
        assert resumed["ranges_done"] < resumed["ranges_planned"], resumed  # too late to interrupt: a slower poll?
        kill(worker)
        at_kill = card_scan()
        pages_waiting = queued_pages()
        assert at_kill["open_run"] and at_kill["ranges_done"] < at_kill["ranges_planned"] and pages_waiting, at_kill
        figures["kills"].append({"path": "fanned out", **at_kill, "page_tasks_queued": pages_waiting})
        # 3. Another fanned-out worker takes over; Azurite restarts under it once it has made progress.
        worker = start_worker(env, log, since=began)
        figures["worker_runs"] += 1
        done_before = at_kill["ranges_done"]
        at_restart = wait_for(lambda scan: scan["ranges_done"] > done_before or not scan["open_run"],
                              "progress after the second kill", worker)
        world["azurite"] = world["azurite"].restart()
        figures["azurite_restart"] = at_restart
        worker.wait(timeout=600)
        # 4. Start it again until the runs complete, as the timer would: the interrupted run resumed, no fresh scan.
        for _ in range(6):
            if worker.returncode == 0:
                break
            worker = start_worker(env, log, since=began)
            figures["worker_runs"] += 1
            worker.wait(timeout=600)
        assert worker.returncode == 0, "no worker completed its runs"
        # 5. Every business event delivered and applied, parked records retried (the retry timer): no new scan.
        assert commerce.publisher.flush(30)
        settle = start_worker(env, log, settle=True)
        figures["worker_runs"] += 1
        assert settle.wait(timeout=600) == 0
    finally:
        host.stop()
    missing = duplicated = stale = extra = 0
    problems: list[str] = []
    for template in TEMPLATES:
        duplicates = stores.duplicates(template)  # from the emulator's raw rows: nothing merged by key
        duplicated += sum(n - 1 for n in duplicates.values())
        problems += [f"{template} {key}: {n} Dataverse rows" for key, n in list(duplicates.items())[:5]]
        expected = stores.expected(template)
        figures["records"] += len(expected)
        if duplicates:
            continue  # actual() keys rows by their natural key: it cannot hold two rows for one
        actual = stores.actual(template)
        missing += len(expected.keys() - actual.keys())
        extra += len(actual.keys() - expected.keys())
        stale += sum(1 for k in expected.keys() & actual.keys() if expected[k] != actual[k])
        problems += stores.differences(template)[:5]
    parked = [f"{e['PartitionKey']} {e['RowKey']}: {e.get('error_class')} {e.get('error')}"
              for e in get_runtime().state.parked.all()]
    problems += parked[:5]
    figures.update({"missing": missing, "duplicated": duplicated, "stale": stale, "not_deleted": extra,
                    "parked": len(parked), "poisoned": poisoned()})
    # 6. The next timer run finds nothing to write or delete: the interrupted runs and the callbacks left nothing
    #    behind that a fresh scan would have to repair (or it would hide it).
    final = start_worker(env, log)
    figures["worker_runs"] += 1
    final_exit = final.wait(timeout=600)
    figures["next_scan"] = last_runs_changes()
    logs = log.read_text(errors="replace")
    figures["faults_injected"] = {"dataverse": fired(dataverse.url), "commerce": fired(commerce.url)}
    figures["retries"] = logs.count("http retry")
    figures["queue_function_failures"] = sum(int(n) for n in re.findall(r"worker summary: handled=\d+ failed=(\d+)", logs))
    print("chaos figures:", json.dumps(figures))
    assert figures["records"] >= CARDS
    assert sum(figures["faults_injected"]["dataverse"].values()) > 0, figures
    assert (missing, duplicated, stale, extra) == (0, 0, 0, 0), (figures, problems)
    assert (figures["parked"], figures["poisoned"]) == (0, 0), (figures, problems)
    assert final_exit == 0 and (figures["next_scan"]["written"], figures["next_scan"]["deleted"]) == (0, 0), figures
