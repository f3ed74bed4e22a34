"""Builds the clients, the state store and the engines once per process (Functions worker or CLI)."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import TokenCredential

from shared.balances.fold import BalanceSettings
from shared.commerce.client import CommerceClient
from shared.credentials import build_credential
from shared.dataverse.client import DataverseClient
from shared.http.budget import BudgetLedger, SharedBudget
from shared.http.core import HttpCore, RetryPolicy, Timeouts
from shared.http.limiter import AdaptiveLimiter
from shared.mapping.catalog import Catalog, load_catalog
from shared.once import build_once
from shared.preflight import Preflight
from shared.settings import ConfigError, Settings, get_settings
from shared.state.budget import BudgetMembers, identity_key
from shared.state.queues import CallbackQueues
from shared.state.store import StateStore
from shared.sync.aggregate import AggregateSync
from shared.sync.conflicts import ConflictResolver
from shared.sync.engine import OutboundSync
from shared.sync.inbound import InboundSync
from shared.sync.scan import Scan
from shared.telemetry.metrics import watch_limiter


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    commerce: CommerceClient
    dataverse: DataverseClient
    state: StateStore
    queues: CallbackQueues
    identities: list[DataverseClient] = field(default_factory=list)  # application users that share bulk writes
    preflight: Preflight | None = None  # checked before each run (None: not checked)
    _storage_ready: bool = False
    _engines: dict[str, OutboundSync] = field(default_factory=dict)
    _inbound: dict[str, InboundSync] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def outbound(self, template: str) -> OutboundSync:
        return self._pair(template)[0]

    def inbound(self, template: str) -> InboundSync:
        return self._pair(template)[1]

    def scan(self, template: str) -> Scan:
        """Checkpointed full scans of a template: in place (``run``), or fanned out through its pages queue."""
        return Scan(self.outbound(template), enqueue=self.queues.send_page, preflight=self.preflight)

    def ensure_storage(self) -> None:
        """Create the state tables and the queues if they do not exist yet: once per process, and only for what
        writes (triggers, ``sync``, ``replay``, ``pause`` ...); read-only commands never create anything."""
        with self._lock:
            if self._storage_ready:
                return
            self.state.ensure_tables()
            self.queues.ensure([t.name for t in self.catalog])
            self._storage_ready = True

    def _pair(self, template: str) -> tuple[OutboundSync, InboundSync]:
        """Both directions of a template, built together: each calls the other after it writes."""
        with self._lock:
            if template not in self._engines:
                s = self.settings
                plan = self.catalog.plan(template)
                resolver = ConflictResolver(self.state, template, s.conflict_policy)
                options: dict[str, Any] = {"delete_policy": s.delete_policy, "lease_s": s.run_lease_s, "resolver": resolver,
                           "bulk_size": s.bulk_size, "page_size": s.page_size,
                           "identities": self.identities or [self.dataverse], "delete_threshold": s.delete_threshold,
                           "delete_threshold_share": s.delete_threshold_share, "fail_fast": s.fail_fast_records}
                outbound: OutboundSync
                if plan.aggregate is not None:  # folded from lines, one-way (shared.sync.aggregate)
                    outbound = AggregateSync(plan, self.commerce, self.dataverse, self.state,
                                             balances=BalanceSettings(s.balance_never_expires, s.balance_timezone,
                                                                      s.balance_horizon_days),
                                             overlap_minutes=s.balance_overlap_minutes,
                                             filter_chars=s.balance_filter_chars, **options)
                else:
                    outbound = OutboundSync(plan, self.commerce, self.dataverse, self.state, two_way=s.two_way,
                                            **options)
                inbound = InboundSync(plan, self.commerce, self.dataverse, self.state, outbound,
                                      delete_policy=s.reverse_delete_policy,
                                      lease_s=s.run_lease_s, preflight=self.preflight)
                self._engines[template] = outbound
                self._inbound[template] = inbound
            return self._engines[template], self._inbound[template]


def dataverse_client(settings: Settings, credential: TokenCredential, timeouts: Timeouts,
                     retry: RetryPolicy, ledger: BudgetLedger | None = None,
                     client_id: str | None = None) -> DataverseClient:
    """One identity's Dataverse client: its own session, token and adaptive limiter; with a ``ledger``
    (SYNC_SHARED_BUDGET) the limiter takes its share of the identity's budget among the live processes."""
    core = HttpCore(f"{settings.dataverse_url}/api/data/v9.2/", credential, settings.dataverse_token_scope,
                    service="dataverse", timeouts=timeouts, retry=retry, window_s=settings.dataverse_window_s)
    budget = None if ledger is None else SharedBudget(
        ledger, identity_key(settings.dataverse_url, client_id),
        heartbeat_s=settings.shared_budget_heartbeat_s or settings.dataverse_window_s / 20)
    if budget is not None:
        budget.attach_gate(core.gate)
    limiter = AdaptiveLimiter(settings.concurrency_start, settings.max_concurrency, window_s=settings.dataverse_window_s,
                              budget=budget)
    watch_limiter("dataverse", limiter)  # loyaltysync.limiter.in_flight
    return DataverseClient(core, page_size=settings.dataverse_page_size, limiter=limiter)


