"""Inbound baseline benchmark: the first Dataverse -> Commerce run against the emulators and Azurite, beside the
row-by-row comparison it replaced, in one process.

    .venv/bin/python -m bench.inbound [--records 20000] [--naive-sample 1000] [--state-buckets 16]

Its own emulators and Azurite (each a process, as in ``python -m bench``), so this process's peak RSS is the
baseline's own. The data set is a first two-way run's: Commerce holds ``--records`` cards, Dataverse the same cards
(written in bulk, no sync state: both sides loaded before the app ran, the row-by-row comparison's costly case), 1 %
of them different in Dataverse (with no sync history a conflict: Commerce wins and its row is written to Dataverse)
and 0.1 % more that only Dataverse has (POSTed to Commerce). Then, in this
process:

* **naive**: the change feed's initial read, row by row through ``InboundSync.apply`` (a state read, a Commerce
  GET by key, then the write or the state record), for the first ``--naive-sample`` rows, on its own tables;
* **baseline**: ``InboundSync.run()`` (token, key ranges, in place) over every row, on fresh tables;
* **re-baseline**: the token expired (``/_emulator/change-tracking/expire``), the next run compares every row again,
  now with every state recorded (what a re-baseline after an expired token costs).

Prints progress, then one JSON line: ``inbound_baseline_rows_per_s``, ``inbound_naive_rows_per_s``,
``inbound_vs_naive``, ``inbound_rebaseline_rows_per_s``, ``inbound_records`` and ``inbound_peak_rss_mb``.
``python -m bench`` runs this (``--inbound-records``, ``--inbound-naive-sample``) and adds the figures to its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.azurite import start_azurite  # noqa: E402
from devtools.demo import emulator_settings, environment  # noqa: E402

CARDS = "loyalty_cards"
EDITED_EVERY = 100  # 1 % of the cards edited in Dataverse
DATAVERSE_ONLY_EVERY = 1000  # 0.1 % more cards only Dataverse has
CHUNK = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m bench``'s options for this part."""
    parser.add_argument("--inbound-records", type=int, default=20_000,
                        help="cards of the inbound baseline run (a separate process; 0: none)")
    parser.add_argument("--inbound-naive-sample", type=int, default=1000,
                        help="rows the row-by-row comparison handles beside it")


