"""Throughput benchmark: the real sync against the emulators and Azurite, beside a naive per-row client.

    .venv/bin/python -m bench [--records 100000] [--bulk-size 1000] [--workers 1,4] [--no-shared-budget]
    .venv/bin/python -m bench --balances [--balance-cards 100000] [--balance-lines 1000000]  (bench/balances.py)

The emulators run as separate processes (so this process's peak RSS is the sync's own), Dataverse with
service protection on and scaled down so its ceiling is known. Prints a table, then as its very last
line one JSON object with the figures. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import balances, inbound  # noqa: E402  (inbound: its own process, figures added here; balances: a mode)
from bench.ceiling import (  # noqa: E402  (every ceiling fraction: a perfect client's time for the same work)
    ceiling_fraction,
    perfect_records_per_s,
    perfect_seconds,
    request_split,
    steady_records_per_s,
    windows_in,
)
from devtools.azurite import free_port, start_azurite  # noqa: E402
from devtools.demo import STATIC_TOKEN, emulator_settings, environment  # noqa: E402

# Dataverse service protection, scaled down (docs/protocol-notes.md §2.12 has 6,000 requests and 1,200 s per 300 s).
# The simulated server time per record (0.5 ms: 0.5 s per 1,000-record
# request) is set well above the emulator's own processing (about 0.15-0.2 ms a record on this machine), so
# that it, and not the emulator's speed under load, sets the execution time and the ceiling is known:
# 3.0 s per 10 s at about 0.5 s a request, about 600 records/s. Real Dataverse bulk writes take
# milliseconds a record (inferred: the docs give no figure), so the proportions are realistic too.
PROTECTION = {"window_s": 10, "max_requests": 60, "max_execution_s": 3.0, "max_concurrent": 8,
              "server_ms_per_request": 2.0, "server_ms_per_record": 0.5, "dop_hint": 8}
HEADERS = {"Authorization": f"Bearer {STATIC_TOKEN}", "Accept": "application/json", "OData-Version": "4.0"}


def start_process(module: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "http://" not in line:
        raise RuntimeError(f"{module} did not start: {line!r}")
    return process, f"http://127.0.0.1:{port}"


def print_figures(figures: dict[str, Any]) -> None:
    """The figures one a line, then the JSON line a bench's output ends with."""
    print()
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key.ljust(width)}  {value}")
    print(json.dumps(figures))


def stop_all(processes: Sequence[subprocess.Popen[str]], azurite: Any, *, wait_s: float = 10) -> None:
    """Stop the emulator processes ``start_process`` started, then Azurite."""
    for process in processes:
        process.terminate()
        process.wait(timeout=wait_s)
    azurite.stop()


