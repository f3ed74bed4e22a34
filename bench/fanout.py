"""The fanned-out outbound path in N separate worker processes against one emulated Dataverse identity.

    (used by ``python -m bench --workers 1,4``; a worker is ``python -m bench.fanout worker``)

As the Functions host runs it on N instances: this process invokes the loyalty-cards timer's work
(``Scan.start``: plan the key ranges, one message each on the pages queue), and N worker processes take
messages from the pages queue and run them (``pages_<template>`` -> ``shared/sync/worker.py``), each with its
own runtime, HTTP sessions and limiter, all with the same bearer token (one application user). A worker runs
as many messages at once as host.json lets an instance (``batchSize`` + ``newBatchThreshold``: 3).
Each N starts from an empty Dataverse table and fresh state tables, so every record is written. The rate is
the run's own (planning to the last range's finalisation, from the watermark); the ceiling is the
emulator's, from the execution time it counted.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "loyalty_cards"


@dataclass
class FanOutResult:
    workers: int
    written: int
    seconds: float
    requests: int
    throttled: int
    execution_s: float
    records_counted: int

    def figures(self, ceiling: float) -> dict[str, float]:
        rate = self.written / self.seconds if self.seconds else 0.0
        n = self.workers
        return {f"records_per_s_workers_{n}": round(rate, 1),
                f"ceiling_fraction_workers_{n}": round(rate / ceiling, 3) if ceiling else 0.0,
                f"throttled_fraction_workers_{n}": round(self.throttled / max(self.requests, 1), 4)}


def run_fanned_out(workers: int, base_settings: dict[str, str], dv_url: str, protection: dict[str, Any],
                   *, timeout_s: float = 1800.0) -> FanOutResult:
    """One fanned-out run of the loyalty cards with ``workers`` processes; returns what the emulator counted."""
    from devtools.demo import environment
    from shared.runtime import build_runtime
    from shared.settings import Settings

    prefix = f"benchw{workers}{uuid.uuid4().hex[:6]}"
    settings = {**base_settings, "SYNC_TABLE_PREFIX": prefix, "SYNC_QUEUE_PREFIX": prefix, "SYNC_FAN_OUT": "true"}
    requests.post(f"{dv_url}/_emulator/reset", timeout=30).raise_for_status()
    requests.post(f"{dv_url}/_emulator/service-protection", json=protection, timeout=10).raise_for_status()
    env = {**os.environ, **settings}
    procs = [subprocess.Popen([sys.executable, "-m", "bench.fanout", "worker"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a bench worker did not start")
        with environment(settings):
            runtime = build_runtime(Settings())  # type: ignore[call-arg]
            requests.post(f"{dv_url}/_emulator/stats/reset", timeout=10)
            requests.post(f"{dv_url}/_emulator/service-protection/reset", timeout=10)
            began = datetime.now().astimezone()
            summary = runtime.scan(TEMPLATE).start(None)
            print(f"  {workers} worker(s): {summary.detail}", flush=True)
            deadline = time.monotonic() + timeout_s
            while True:
                mark = runtime.state.watermarks.get(TEMPLATE, "fo_to_dataverse", "all")
                if not mark.open_run and mark.last_run_finished and \
                        datetime.fromisoformat(mark.last_run_finished) >= began:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the fanned-out run with {workers} workers did not finish")
                time.sleep(0.2)
            started = datetime.fromisoformat(mark.last_run_started)
            finished = datetime.fromisoformat(mark.last_run_finished)
            written = int(mark.counts.get("written", 0))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker still inside a range (a run that failed): stop it
                proc.kill()
                proc.wait(timeout=10)
    stats = requests.get(f"{dv_url}/_emulator/stats", timeout=10).json()
    snap = requests.get(f"{dv_url}/_emulator/service-protection", timeout=10).json()
    return FanOutResult(workers, written, (finished - started).total_seconds(), int(stats["total"]),
                        int(snap.get("throttled", 0)), float(snap.get("execution_s", 0.0)),
                        int(snap.get("records_written", 0)))


def worker() -> int:
    """One Functions instance's page worker: the pages queue, one message at a time, until terminated."""
    import signal

    from devtools.functions_host import QueuePump
    from shared.runtime import get_runtime

    if os.environ.get("BENCH_WORKER_LOG"):  # a diagnostic log per worker: its requests, retries and budget shares
        import logging

        handler = logging.FileHandler(f"{os.environ['BENCH_WORKER_LOG']}.{os.getpid()}.log")
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%H:%M:%S"))
        http_logger = logging.getLogger("loyaltysync.http")
        http_logger.addHandler(handler)
        http_logger.setLevel(logging.DEBUG)
    runtime = get_runtime()
    runtime.ensure_storage()
    app = importlib.import_module("function_app").app
    pump = QueuePump(app, os.environ["AzureWebJobsStorage"], visibility_timeout_s=600)  # noqa: SIM112
    pages = f"pages_{TEMPLATE}"
    pump.queues = {name: queue for name, queue in pump.queues.items() if name == pages}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def serve() -> None:
        while not stop.is_set():
            if not pump.run_once(max_messages=1):
                stop.wait(0.1)

    threads = [threading.Thread(target=serve, daemon=True) for _ in range(messages_per_instance())]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(timeout=60)
    return 0


def messages_per_instance() -> int:
    """What host.json lets one instance run at once: batchSize + newBatchThreshold."""
    queues = json.loads((REPO / "host.json").read_text(encoding="utf-8"))["extensions"]["queues"]
    return int(queues["batchSize"]) + int(queues["newBatchThreshold"])


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if sys.argv[1:] == ["worker"]:
        sys.exit(worker())
    sys.exit(2)
