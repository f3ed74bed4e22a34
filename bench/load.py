"""Callback load generator, run in its own process so its threads do not share the app's interpreter lock:

    python -m bench.load URL --rate 200 --seconds 5 [--put-connection CONN --put-queue NAME]

Posts business events for loyalty cards at a steady rate (open loop: a slow answer does not slow the
sender) and prints one JSON list of acknowledgement times in milliseconds. With ``--put-connection``, it
also puts a message of the same size on a scratch queue of the same storage account at the same rate,
interleaved with the callbacks (the same load, the same moments), and prints ``{"acks": [...], "puts": [...]}``:
what an acknowledgement costs beside the one durable queue write it waits for.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from azure.storage.queue import QueueClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--put-connection", default=None, help="storage connection string for the bare queue puts")
    parser.add_argument("--put-queue", default="bench-bare-puts")
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

    puts: list[float] = []

    # One client for every thread, as the app shares one per queue; created and warmed up before the clock runs.
    queue = QueueClient.from_connection_string(args.put_connection, args.put_queue) if args.put_connection else None

    def put(n: int) -> None:
        assert queue is not None
        body = json.dumps({"template": "loyalty_cards", "event_id": str(uuid.uuid4()).upper(), "n": n,
                           "key": f"BENCH-{n:08d}", "padding": "x" * 200})
        t0 = time.perf_counter()
        queue.send_message(body)
        with lock:
            puts.append((time.perf_counter() - t0) * 1000)

    if queue is not None:
        queue.create_queue()
        queue.send_message("warm-up")
    total = int(args.rate * args.seconds)
    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(post, i)
            if args.put_connection:
                pool.submit(put, i)
    print(json.dumps({"acks": acks, "puts": puts} if args.put_connection else acks))


if __name__ == "__main__":
    main()