def card_rows(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    types = ["AsCardTender", "AsContactTender", "NoTender", "Blocked"]
    for i in range(n):
        yield {"CardNumber": f"BENCH-{i:08d}", "CardTenderType": types[rng.randrange(4)],
               "PartyNumber": f"{rng.randrange(10**6):06d}", "ReplacementCardNumber": "",
               "OmOperatingUnitNumber": "052", "LoyaltyEnrollmentDate": "2024-03-01T00:00:00Z",
               "LoyaltyEnrollmentDateLocal": "2024-03-01T00:00:00Z", "LoyaltyEnrollmentTime": 3600,
               "LoyaltyEnrollmentTimeLocal": 3600}


def mapping_rates(n: int = 200_000) -> tuple[float, float]:
    """Records/s on one core: the template's plan + JSON serialisation as the HTTP core does it (orjson),
    and a plain dict-to-JSON loop with the standard library (the issue's baseline)."""
    from shared.mapping.catalog import load_catalog

    plan = load_catalog().plan("loyalty_cards")
    rows = list(card_rows(min(n, 50_000)))
    started = time.perf_counter()
    done = 0
    while done < n:
        for row in rows:
            orjson.dumps(plan.to_dataverse(row).columns)
        done += len(rows)
    mapped = done / (time.perf_counter() - started)
    started = time.perf_counter()
    done = 0
    while done < n:
        for row in rows:
            json.dumps(row)
        done += len(rows)
    plain = done / (time.perf_counter() - started)
    return mapped, plain


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput benchmark against the emulators and Azurite.")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--bulk-size", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--callbacks-per-s", type=int, default=200)
    parser.add_argument("--callback-seconds", type=float, default=5.0)
    parser.add_argument("--state-buckets", type=int, default=16, help="SYNC_STATE_BUCKETS (Azurite slows with partition size)")
    parser.add_argument("--workers", default="1,4",
                        help="fanned-out runs with this many worker processes each, comma-separated ('' for none)")
    parser.add_argument("--fo-seconds", type=float, default=25.0,
                        help="seconds of Commerce writes with F&O throttling on (bench/commerce.py; 0: none)")
    parser.add_argument("--no-shared-budget", action="store_true",
                        help="SYNC_SHARED_BUDGET=false: each worker's limiter believes it owns the whole budget")
    inbound.add_arguments(parser)
    balances.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.balances:
        return balances.main(args)
    args.worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]

    # One process per storage service, as in Azure (the state table must not stall the callback queue), in
    # memory: Azurite would otherwise write its whole database to disk every few seconds.
    azurite = start_azurite(separate_services=True, in_memory=True)
    fo_process, fo_url = start_process("emulators.commerce", "--cards", str(args.records), "--reward-points", "0",
                                       "--levels-per-company", "0", "--page-size", "10000")
    dv_process, dv_url = start_process("emulators.dataverse")
    try:
        requests.post(f"{dv_url}/_emulator/service-protection", json=PROTECTION, timeout=10).raise_for_status()
        settings = {**emulator_settings(dv_url, fo_url, azurite.connection_string, "bench"),
                    "SYNC_BULK_SIZE": str(args.bulk_size), "SYNC_HTTP_RETRY_BUDGET_S": "600",
                    "SYNC_HTTP_MAX_ATTEMPTS": "20", "SYNC_TWO_WAY": "false",
                    "SYNC_DATAVERSE_WINDOW_S": str(PROTECTION["window_s"]), "SYNC_STATE_BUCKETS": str(args.state_buckets),
                    "SYNC_SHARED_BUDGET": "false" if args.no_shared_budget else "true"}
        args.settings = settings
        with environment(settings):
            return run(args, dv_url, fo_url)
    finally:
        stop_all((fo_process, dv_process), azurite)


