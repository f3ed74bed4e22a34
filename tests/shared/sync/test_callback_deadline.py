"""A callback is answered well inside F&O's 10 seconds (protocols.md §4.3) when storage does not answer:
a real socket that accepts connections and never replies stands in for a hung queue service."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from shared.mapping.catalog import load_catalog
from shared.state.queues import CallbackQueues
from shared.sync.callbacks import handle_callback
from tests.builders import as_body, business_event

DEADLINE_S = 10.0
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture()
def silent_storage() -> Iterator[str]:
    """A loopback port that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
           f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_callback_with_storage_not_answering_gets_503_well_inside_the_deadline(silent_storage: str) -> None:
    queues = CallbackQueues.from_settings(silent_storage, None, "deadline")
    plan = load_catalog().plan("loyalty_cards")
    started = time.monotonic()
    answer = handle_callback(plan, queues, as_body(business_event(CardNumber="LC-1")))
    elapsed = time.monotonic() - started
    assert answer.status == 503
    assert elapsed < DEADLINE_S, f"answered after {elapsed:.1f} s"