def figures(args: argparse.Namespace) -> dict[str, Any]:
    """Run the inbound benchmark in its own process (its peak RSS is the baseline's) and return its figures."""
    if not args.inbound_records:
        return {}
    command = [sys.executable, "-m", "bench.inbound", "--records", str(args.inbound_records),
               "--naive-sample", str(args.inbound_naive_sample)]
    print(f"inbound baseline: {args.inbound_records:,} rows ({' '.join(command[1:])})", flush=True)
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(f"  {line}", flush=True)
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def start_process(module: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    from bench.__main__ import start_process as start

    return start(module, *args)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def populate(runtime: Any, records: int) -> int:
    """Dataverse gets every Commerce card (1 % edited) plus the cards only it has, in bulk, a page at a time;
    returns the number of Dataverse rows."""
    from shared.mapping.plan import DataverseRecord

    engine = runtime.outbound(CARDS)
    plan = engine.plan
    rows_written = 0
    n = 0
    chunk: list[DataverseRecord] = []

    def flush() -> None:
        errors = engine.writer.upsert_many(chunk)
        failed = [e for e in errors if e is not None]
        if failed:
            raise RuntimeError(f"populating Dataverse failed: {failed[0]}")
        chunk.clear()

    for page in runtime.commerce.iter_pages(plan.template.commerce.entity_set, select=list(plan.select_properties)):
        for row in page:
            n += 1
            if n % EDITED_EVERY == 0:
                row = {**row, "PartyNumber": f"AGENT-{n}"}
            chunk.append(plan.to_dataverse(row))
            if n % DATAVERSE_ONLY_EVERY == 0:
                chunk.append(plan.to_dataverse({**row, "CardNumber": f"9{n:010d}", "ReplacementCardNumber": ""}))
            if len(chunk) >= CHUNK:
                rows_written += len(chunk)
                flush()
    if chunk:
        rows_written += len(chunk)
        flush()
    return rows_written


def naive(runtime: Any, sample: int) -> tuple[int, float]:
    """The row-by-row comparison (the change feed's initial read through ``apply``) for the first ``sample`` rows."""
    inbound = runtime.inbound(CARDS)
    started = time.perf_counter()
    seen = 0
    for entry in inbound.dataverse.changes(inbound.dv_entity_set, select=inbound.images.select):
        inbound.apply(entry, source="change_feed")
        seen += 1
        if seen >= sample:
            break
    return seen, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inbound baseline benchmark against the emulators and Azurite.")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--naive-sample", type=int, default=1000)
    parser.add_argument("--state-buckets", type=int, default=16, help="SYNC_STATE_BUCKETS (Azurite slows with partition size)")
    args = parser.parse_args(argv)
    # Conflicts (the edited cards have no sync history) and parked records are logged one by one: not here.
    logging.getLogger("loyaltysync").setLevel(logging.ERROR)

    azurite = start_azurite(separate_services=True, in_memory=True)
    fo_process, fo_url = start_process("emulators.commerce", "--cards", str(args.records), "--reward-points", "0",
                                       "--levels-per-company", "0", "--page-size", "10000")
    dv_process, dv_url = start_process("emulators.dataverse")
    try:
        base = {"SYNC_TWO_WAY": "true", "SYNC_STATE_BUCKETS": str(args.state_buckets), "SYNC_BULK_SIZE": str(CHUNK)}
        started = time.perf_counter()
        with environment({**emulator_settings(dv_url, fo_url, azurite.connection_string, "benchpop"), **base}):
            from shared.runtime import get_runtime

            dataverse_rows = populate(get_runtime(), args.records)
        print(f"Dataverse: {dataverse_rows:,} rows written in {time.perf_counter() - started:.1f} s "
              f"(1 in {EDITED_EVERY} edited, 1 in {DATAVERSE_ONLY_EVERY} only in Dataverse); peak RSS {rss_mb():.0f} MB",
              flush=True)

        with environment({**emulator_settings(dv_url, fo_url, azurite.connection_string, "benchnaive"), **base}):
            seen, seconds = naive(get_runtime(), args.naive_sample)
        naive_rate = seen / seconds
        print(f"naive (row by row): {seen:,} rows in {seconds:.1f} s = {naive_rate:,.0f} rows/s", flush=True)

        with environment({**emulator_settings(dv_url, fo_url, azurite.connection_string, "benchin"), **base}):
            runtime = get_runtime()
            last = [0]
            begun = time.perf_counter()

            def progress(done: Any, total: int | None) -> None:
                if done.seen - last[0] >= 100_000 or (total is not None and done.seen >= total):
                    last[0] = done.seen
                    print(f"  {done.seen:,}/{total or '?'} compared, "
                          f"{done.seen / (time.perf_counter() - begun):,.0f} rows/s, peak RSS {rss_mb():.0f} MB",
                          flush=True)

            summary = runtime.inbound(CARDS).run(progress=progress)
            baseline_s = time.perf_counter() - begun
            rate = summary.seen / baseline_s
            print(f"baseline: {summary.seen:,} rows in {baseline_s:.1f} s = {rate:,.0f} rows/s "
                  f"({summary.written:,} written, {summary.unchanged:,} unchanged, {summary.failed} parked)",
                  flush=True)
            # The token expires (it does after days): the next run re-baselines, now with every state recorded.
            requests.post(f"{dv_url}/_emulator/change-tracking/expire", timeout=30).raise_for_status()
            last[0], begun = 0, time.perf_counter()
            again = runtime.inbound(CARDS).run(progress=progress)
            again_rate = again.seen / (time.perf_counter() - begun)
        print(f"re-baseline ({again.mode}): {again.seen:,} rows at {again_rate:,.0f} rows/s, "
              f"{again.written} written", flush=True)
        result = {"inbound_records": summary.seen, "inbound_baseline_rows_per_s": round(rate, 1),
                  "inbound_naive_rows_per_s": round(naive_rate, 1), "inbound_vs_naive": round(rate / naive_rate, 1),
                  "inbound_rebaseline_rows_per_s": round(again_rate, 1), "inbound_peak_rss_mb": round(rss_mb(), 1)}
        print(json.dumps(result))
        return 0
    finally:
        from bench.__main__ import stop_all  # here, not at the top: bench.__main__ imports this module

        stop_all((fo_process, dv_process), azurite, wait_s=30)


if __name__ == "__main__":
    sys.exit(main())