def run(args: argparse.Namespace, dv_url: str, fo_url: str) -> int:
    from shared.runtime import get_runtime

    print(f"Benchmark: {args.records:,} loyalty cards, chunks of {args.bulk_size}, Dataverse budget {PROTECTION}")
    mapped_rate, plain_rate = mapping_rates()
    print(f"mapping + serialisation: {mapped_rate:,.0f} records/s/core (plain dict-to-JSON: {plain_rate:,.0f})")

    runtime = get_runtime()
    requests.post(f"{dv_url}/_emulator/stats/reset", timeout=10)
    started = time.perf_counter()
    last = [0]

    def progress(done: Any, total: int | None) -> None:
        if done.seen - last[0] >= 50_000 or (total is not None and done.seen >= total):
            last[0] = done.seen
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  {done.seen:,}/{total or '?'} seen, {done.written:,} written, "
                  f"{done.seen / (time.perf_counter() - started):,.0f} records/s, peak RSS {rss:.0f} MB", flush=True)

    [summary] = runtime.scan("loyalty_cards").run(progress=progress)
    sync_s = time.perf_counter() - started
    stats = requests.get(f"{dv_url}/_emulator/stats", timeout=10).json()
    protection = requests.get(f"{dv_url}/_emulator/service-protection", timeout=10).json()
    dv_requests = int(stats["total"])
    throttled = int(protection.get("throttled", 0))
    rate = summary.written / sync_s
    execution_s, counted = float(protection.get("execution_s", 0.0)), int(protection.get("records_written", 0))
    ceiling = perfect_records_per_s(summary.written, PROTECTION, args.bulk_size, execution_s, counted)
    steady = steady_records_per_s(PROTECTION, args.bulk_size, execution_s, counted)
    split = request_split(stats.get("by_method", {}), summary.written)
    limiter = runtime.dataverse.limiter
    peak = limiter.peak if limiter else 1
    if limiter and protection.get("execution_s"):
        print(f"request durations: {limiter.measured_s:.1f} s measured by the client, "
              f"{float(protection['execution_s']):.1f} s counted by the emulator")
    print(f"sync: {summary.written:,} written in {sync_s:.1f} s = {rate:,.0f} records/s; {dv_requests} Dataverse "
          f"requests, {throttled} throttled; peak concurrency {peak}")
    fanned_out = fan_out_figures(args, dv_url)

    # Service protection off from here: the remaining figures are about this app's own latency.
    requests.delete(f"{dv_url}/_emulator/service-protection", timeout=10)
    # The naive client: one PATCH per record, as a per-row flow does (unthrottled: an upper bound for it).
    naive_started = time.perf_counter()
    for i in range(args.naive_sample):
        runtime.dataverse.upsert("msdyn_loyaltycards", {"msdyn_cardnumber": f"NAIVE-{i:06d}"},
                                 {"msdyn_partynumber": "naive"})
    naive_rate = args.naive_sample / (time.perf_counter() - naive_started)
    print(f"naive client: {naive_rate:,.0f} records/s unthrottled, 1,000 requests per 1,000 records")

    from bench.commerce import fo_writes

    fo_figures = fo_writes(runtime, fo_url, seconds=args.fo_seconds) if args.fo_seconds > 0 else {}
    puts: list[float] = []
    acks, e2e = callbacks(args, runtime, dv_url, fo_url, puts)
    inbound_figures = inbound.figures(args)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "records": summary.written,
        "seconds": round(sync_s, 2),
        "records_per_s": round(rate, 1),
        "requests_per_1000": split["requests_per_1000"],  # the per-record write path
        "fixed_requests": split["fixed_requests"],  # once per run: the preflight's reads, lookups resolved, ...
        "all_requests_per_1000": split["all_requests_per_1000"],
        "naive_requests_per_1000": 1000.0,
        "naive_records_per_s": round(naive_rate, 1),
        "ceiling_records_per_s": round(ceiling, 1),  # a perfect client's rate for the same records
        "perfect_seconds": round(perfect_seconds(summary.written, PROTECTION, args.bulk_size, execution_s, counted), 1),
        "steady_ceiling_records_per_s": round(steady, 1),  # the budget's rate over a long run
        # Server time counted over the execution-time budget of the windows the run began: above 1.0 the run lived
        # on the limit's after-the-fact slack (requests in flight when the window filled).
        "execution_budget_fraction": round(execution_s / (float(PROTECTION["max_execution_s"])
                                                          * windows_in(sync_s, float(PROTECTION["window_s"]))), 3),
        "ceiling_fraction": round(ceiling_fraction(summary.written, PROTECTION, args.bulk_size, execution_s, counted,
                                                   sync_s), 3),
        "throttled_fraction": round(throttled / max(dv_requests, 1), 4),
        "map_records_per_s_per_core": round(mapped_rate),
        "plain_json_records_per_s": round(plain_rate),
        "map_vs_plain": round(mapped_rate / plain_rate, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "ack_p50_ms": round(percentile(acks, 0.5), 2),
        "ack_p99_ms": round(percentile(acks, 0.99), 2),
        "put_p50_ms": round(percentile(puts, 0.5), 2),
        "put_p99_ms": round(percentile(puts, 0.99), 2),
        "ack_p99_vs_put_p99": round(percentile(acks, 0.99) / percentile(puts, 0.99), 2) if puts else None,
        "e2e_p50_ms": round(statistics.median(e2e), 1) if e2e else None,
        **fanned_out,
        **fo_figures,
        **inbound_figures,
    }
    print_figures(figures)
    return 0


def fan_out_figures(args: argparse.Namespace, dv_url: str) -> dict[str, Any]:
    """The fanned-out path in 1, 4 ... worker processes against the same emulated identity (bench/fanout.py)."""
    from bench.fanout import run_fanned_out

    figures: dict[str, Any] = {}
    for workers in args.worker_counts:
        result = run_fanned_out(workers, args.settings, dv_url, PROTECTION)
        ceiling = perfect_records_per_s(result.written, PROTECTION, args.bulk_size, result.execution_s,
                                        result.records_counted)
        figures.update(result.figures(ceiling))
        print(f"fanned out, {workers} worker process(es): {result.written:,} written in {result.seconds:.1f} s, "
              f"{result.requests} Dataverse requests, {result.throttled} throttled, ceiling {ceiling:,.0f} records/s",
              flush=True)
    if args.worker_counts:
        figures["shared_budget"] = not args.no_shared_budget
    return figures


