"""Writes to Commerce (the Dataverse -> Commerce direction's PATCHes) with F&O's throttling on.

The Commerce emulator enforces user-based limits scaled down (``FO_PROTECTION``: requests per window and
concurrency, the exact §3.5 messages) and, on top, resource-based throttling (priority-based throttling's
"system experiencing high resource utilization" 429, environment-wide) on a share of the requests. Writer
threads PATCH loyalty cards through the app's own CommerceClient (one HTTP core: ``Retry-After``, the probe
after a block, 30 s when the header is absent) for a fixed time. The ceiling is the request limit of the
window; the figures are the writes per second against it and the share of requests that drew a 429.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from bench.ceiling import clock_bound_fraction, windows_in

# F&O documents 6,000 requests and 1,200 s per 300 s and 52 concurrent (docs/protocol-notes.md §3.5): scaled down.
FO_PROTECTION = {"window_s": 10, "max_requests": 100, "max_execution_s": None, "max_concurrent": 6}
# Resource-based throttling on 1 % of the requests, with a Retry-After of 2 s (inferred: F&O sends one).
RESOURCE_RULE = {"kind": "status", "status": 429, "reason": "resource", "probability": 0.01, "seed": 14,
                 "retry_after": 2, "route": "RetailLoyaltyCards"}


def fo_writes(runtime: Any, fo_url: str, *, threads: int = 4, seconds: float = 25.0) -> dict[str, float]:
    """Figures of the Commerce writes under F&O throttling (protection and the fault are removed after)."""
    cards = [row["CardNumber"] for row in requests.get(
        f"{fo_url}/data/RetailLoyaltyCards?$top=2000&$select=CardNumber",
        headers={"Authorization": "Bearer bench", "Accept": "application/json"}, timeout=30).json()["value"]]
    requests.post(f"{fo_url}/_emulator/service-protection", json=FO_PROTECTION, timeout=10).raise_for_status()
    requests.post(f"{fo_url}/_emulator/faults", json=RESOURCE_RULE, timeout=10).raise_for_status()
    requests.post(f"{fo_url}/_emulator/stats/reset", timeout=10)
    written = [0]
    failed = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def writer(offset: int) -> None:
        n = offset
        while time.monotonic() < stop:
            card = cards[n % len(cards)]
            n += threads
            try:
                runtime.commerce.update("RetailLoyaltyCards", {"CardNumber": card}, {"PartyNumber": f"FO{n % 997:04d}"})
            except Exception:  # a write still throttled after its retries (parked in the app)
                with lock:
                    failed[0] += 1
                continue
            with lock:
                written[0] += 1

    started = time.monotonic()
    pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    protection = requests.get(f"{fo_url}/_emulator/service-protection", timeout=10).json()
    faults = requests.get(f"{fo_url}/_emulator/faults", timeout=10).json()
    requests.delete(f"{fo_url}/_emulator/service-protection", timeout=10)
    requests.delete(f"{fo_url}/_emulator/faults", timeout=10)
    user_429 = int(protection.get("throttled", 0))
    resource_429 = sum(int(rule.get("fired", 0)) for rule in faults.get("rules", []))
    sent = int(protection.get("requests", 0)) + user_429 + resource_429
    # What a perfect client writes while the writers send: one window's requests for every window begun in those
    # ``seconds`` (the first starts empty: bench/ceiling.py), one write a request.
    window_s = float(FO_PROTECTION["window_s"])  # type: ignore[arg-type]
    max_requests = int(FO_PROTECTION["max_requests"] or 0)
    ceiling = max_requests * windows_in(seconds, window_s) / seconds
    rate = written[0] / elapsed
    print(f"Commerce writes under F&O throttling: {written[0]} in {elapsed:.1f} s = {rate:.1f}/s (ceiling "
          f"{ceiling:.0f}/s), {user_429} user-based and {resource_429} resource-based 429s of {sent} requests, "
          f"{failed[0]} writes given up", flush=True)
    return {"fo_writes_per_s": round(rate, 2),
            "fo_ceiling_fraction": round(clock_bound_fraction(written[0], max_requests, window_s, seconds), 3),
            "fo_throttled_fraction": round((user_429 + resource_429) / max(sent, 1), 4),
            "fo_user_throttled_fraction": round(user_429 / max(sent, 1), 4)}
