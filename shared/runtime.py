"""Builds the clients, the state store and the engines once per process (Functions worker or CLI)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache

from shared.commerce.client import CommerceClient
from shared.credentials import build_credential
from shared.dataverse.client import DataverseClient
from shared.http.core import HttpCore, RetryPolicy, Timeouts
from shared.mapping.catalog import Catalog, load_catalog
from shared.settings import Settings, get_settings
from shared.state.queues import CallbackQueues
from shared.state.store import StateStore
from shared.sync.engine import OutboundSync


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    commerce: CommerceClient
    dataverse: DataverseClient
    state: StateStore
    queues: CallbackQueues
    _engines: dict[str, OutboundSync] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def outbound(self, template: str) -> OutboundSync:
        with self._lock:
            engine = self._engines.get(template)
            if engine is None:
                engine = OutboundSync(self.catalog.plan(template), self.commerce, self.dataverse, self.state,
                                      delete_policy=self.settings.delete_policy, lease_s=self.settings.run_lease_s)
                self._engines[template] = engine
            return engine


def build_runtime(settings: Settings, catalog: Catalog | None = None) -> Runtime:
    credential = build_credential(settings)
    timeouts = Timeouts(settings.http_connect_timeout_s, settings.http_read_timeout_s)
    retry = RetryPolicy(max_attempts=settings.http_max_attempts, budget_s=settings.http_retry_budget_s)
    dataverse_core = HttpCore(f"{settings.dataverse_url}/api/data/v9.2/", credential, settings.dataverse_token_scope,
                              service="dataverse", timeouts=timeouts, retry=retry)
    commerce_core = HttpCore(settings.commerce_url, credential, settings.commerce_token_scope,
                             service="commerce", timeouts=timeouts, retry=retry)
    state = StateStore.from_settings(
        settings.storage_connection.get_secret_value() if settings.storage_connection else None,
        settings.storage_table_endpoint, settings.table_prefix,
        credential=None if settings.storage_connection else credential,
    )
    state.ensure_tables()
    catalog = catalog or load_catalog(settings.mappings_dir)
    queues = CallbackQueues.from_settings(
        settings.storage_connection.get_secret_value() if settings.storage_connection else None,
        settings.storage_queue_endpoint, settings.queue_prefix,
        credential=None if settings.storage_connection else credential,
    )
    queues.ensure([t.name for t in catalog])
    return Runtime(
        settings=settings,
        catalog=catalog,
        commerce=CommerceClient(commerce_core),
        dataverse=DataverseClient(dataverse_core, page_size=settings.dataverse_page_size),
        state=state,
        queues=queues,
    )


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    return build_runtime(get_settings())
