"""Sync state in Azure Table Storage: one small repository per table family, composed here.

| attribute | table(s) | holds |
|---|---|---|
| ``watermarks`` | ``<prefix>watermarks`` | per template, direction, scope: the run lease, the last run, where the next resumes |
| ``synced`` | ``<prefix>synced`` | per key: what was last written (hash, column digests), the shared image, the last event |
| ``checkpoints`` | ``<prefix>pages`` | the key ranges and delete checks of full scans in progress |
| ``callbacks`` | ``<prefix>events``, ``control``, ``held`` | processed event ids, pause flags and counters, held work |
| ``refresh`` | ``<prefix>control`` (partition ``refresh``) | each template's pending refresh (coalesced scan requests) |
| ``parked`` | ``<prefix>parked`` | records that could not be synced, with their reason |
| ``conflicts`` | ``<prefix>conflicts`` | records both sides changed since the last sync |
| ``dataverse_ids`` | ``<prefix>dvids`` | Dataverse id -> Commerce key, for Dataverse deletes that flow to Commerce |
| ``target_ids`` | ``<prefix>targetids`` | F&O data events' ``Target.Id`` -> Commerce key, for their Deleted events |
| ``aggregates`` | ``<prefix>aggregates`` | aggregate templates: the due index and the incremental mark |

Tables are partitioned by template (and legal entity where the template is company-specific). Every write
that could race carries the entity's ETag (``If-Match``), so two overlapping runs can never move a
watermark backwards or let a stale write win silently.
"""

from __future__ import annotations

import contextlib

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient

from shared.clock import SYSTEM_CLOCK, Clock
from shared.http.pools import POOL_SIZE, pooled_session
from shared.state.aggregates import AggregateState
from shared.state.autopause import AutoPause
from shared.state.callbacks import CallbackState
from shared.state.checkpoints import PageCheckpoints
from shared.state.keys import (
    ConcurrencyConflict,
    bucket_of,
    decode_key,
    encode_key,
    parked_key,
    split_parked_key,
)
from shared.state.records import Conflicts, DataverseIds, ParkedRecords, TargetIds
from shared.state.refresh import RefreshRequests
from shared.state.synced import DEFAULT_BUCKETS, TOMBSTONE, SyncedEntry, SyncedState, SyncedStates
from shared.state.watermarks import Watermark, Watermarks

__all__ = ["DEFAULT_BUCKETS", "TOMBSTONE", "ConcurrencyConflict", "StateStore", "SyncedEntry", "SyncedState",
           "Watermark", "bucket_of", "decode_key", "encode_key", "parked_key", "split_parked_key"]


# Per-call options of azure-core's retry policy and transport: two attempts, 1.5 s to connect, 2.5 s to read.
START_UP_LIMITS: dict[str, float] = {"retry_total": 1, "retry_backoff_factor": 0.3, "connection_timeout": 1.5,
                                     "read_timeout": 2.5}


def storage_transport() -> RequestsTransport:
    """The Azure SDK's transport over a pool sized to the chunk writers that record state concurrently."""
    return RequestsTransport(session=pooled_session(2 * POOL_SIZE, for_azure_sdk=True), session_owner=False)


class StateStore:
    def __init__(self, service: TableServiceClient, prefix: str, *, buckets: int = DEFAULT_BUCKETS,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.service = service
        self._tables = {name: service.get_table_client(f"{prefix}{name}")
                        for name in ("watermarks", "synced", "parked", "events", "control", "held", "conflicts",
                                     "dvids", "pages", "targetids", "aggregates")}
        self.watermarks = Watermarks(self._tables["watermarks"], clock)
        self.synced = SyncedStates(self._tables["synced"], clock, buckets)
        self.checkpoints = PageCheckpoints(self._tables["pages"])
        self.callbacks = CallbackState(self._tables["events"], self._tables["control"], self._tables["held"], clock)
        self.auto_pause = AutoPause(self._tables["control"], self.callbacks, clock)  # off until configured
        self.parked = ParkedRecords(self._tables["parked"], clock)
        self.conflicts = Conflicts(self._tables["conflicts"], clock)
        self.dataverse_ids = DataverseIds(self._tables["dvids"])
        self.target_ids = TargetIds(self._tables["targetids"])
        self.aggregates = AggregateState(self._tables["aggregates"], buckets)
        self.refresh = RefreshRequests(self._tables["control"], clock)
        self._clock = clock

    @property
    def clock(self) -> Clock:
        """What leases expire by and records are stamped with; tests move it instead of editing lease times."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        for repository in (self.watermarks, self.synced, self.callbacks, self.parked, self.conflicts, self.auto_pause,
                           self.refresh):
            repository.clock = clock

    @property
    def buckets(self) -> int:
        return self.synced.buckets

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, prefix: str,
                      credential: TokenCredential | None = None, *, buckets: int = DEFAULT_BUCKETS) -> StateStore:
        if connection_string:
            service = TableServiceClient.from_connection_string(connection_string, transport=storage_transport())
        else:
            assert endpoint is not None and credential is not None
            service = TableServiceClient(endpoint=endpoint, credential=credential, transport=storage_transport())
        return cls(service, prefix, buckets=buckets)

    def ensure_tables(self) -> None:
        """Create the tables that do not exist yet. Each call is bounded (two attempts, short timeouts): a cold
        start runs this in front of a callback's answer, which F&O waits 10 s for (docs/protocol-notes.md §4.3)."""
        for table in self._tables.values():
            with contextlib.suppress(ResourceExistsError):
                table.create_table(**START_UP_LIMITS)
