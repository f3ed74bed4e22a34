"""Callback load generator, run in its own process so its threads do not share the app's interpreter lock:

    python -m bench.load URL --rate 200 --seconds 5

Posts business events for loyalty cards at a steady rate (open loop: a slow answer does not slow the
sender) and prints one JSON list of acknowledgement times in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    local = threading.local()
    acks: list[float] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = {"BusinessEventId": "RetailLoyaltyCardChangedBusinessEvent", "BusinessEventLegalEntity": "USMF",
                "EventId": str(uuid.uuid4()).upper(), "ControlNumber": 1, "EventTime": f"/Date({int(time.time() * 1000)})/",
                "MajorVersion": 0, "MinorVersion": 0, "CardNumber": f"BENCH-{n:08d}"}
        t0 = time.perf_counter()
        session.post(args.url, json=body, timeout=10).raise_for_status()
        with lock:
            acks.append((time.perf_counter() - t0) * 1000)

    total = int(args.rate * args.seconds)
    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(post, i)
    print(json.dumps(acks))


if __name__ == "__main__":
    main()
