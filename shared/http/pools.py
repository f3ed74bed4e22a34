"""HTTP connection pools sized to the app's concurrency.

requests keeps 10 connections per host by default; the chunk writers run up to ``SERVICE_MAX_CONCURRENCY``
(52) requests at once per identity, and each chunk records its state in Table Storage from its own thread.
With the default pool every extra connection was opened, used once and dropped with a "connection pool is
full" warning. These sessions keep as many connections as there can be requests in flight."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.http.limiter import SERVICE_MAX_CONCURRENCY

POOL_SIZE = SERVICE_MAX_CONCURRENCY + 12  # the chunk writers, plus the readers and lookups beside them


def pooled_session(size: int = POOL_SIZE, *, for_azure_sdk: bool = False) -> requests.Session:
    """A session whose pool per host holds ``size`` connections; no retries at this level (the callers have
    their own: the HTTP core's policy, or the Azure SDK's). The adapter's retry setting is each caller's
    default: requests' own (``0``: connection errors arrive as ``requests.ConnectionError``, which the HTTP
    core maps to ``TransportError``), or what azure-core mounts on the sessions it makes itself."""
    session = requests.Session()
    retries: Retry | int = Retry(total=False, redirect=False, raise_on_status=False) if for_azure_sdk else 0
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=retries)
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    return session
