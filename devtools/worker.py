"""A sync worker process, as a Functions instance would run it: every template's timer, then the queues.

    python -m devtools.worker [--idle-s 2] [--max-wait-s 600] [--since ISO-TIME] [--settle]

Reads the app settings from the environment. Used by the chaos suite, which kills it mid-run and starts it
again. ``SYNC_FAN_OUT`` decides the path, as in the app: ``false`` scans each scope in place, then serves the
callback queues; ``true`` (the default) invokes each template's timer (which plans key ranges and queues them, or
resumes a run left open once its lease expired) and serves the pages and callback queues, invoking the timers
again until every scope has a run completed (parked records or held deletes included) since this process
started, or since ``--since``: a worker started after a crash then finishes the run it resumes instead of
starting another, whose full scan would repair what the crash broke and hide it. Exits 0 when every template ran to
completion and the queues stayed empty for ``--idle-s`` seconds; 1 when a run failed or ``--max-wait-s``
passed (it is safe to start again). ``--settle`` runs no sync timer: it serves the queues until idle, then
invokes the parked-record retry timer (as the host does every five minutes) and serves them again. Its last
line says how many queue messages it handled and how many invocations raised (the host retries those).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import azure.functions as func

from devtools.functions_host import QueuePump, invoke_timer
from shared.observability import correlation_scope
from shared.runtime import Runtime, get_runtime
from shared.sync.runs import RunStatus

logger = logging.getLogger("devtools.worker")
OUTBOUND = "fo_to_dataverse"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=2.0)
    parser.add_argument("--max-wait-s", type=float, default=600.0)
    parser.add_argument("--since", type=datetime.fromisoformat, default=None,
                        help="a run completed since then counts as done (default: this process's start)")
    parser.add_argument("--settle", action="store_true", help="serve the queues and retry parked records only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = get_runtime()
    deadline = time.monotonic() + args.max_wait_s
    app: func.FunctionApp = importlib.import_module("function_app").app
    pump = QueuePump(app, os.environ["AzureWebJobsStorage"], visibility_timeout_s=5)  # noqa: SIM112 - the setting name
    try:
        with correlation_scope():
            if args.settle:
                serve_until_idle(pump, args.idle_s, deadline)
                invoke_timer(app, "timer_retry_parked")
                invoke_timer(app, "timer_refresh_pending")  # a pending template refresh that is due starts
                serve_until_idle(pump, args.idle_s, deadline)
                return 0
            if runtime.settings.fan_out:
                return fanned_out(runtime, app, pump, deadline, args.idle_s, args.since or datetime.now(UTC))
            if not in_place(runtime, deadline):
                return 1
            serve_until_idle(pump, args.idle_s, deadline)
            return 0
    finally:
        print(f"worker summary: handled={pump.processed} failed={len(pump.failures)}", flush=True)


def in_place(runtime: Runtime, deadline: float) -> bool:
    """Scan every scope here; False when the deadline passed while a scope stayed leased elsewhere."""
    for template in runtime.catalog:
        scan = runtime.scan(template.name)
        pending = scan.scopes(runtime.settings.legal_entities)
        while pending:
            summaries = [scan.run_scope(scope) for scope in pending]
            pending = [s for s, summary in zip(pending, summaries, strict=True) if summary.status == "skipped"]
            if pending:
                if time.monotonic() > deadline:
                    return False
                time.sleep(1.0)  # a killed run's lease: wait until it expires, then take over
    return True


def fanned_out(runtime: Runtime, app: func.FunctionApp, pump: QueuePump, deadline: float, idle_s: float,
               began: datetime) -> int:
    """Invoke the timers of templates whose scopes have no run completed since ``began`` and serve the queues,
    until none is left."""
    while True:
        pending = [t.name for t in runtime.catalog if not completed_since(runtime, t.name, began)]
        if not pending:
            return 0
        if time.monotonic() > deadline:
            return 1
        for template in pending:  # starts a run, resumes one whose lease expired, or is skipped
            invoke_timer(app, f"timer_{template}")
        serve_until_idle(pump, idle_s, deadline)


def completed_since(runtime: Runtime, template: str, began: datetime) -> bool:
    for scope in runtime.scan(template).scopes(runtime.settings.legal_entities):
        mark = runtime.state.watermarks.get(template, OUTBOUND, scope or "all")
        if mark.open_run or mark.last_status in ("", RunStatus.FAILED) or not mark.last_run_finished:
            return False
        if datetime.fromisoformat(mark.last_run_finished) < began:
            return False
    return True


def serve_until_idle(pump: QueuePump, idle_s: float, deadline: float) -> None:
    """Deliver queue messages until none came for ``idle_s`` seconds (failures stay in ``pump.failures``)."""
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle_s and time.monotonic() < deadline:
        if pump.run_once():
            idle_since = time.monotonic()
        else:
            time.sleep(0.1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        logging.getLogger("devtools.worker").exception("worker failed; start it again")
        sys.exit(1)
