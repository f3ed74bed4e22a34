"""Changed records written in chunks, concurrently, as many at once as each identity's limiter allows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from shared.dataverse.client import DataverseClient
from shared.http.limiter import SERVICE_MAX_CONCURRENCY
from shared.mapping.plan import DataverseRecord
from shared.state.store import SyncedState
from shared.sync.failfast import FailFast
from shared.sync.runs import RunSummary

# A changed record waiting for its chunk: the mapped record, the Commerce row, the state last written.
Pending = tuple[DataverseRecord, Mapping[str, Any], SyncedState | None]
# Writes one chunk as one identity (None: the main one); one outcome per record.
Flush = Callable[[list[Pending], DataverseClient | None], list[str]]


class ChunkPool:
    """Writes chunks concurrently, as many at once as the identity's adaptive limiter allows (none: one
    at a time). Outcomes are counted on the calling thread into the summary each chunk was submitted
    with; the first error stops the run."""

    def __init__(self, flush: Flush, identities: list[DataverseClient], *, guard: FailFast | None = None) -> None:
        self.flush = flush
        self.guard = guard or FailFast(0)  # the run's fail-fast guard (the flush reports to it too)
        self.clients = [c for c in identities if c.limiter is not None]
        self.pool = ThreadPoolExecutor(max_workers=SERVICE_MAX_CONCURRENCY * len(self.clients),
                                       thread_name_prefix="chunk") if self.clients else None
        self.futures: list[tuple[Future[list[str]], RunSummary]] = []

    def _pick(self) -> DataverseClient:
        """The identity with the most free slots (each has its own limits and limiter)."""
        return max(self.clients, key=lambda c: c.limiter.limit - c.limiter.in_flight if c.limiter else 0)

    def submit(self, chunk: list[Pending], summary: RunSummary) -> None:
        if self.pool is None:
            for outcome in self.flush(chunk, None):
                summary.count(outcome)
            return
        self._collect(block=False)
        client = self._pick()
        assert client.limiter is not None
        client.limiter.acquire()
        self.futures.append((self.pool.submit(self._write, chunk, client), summary))

    def _write(self, chunk: list[Pending], client: DataverseClient) -> list[str]:
        assert client.limiter is not None
        try:
            return self.flush(chunk, client)
        finally:
            client.limiter.release()

    def _collect(self, *, block: bool) -> None:
        still: list[tuple[Future[list[str]], RunSummary]] = []
        for future, summary in self.futures:
            if block or future.done():
                for outcome in future.result():
                    summary.count(outcome)
            else:
                still.append((future, summary))
        self.futures = still

    def wait(self) -> None:
        """Every chunk submitted so far is written and counted."""
        self._collect(block=True)

    def finish(self) -> None:
        try:
            self._collect(block=True)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def abandon(self) -> None:
        """The scan failed: let the chunks already in flight end, start no more."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
