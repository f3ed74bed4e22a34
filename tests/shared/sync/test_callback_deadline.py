"""A callback is answered well inside F&O's 10 seconds (docs/protocol-notes.md §4.3) when storage does not answer:
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
           f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
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


def test_a_cold_start_with_storage_not_answering_answers_503_well_inside_the_deadline(
        silent_storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.functions as func

    import function_app
    from devtools.demo import emulator_settings
    from devtools.functions_host import invoke_http
    from shared.runtime import get_runtime
    from shared.settings import get_settings

    for name, value in emulator_settings("http://127.0.0.1:9", "http://127.0.0.1:9", silent_storage, "cold").items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()  # the first callback of a new host instance builds the runtime
    try:
        started = time.monotonic()
        response = invoke_http(function_app.app, "callback_loyalty_cards", func.HttpRequest(
            "POST", "http://localhost/api/callbacks/loyalty_cards", body=as_body(business_event(CardNumber="LC-1"))))
        elapsed = time.monotonic() - started
    finally:
        get_settings.cache_clear()
        get_runtime.cache_clear()
    assert response.status_code == 503
    assert elapsed < DEADLINE_S, f"answered after {elapsed:.1f} s"