def callbacks(args: argparse.Namespace, runtime: Any, dv_url: str, fo_url: str,
              puts: list[float]) -> tuple[list[float], list[float]]:
    """Callback acknowledgement at a steady rate (and bare queue puts beside it, into ``puts``), then change ->
    callback -> visible in Dataverse."""
    from devtools.functions_host import LocalFunctionsHost, QueuePump

    app = importlib.import_module("function_app").app
    host = LocalFunctionsHost(app).start()
    session = requests.Session()
    acks: list[float] = []
    lock = threading.Lock()

    def event(card: str) -> dict[str, Any]:
        return {"BusinessEventId": "RetailLoyaltyCardChangedBusinessEvent", "BusinessEventLegalEntity": "USMF",
                "EventId": str(uuid.uuid4()).upper(), "ControlNumber": 1, "EventTime": f"/Date({int(time.time() * 1000)})/",
                "MajorVersion": 0, "MinorVersion": 0, "CardNumber": card}

    def post(card: str) -> None:
        t0 = time.perf_counter()
        session.post(f"{host.url}/api/callbacks/loyalty_cards", json=event(card), timeout=10)
        with lock:
            acks.append((time.perf_counter() - t0) * 1000)

    # Warm, as the bare puts' client is: the first callback of a process builds its runtime (storage clients,
    # tables and queues); a cold start is not what the acknowledgement figure is about.
    session.post(f"{host.url}/api/callbacks/loyalty_cards", json=event("BENCH-WARM-UP"), timeout=30).raise_for_status()
    # The load comes from another process, as callers reach a real Functions host from outside it.
    # The same process also puts a bare message of the same size on a scratch queue of the same Azurite, at the
    # same rate and moments: the acknowledgement's cost beside the one durable queue write it waits for.
    load = subprocess.run([sys.executable, "-m", "bench.load", f"{host.url}/api/callbacks/loyalty_cards",
                           "--rate", str(args.callbacks_per_s), "--seconds", str(args.callback_seconds),
                           "--put-connection", os.environ["AzureWebJobsStorage"]],  # noqa: SIM112
                          cwd=REPO, capture_output=True, text=True, check=True)
    measured = json.loads(load.stdout)
    acks.extend(measured["acks"])
    puts[:] = measured["puts"]
    print(f"callbacks: {len(acks)} acknowledged at {args.callbacks_per_s}/s, p50 {percentile(acks, 0.5):.1f} ms, "
          f"p99 {percentile(acks, 0.99):.1f} ms; bare queue puts beside them: p50 {percentile(puts, 0.5):.1f} ms, "
          f"p99 {percentile(puts, 0.99):.1f} ms; acknowledgements over 900 ms: {sum(1 for a in acks if a > 900)}")

    pump = QueuePump(app, os.environ["AzureWebJobsStorage"], visibility_timeout_s=10)  # noqa: SIM112
    pump.drain(120)  # the backlog the ack test queued
    pump.start(poll_s=0.02)
    e2e: list[float] = []
    try:
        cards = [c["CardNumber"] for c in session.get(f"{fo_url}/data/RetailLoyaltyCards?$top=20&$select=CardNumber",
                                                      headers=HEADERS, timeout=30).json()["value"]]
        for n, card in enumerate(cards):
            value = f"E2E-{n:03d}"
            session.patch(f"{fo_url}/data/RetailLoyaltyCards('{card}')", json={"PartyNumber": value}, headers=HEADERS,
                          timeout=10).raise_for_status()
            t0 = time.perf_counter()
            post(card)
            url = f"{dv_url}/api/data/v9.2/msdyn_loyaltycards(msdyn_cardnumber='{card}')?$select=msdyn_partynumber"
            while time.perf_counter() - t0 < 30:
                if session.get(url, headers=HEADERS, timeout=10).json().get("msdyn_partynumber") == value:
                    e2e.append((time.perf_counter() - t0) * 1000)
                    break
                time.sleep(0.005)
    finally:
        pump.stop()
        host.stop()
    print(f"callback -> visible in Dataverse: p50 {statistics.median(e2e) if e2e else float('nan'):.0f} ms "
          f"over {len(e2e)} changes")
    return acks, e2e


if __name__ == "__main__":
    sys.exit(main())
