"""Points balances benchmark: the aggregate template loyalty_card_balances against the emulators and Azurite.

    .venv/bin/python -m bench --balances [--balance-cards 100000] [--balance-lines 1000000] [--naive-cards 300]

1. Provisions the balance table and syncs the cards and reward points (the lookups' targets; not measured).
2. **First build**: a full scan of the transaction lines, folded while streaming, written in bulk. Its rate in source
   lines per second, and as a multiple of a naive per-card loop in the same process (one ``CardNumber eq`` read of
   the card's lines, the fold, one upsert per balance), run on ``--naive-cards`` random cards and extrapolated to
   every card (the loop would take hours on all of them: the extrapolation assumes its cost per card is constant).
3. **Incremental pass** after ``--new-lines`` new lines (earns, some redemptions) on ``--touched-cards`` cards: F&O
   requests per changed card and Dataverse requests per 1,000 changed balances, counted at the emulators.

The emulators run as separate processes, so this process's peak RSS is the sync's own. Dataverse runs without
service protection (the figures are about this app's own cost). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from datetime import UTC, datetime
from typing import Any

import requests

TEMPLATE = "loyalty_card_balances"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--balances", action="store_true", help="run the points-balances benchmark (bench/balances.py)")
    parser.add_argument("--balance-cards", type=int, default=100_000)
    parser.add_argument("--balance-lines", type=int, default=1_000_000)
    parser.add_argument("--naive-cards", type=int, default=300, help="cards the naive per-card loop runs on")
    parser.add_argument("--new-lines", type=int, default=1000)
    parser.add_argument("--touched-cards", type=int, default=300)


def main(args: argparse.Namespace) -> int:
    from bench.__main__ import start_process, stop_all
    from devtools.azurite import start_azurite
    from devtools.demo import emulator_settings, environment

    started = time.perf_counter()
    azurite = start_azurite(separate_services=True, in_memory=True)
    fo_process, fo_url = start_process("emulators.commerce", "--cards", str(args.balance_cards), "--reward-points", "5",
                                       "--levels-per-company", "0", "--page-size", "10000",
                                       "--lines", str(args.balance_lines))
    dv_process, dv_url = start_process("emulators.dataverse")
    print(f"emulators up in {time.perf_counter() - started:.0f} s: {args.balance_cards:,} cards, "
          f"{args.balance_lines:,} transaction lines", flush=True)
    try:
        settings = {**emulator_settings(dv_url, fo_url, azurite.connection_string, "benchbal"),
                    "SYNC_BULK_SIZE": "1000", "SYNC_PAGE_SIZE": "10000", "SYNC_TWO_WAY": "false",
                    "SYNC_FAN_OUT": "false", "SYNC_HTTP_RETRY_BUDGET_S": "600", "SYNC_STATE_BUCKETS": "16"}
        with environment(settings):
            return run(args, dv_url, fo_url)
    finally:
        stop_all((fo_process, dv_process), azurite)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stats(url: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{url}/_emulator/stats", timeout=30).json()
    return body


def _reset(*urls: str) -> None:
    for url in urls:
        requests.post(f"{url}/_emulator/stats/reset", timeout=30).raise_for_status()


def run(args: argparse.Namespace, dv_url: str, fo_url: str) -> int:
    from bench.__main__ import print_figures
    from emulators.commerce.loyalty_activity import CommerceLoyaltyAdmin, LoyaltyActivityRefused
    from shared.balances.fold import as_row
    from shared.dataverse.metadata import MetadataClient
    from shared.provision import Provisioner, app_owned
    from shared.runtime import get_runtime
    from shared.sync.aggregate import AggregateSync

    runtime = get_runtime()
    runtime.ensure_storage()
    provisioner = Provisioner(MetadataClient(runtime.dataverse.core), app_owned(runtime.catalog, [TEMPLATE]),
                              runtime.settings.dataverse_solution, poll_s=0.2)
    outcome = provisioner.apply(provisioner.plan())
    if outcome.problems:
        raise SystemExit(f"provisioning failed: {outcome.problems}")
    t0 = time.perf_counter()
    runtime.scan("loyalty_reward_points").run()
    runtime.scan("loyalty_cards").run()
    print(f"setup: balance table provisioned, cards and reward points synced in {time.perf_counter() - t0:.0f} s",
          flush=True)
    engine = runtime.outbound(TEMPLATE)
    assert isinstance(engine, AggregateSync)

    # -- the first build --------------------------------------------------------------------------------------
    _reset(dv_url, fo_url)
    engine.lines_read = 0
    last = [0.0]
    started = time.perf_counter()

    def progress(done: Any, total: int | None) -> None:
        now = time.perf_counter()
        if now - last[0] >= 15:
            last[0] = now
            print(f"  {engine.lines_read:,} lines folded, {done.seen:,} balances, {done.written:,} written, "
                  f"{engine.lines_read / (now - started):,.0f} lines/s, peak RSS {_rss_mb():.0f} MB", flush=True)

    [summary] = runtime.scan(TEMPLATE).run(progress=progress)
    build_s = time.perf_counter() - started
    lines = engine.lines_read
    build_rate = lines / build_s
    fo_build, dv_build = _stats(fo_url)["total"], _stats(dv_url)["total"]
    print(f"first build: {lines:,} lines -> {summary.written:,} balances in {build_s:.1f} s = {build_rate:,.0f} lines/s "
          f"({summary.written / build_s:,.0f} balances/s); {fo_build} F&O requests, {dv_build} Dataverse requests; "
          f"peak RSS {_rss_mb():.0f} MB", flush=True)

    # -- the naive per-card loop, on a sample ---------------------------------------------------------------
    rng = random.Random(11)
    cards = sorted({k[0] for k in _sample_keys(runtime, engine)})
    sample = rng.sample(cards, min(args.naive_cards, len(cards)))
    plan = engine.plan
    started = time.perf_counter()
    naive_lines = 0
    for card in sample:
        rows = [row for page in runtime.commerce.iter_pages(engine.entity_set, select=list(plan.select_properties),
                                                            where=f"CardNumber eq '{card}'") for row in page]
        naive_lines += len(rows)
        for fold in engine.fold_cards(rows, engine.today()):
            for balance in fold.balances:
                engine.writer.upsert(plan.to_dataverse(as_row(balance)))
    naive_s = time.perf_counter() - started
    per_card = naive_s / max(len(sample), 1)
    naive_rate = lines / (per_card * len(cards))  # extrapolated: the loop's cost per card, times every card
    print(f"naive per-card loop: {len(sample)} cards ({naive_lines:,} lines) in {naive_s:.1f} s = {per_card * 1000:.1f} "
          f"ms a card; extrapolated to {len(cards):,} cards: {naive_rate:,.0f} lines/s", flush=True)

    # -- the incremental pass ---------------------------------------------------------------------------------
    admin = CommerceLoyaltyAdmin(fo_url, timeout=60)
    engine.incremental()  # the first pass after the build: from the build's start, nothing new
    touched = rng.sample(cards, min(args.touched_cards, len(cards)))
    now = datetime.now(UTC).isoformat()
    posted = refused = 0
    for n in range(args.new_lines):
        card = touched[n % len(touched)]
        kind = "redeem" if n % 5 == 4 else "earn"
        try:
            admin.post_activities([{"kind": kind, "card": card, "points": 1 if kind == "redeem" else 10 + n % 40,
                                    "at": now}])
        except LoyaltyActivityRefused:
            refused += 1
            admin.post_activities([{"kind": "earn", "card": card, "points": 5, "at": now}])
        posted += 1
    _reset(dv_url, fo_url)
    started = time.perf_counter()
    incremental = engine.incremental()
    incremental_s = time.perf_counter() - started
    fo_stats, dv_stats = _stats(fo_url), _stats(dv_url)
    fo_requests, dv_requests = int(fo_stats["total"]), int(dv_stats["total"])
    dv_writes = sum(n for method, n in dv_stats["by_method"].items() if method != "GET")
    changed_cards = len(engine.changed_cards)
    changed = incremental.written
    print(f"incremental pass: {posted} new lines ({refused} redemptions refused, earned instead) on {len(touched)} "
          f"cards -> {changed} balances of {changed_cards} cards written in {incremental_s:.1f} s; {fo_requests} F&O "
          f"requests, {dv_requests} Dataverse requests ({dv_writes} writes; the rest read the balance table's change "
          f"tracking) ({incremental.detail})", flush=True)

    figures = {
        "balances_lines": lines,
        "balances_cards": len(cards),
        "balances_written": summary.written,
        "balances_build_s": round(build_s, 1),
        "balances_build_rows_per_s": round(build_rate, 1),
        "balances_build_balances_per_s": round(summary.written / build_s, 1),
        "balances_build_fo_requests": fo_build,
        "balances_build_dv_requests": dv_build,
        "balances_naive_sample_cards": len(sample),
        "balances_naive_rows_per_s": round(naive_rate, 1),
        "balances_build_vs_naive": round(build_rate / naive_rate, 2),
        "balances_incremental_new_lines": posted,
        "balances_incremental_s": round(incremental_s, 2),
        "balances_changed_cards": changed_cards,
        "balances_changed": changed,
        "balances_fo_requests": fo_requests,
        "balances_dv_requests": dv_requests,
        "balances_dv_write_requests": dv_writes,
        "balances_fo_requests_per_changed_card": round(fo_requests / max(changed_cards, 1), 3),
        "balances_dv_requests_per_1000": round(dv_requests / max(changed, 1) * 1000, 3),
        "balances_peak_rss_mb": round(_rss_mb(), 1),
    }
    print_figures(figures)
    return 0


def _sample_keys(runtime: Any, engine: Any) -> list[tuple[str, ...]]:
    """The keys of the balances the build recorded (from the synced states: no Dataverse read)."""
    from shared.state.store import decode_key

    return [decode_key(state.row_key) for state in runtime.state.synced.iter(engine.partition(None))]