def build_runtime(settings: Settings, catalog: Catalog | None = None, *, ensure_storage: bool = True) -> Runtime:
    """Everything a process needs, from its settings. ``ensure_storage=False``: create no table or queue (the
    read-only commands; ``Runtime.ensure_storage`` does it later for what writes). A setting that names what does
    not exist (``SYNC_PAUSED_TEMPLATES``) or a malformed storage connection string is a ``ConfigError``."""
    catalog = catalog or load_catalog(settings.mappings_dir)
    unknown = [name for name in settings.paused_templates if catalog.get(name) is None]
    if unknown:
        raise ConfigError(f"SYNC_PAUSED_TEMPLATES: {', '.join(repr(n) for n in unknown)} "
                          f"{'is' if len(unknown) == 1 else 'are'} no template (the templates are "
                          f"{', '.join(t.name for t in catalog)}); fix the setting")
    credential = build_credential(settings)
    timeouts = Timeouts(settings.http_connect_timeout_s, settings.http_read_timeout_s)
    retry = RetryPolicy(max_attempts=settings.http_max_attempts, budget_s=settings.http_retry_budget_s,
                        backoff_base_s=settings.http_backoff_base_s)
    # F&O's 429 without Retry-After waits 30 s, as Microsoft's sample does (docs/protocol-notes.md §3.5).
    commerce_core = HttpCore(settings.commerce_url, credential, settings.commerce_token_scope, service="commerce",
                             timeouts=timeouts, retry=dataclasses.replace(retry, throttle_fallback_s=30.0))
    try:
        state = StateStore.from_settings(
            settings.storage_connection.get_secret_value() if settings.storage_connection else None,
            settings.storage_table_endpoint, settings.table_prefix,
            credential=None if settings.storage_connection else credential, buckets=settings.state_buckets,
        )
        queues = CallbackQueues.from_settings(
            settings.storage_connection.get_secret_value() if settings.storage_connection else None,
            settings.storage_queue_endpoint, settings.queue_prefix,
            credential=None if settings.storage_connection else credential,
        )
    except ValueError as exc:  # the SDK's "Connection string is either blank or malformed." (it holds no secret)
        raise ConfigError(f"AzureWebJobsStorage / SYNC_STORAGE_CONNECTION: {exc} Copy the connection string from the "
                          "storage account's Access keys (or, for Azurite, UseDevelopmentStorage=true)") from exc
    state.auto_pause.configure(settings.auto_pause_failures, settings.auto_pause_minutes)
    ledger = BudgetMembers.for_service(state.service, settings.table_prefix) if settings.shared_budget else None
    dataverse = dataverse_client(settings, credential, timeouts, retry, ledger)
    # More application users multiply the per-user service-protection limits (docs/protocol-notes.md §2.12).
    extra = [dataverse_client(settings, build_credential(settings, client_id), timeouts, retry, ledger, client_id)
             for client_id in settings.dataverse_client_ids]
    commerce = CommerceClient(commerce_core)
    runtime = Runtime(
        settings=settings,
        catalog=catalog,
        commerce=commerce,
        dataverse=dataverse,
        identities=[dataverse, *extra],
        state=state,
        queues=queues,
        preflight=Preflight(settings, catalog, commerce, dataverse),
    )
    if ensure_storage:
        runtime.ensure_storage()
    return runtime


@build_once
def get_runtime() -> Runtime:
    return build_runtime(get_settings())
