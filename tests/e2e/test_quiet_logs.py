"""Logs stay quiet at normal levels: concurrent chunk writes reuse pooled connections instead of warning
"connection pool is full" and dropping them (Dataverse, and Table Storage where each chunk records state)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from tests.e2e.stores import Stores


def test_concurrent_chunk_writes_never_overflow_a_connection_pool(runtime: Runtime, stores: Stores,
                                                                 dataverse_emulator: Any,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dataverse_emulator, "dop_hint", 48)  # what live environments send (docs/protocol-notes.md §2.12)
    requests.post(f"{stores.dataverse_url}/_emulator/service-protection", timeout=10,
                  json={"window_s": 300, "max_requests": 100000, "max_execution_s": 100000.0}).raise_for_status()
    monkeypatch.setenv("SYNC_BULK_SIZE", "1")  # 60 cards: 60 chunks
    monkeypatch.setenv("SYNC_CONCURRENCY_START", "40")  # far more in flight than requests' default pool of 10
    get_settings.cache_clear()
    get_runtime.cache_clear()
    busy = get_runtime()
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        [summary] = busy.scan("loyalty_cards").run()
    assert summary.written == 60
    assert [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"] == []
