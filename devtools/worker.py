"""A sync worker process, as a Functions instance would run it: every template's timer, then the queue.

    python -m devtools.worker [--idle-s 2] [--max-wait-s 600]

Reads the app settings from the environment. Used by the chaos suite, which kills it mid-run and
starts it again. Exits 0 when every template ran to completion and the queues stayed empty for
``--idle-s`` seconds; 1 when a run failed (it is safe to start again).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence

from devtools.functions_host import QueuePump
from shared.observability import correlation_scope
from shared.runtime import get_runtime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=2.0)
    parser.add_argument("--max-wait-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = get_runtime()
    deadline = time.monotonic() + args.max_wait_s
    with correlation_scope():
        for template in runtime.catalog:
            pending = runtime.scan(template.name).scopes(runtime.settings.legal_entities)
            while pending:
                summaries = [runtime.scan(template.name).run_scope(scope) for scope in pending]
                pending = [s for s, summary in zip(pending, summaries, strict=True) if summary.status == "skipped"]
                if pending:
                    if time.monotonic() > deadline:
                        return 1
                    time.sleep(1.0)  # a killed run's lease: wait until it expires, then take over
        app = importlib.import_module("function_app").app
        connection = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - the Functions setting name
        pump = QueuePump(app, connection, visibility_timeout_s=5)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < args.idle_s:
            if pump.run_once():
                idle_since = time.monotonic()
            else:
                time.sleep(0.1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        logging.getLogger("devtools.worker").exception("worker failed; start it again")
        sys.exit(1)
