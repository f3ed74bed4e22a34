"""F&O business-events publisher for HTTPS endpoints (docs/protocol-notes.md §4 and checklist §5.3).

* Endpoints are registered and activated in one step; activation sends the test event
  (``BusinessEventId`` = ``BusinessEventsTestEndpointContract``) synchronously, so a dead
  endpoint fails activation like in F&O (§4.1).
* Change events are queued after the OData write commits and delivered by a background worker:
  POST JSON, HTTPS timeout (default 10 s), up to ``retries`` retries ``retry_wait`` seconds apart
  (default 3 x 1 s), then an entry in the error log with resend (§4.1, §4.3).
* Payload = the §4.2 base contract fields + the entity's key fields + ``ChangeType``.
* Knobs: duplicate delivery (every event sent twice) and out-of-order delivery (consecutive
  events swapped), because delivery is at-least-once and unordered (§4.1).

**Data events** (§4.4): an endpoint registered with ``format="data_event"`` receives what a Dataverse webhook
sends for F&O data events instead: a ``RemoteExecutionContext`` with ``MessageName`` ``OnExternalCreated`` /
``OnExternalUpdated`` / ``OnExternalDeleted`` on the entity's virtual table (``mserp_<data entity>``, lower
case), the record in ``InputParameters`` -> ``Target`` with ``mserp_<property>`` attributes as ``{key, value}``
pairs (enums as ``OptionSetValue`` integers, dates as ``/Date(ms)/``, empty dates and Time fields left out), and
``Target.Id`` = entity id (4 bytes) + RecId (8 bytes, little-endian), the same for every event of one record and
new for a record created again. Created and Updated carry the row (Updated every column: the emulator does not
know which ones changed; knob ``updated_carries_keys`` = false leaves the key columns out, as "only the changed
properties" would); Deleted carries only ``Target.Id``. The headers of ``use-webhooks.md``. Delivery as a
Dataverse webhook: ``webhook_timeout`` (60 s), one more attempt only after 502/503/504; no activation test
event. Knobs: ``duplicate_delivery``; ``size_exceeded`` (every event cut as above 256 KB: no ``InputParameters``,
images or ``ParentContext``, header ``x-ms-dynamics-msg-size-exceeded``); ``operation_id``: ``absent`` (as in the
F&O capture), ``unique`` or ``zero`` (the empty GUID). Entity ids, the option-set offset and the header values
are inferred.
"""

from __future__ import annotations

import copy
import json
import queue
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .entities import EMPTY_DATE, ENTITY_SETS, EntitySet, Property

TEST_EVENT_ID = "BusinessEventsTestEndpointContract"
CHANGE_TYPES = ("Created", "Updated", "Deleted")
#: Business event category shown in the catalog (inferred).
CATEGORY = "Commerce loyalty"
#: First control number; real values look like 5637317109 (§4.2).
FIRST_CONTROL_NUMBER = 5_637_317_109
FORMATS = ("business_event", "data_event")
DATA_EVENT_MESSAGES = {"Created": "OnExternalCreated", "Updated": "OnExternalUpdated", "Deleted": "OnExternalDeleted"}
CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
#: RecIds of data events' Target.Id; the F&O capture's is 5637151326 (docs/protocol-notes.md §4.4).
FIRST_REC_ID = 5_637_151_326
#: Option-set values of F&O enums on virtual tables: 200000000 + the enum value (inferred from the capture).
OPTION_SET_BASE = 200_000_000
SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
#: Dataverse retries a webhook once, and only after these (use-webhooks.md).
WEBHOOK_RETRY_STATUSES = (502, 503, 504)
OPERATION_ID_MODES = ("absent", "unique", "zero")
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
#: The emulated Dataverse organization's ids (any fixed GUIDs).
ORGANIZATION_ID = "6b0f8a52-1d3e-4c6f-9a7b-2e4d5c6f7a80"
BUSINESS_UNIT_ID = "7c1f9b63-2e4f-4d70-8b8c-3f5e6d7a8b91"
USER_ID = "8d2a0c74-3f50-4e81-9c9d-4a6f7e8b9ca2"
#: Time-of-day fields (seconds since midnight): documented as absent from virtual tables.
TIME_FIELDS = {"LoyaltyEnrollmentTime", "LoyaltyEnrollmentTimeLocal", "EntryTime"}
_LEFT_OUT = object()


class ActivationError(Exception):
    """The activation test event could not be delivered, so the endpoint stays inactive."""


@dataclass
class Endpoint:
    id: int
    url: str
    entity_sets: tuple[str, ...] | None  # None = every event in the catalog
    legal_entity: str | None  # None = all legal entities (§4.1: blank = all)
    activated_at: str
    format: str = "business_event"  # or "data_event": a Dataverse webhook's RemoteExecutionContext (§4.4)

    def accepts(self, entity_set: str, legal_entity: str) -> bool:
        if self.entity_sets is not None and entity_set not in self.entity_sets:
            return False
        return self.legal_entity is None or self.legal_entity.casefold() == legal_entity.casefold()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "entity_sets": list(self.entity_sets) if self.entity_sets is not None else None,
            "legal_entity": self.legal_entity,
            "activated_at": self.activated_at,
            "active": True,
            "format": self.format,
        }


@dataclass
class _Job:
    endpoint: Endpoint
    event: dict[str, Any]
    copy_index: int = 0  # 1 for the duplicate of a duplicated delivery
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class PublisherSettings:
    timeout: float = 10.0
    retries: int = 3
    retry_wait: float = 1.0
    duplicate_delivery: bool = False
    out_of_order: bool = False
    #: How long the out-of-order knob holds an event waiting for a successor.
    hold_seconds: float = 0.2
    #: Data events (§4.4): a Dataverse webhook's timeout; every event cut for size; OperationId absent/unique/zero;
    #: Updated events carrying the key columns (false: only "changed" columns, so no key).
    webhook_timeout: float = 60.0
    size_exceeded: bool = False
    operation_id: str = "absent"
    updated_carries_keys: bool = True

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def wcf_date(moment: datetime) -> str:
    """WCF JSON date ``/Date(<ms since epoch>)/`` (§4.2)."""
    return f"/Date({int(moment.timestamp() * 1000)})/"


def iso_7(moment: datetime, ticks: int) -> str:
    """ISO 8601 UTC with 7 fractional digits (100 ns ticks), e.g. ``2022-12-30T13:51:15.2942742Z``."""
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.{ticks:07d}Z"


def _now() -> tuple[datetime, int]:
    ns = time.time_ns()
    moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    moment = moment.replace(microsecond=(ns // 1000) % 1_000_000)
    return moment, (ns // 100) % 10_000_000


def _utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BusinessEventPublisher:
    """Publishes F&O-style business events to registered HTTP(S) endpoints."""

    def __init__(
        self,
        *,
        default_company: str = "usmf",
        entity_sets: Iterable[EntitySet] = ENTITY_SETS,
        timeout: float = 10.0,
        retries: int = 3,
        retry_wait: float = 1.0,
        duplicate_delivery: bool = False,
        out_of_order: bool = False,
        seed: int | None = 42,
        initiating_user: str | None = None,
        max_log: int = 10_000,
    ) -> None:
        self.default_company = default_company
        self.catalog: dict[str, EntitySet] = {
            s.name: s for s in entity_sets if s.business_event_id is not None
        }
        self.settings = PublisherSettings(timeout, retries, retry_wait, duplicate_delivery, out_of_order)
        self._initial_settings = copy.copy(self.settings)
        self._rng = random.Random(seed)
        user = uuid.UUID(initiating_user) if initiating_user else uuid.UUID(int=self._rng.getrandbits(128), version=4)
        self.initiating_user = "{" + str(user).upper() + "}"
        self._lock = threading.RLock()
        self._endpoints: dict[int, Endpoint] = {}
        self._next_endpoint_id = 1
        self._control_number = FIRST_CONTROL_NUMBER
        self._deliveries: deque[dict[str, Any]] = deque(maxlen=max_log)
        self._errors: dict[int, dict[str, Any]] = {}
        self._next_error_id = 1
        self._published: deque[dict[str, Any]] = deque(maxlen=max_log)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = False
        #: Data events' RecIds by (entity set, key): one per record, new when a key is created again.
        self._rec_ids: dict[tuple[str, tuple[Any, ...]], int] = {}
        self._next_rec_id = FIRST_REC_ID
        #: Injection point for tests: replaces the HTTP POST (url, body, timeout, headers) -> status.
        self.transport: Callable[[str, bytes, float, Mapping[str, str]], int] = _http_post

    # -- configuration ------------------------------------------------------------------------
    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change timeout / retries / retry_wait / duplicate_delivery / out_of_order / hold_seconds."""
        with self._lock:
            for name, value in knobs.items():
                if not hasattr(self.settings, name):
                    raise ValueError(f"Unknown publisher setting '{name}'.")
                current = getattr(self.settings, name)
                if isinstance(current, bool) and not isinstance(value, bool):
                    raise ValueError(f"Publisher setting '{name}' takes true or false.")
                if name == "operation_id" and value not in OPERATION_ID_MODES:
                    raise ValueError(f"operation_id must be one of {', '.join(OPERATION_ID_MODES)}.")
                setattr(self.settings, name, type(current)(value))
            return self.settings.as_json()

    def event_catalog(self) -> list[dict[str, Any]]:
        """The events this emulator can raise (§5.3 "event catalog")."""
        entries: list[dict[str, Any]] = [
            {"BusinessEventId": TEST_EVENT_ID, "Category": "Business events", "EntitySet": None}
        ]
        entries += [
            {"BusinessEventId": s.business_event_id, "Category": CATEGORY, "EntitySet": s.name,
             "KeyFields": list(s.keys), "Basis": "inferred (custom event)"}
            for s in self.catalog.values()
        ]
        return entries

    # -- endpoints ------------------------------------------------------------------------------
    def register_endpoint(
        self,
        url: str,
        entity_sets: Iterable[str] | None = None,
        legal_entity: str | None = None,
        *,
        send_test_event: bool = True,
        format: str = "business_event",
    ) -> Endpoint:
        """Register and activate an endpoint; activation delivers the test event first (§4.1). A ``data_event``
        endpoint (a Dataverse webhook, §4.4) gets no test event (inferred: Dataverse sends none)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("The endpoint URL must be an http:// or https:// URL.")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}.")
        send_test_event = send_test_event and format == "business_event"
        sets = tuple(entity_sets) if entity_sets is not None else None
        for name in sets or ():
            if name not in self.catalog:
                raise ValueError(f"No business event is defined for entity set '{name}'.")
        with self._lock:
            endpoint = Endpoint(self._next_endpoint_id, url, sets, legal_entity or None, _utc_iso(), format)
            self._next_endpoint_id += 1
        if send_test_event:
            company = (legal_entity or self.default_company).upper()
            # The test payload's ControlNumber is unknown; 0 here (inferred).
            event = self._base_event(TEST_EVENT_ID, company, control_number=0)
            status, error = self._attempt(_Job(endpoint, event), attempt=1)
            if not _ok(status):
                raise ActivationError(
                    f"Activation test event to {url} failed: {error or f'HTTP {status}'}."
                )
        with self._lock:
            self._endpoints[endpoint.id] = endpoint
        return endpoint

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints.values())

    def remove_endpoint(self, endpoint_id: int) -> bool:
        with self._lock:
            return self._endpoints.pop(endpoint_id, None) is not None

    def clear_endpoints(self) -> None:
        with self._lock:
            self._endpoints.clear()

    # -- publishing -----------------------------------------------------------------------------
    def has_subscribers(self, entity_set: str) -> bool:
        with self._lock:
            return any(e.entity_sets is None or entity_set in e.entity_sets for e in self._endpoints.values())

    def publish_change(self, entity_set: str, key: Mapping[str, Any], change_type: str,
                       legal_entity: str | None = None, row: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Queue one change event per matching endpoint, in each endpoint's format; returns the events queued.
        ``row``: the record as written (a data event's attributes; the key alone when not given).

        Call only after the write has committed (§4.1: no phantom events).
        """
        if change_type not in CHANGE_TYPES:
            raise ValueError(f"change_type must be one of {', '.join(CHANGE_TYPES)}.")
        definition = self.catalog.get(entity_set)
        if definition is None or definition.business_event_id is None:
            raise ValueError(f"No business event is defined for entity set '{entity_set}'.")
        company = legal_entity or str(key.get("dataAreaId") or self.default_company)
        company = company.upper()
        with self._lock:
            targets = [e for e in self._endpoints.values() if e.accepts(entity_set, company)]
            if not targets:
                return []
        events: list[dict[str, Any]] = []
        business: dict[str, Any] | None = None
        data: tuple[dict[str, Any], dict[str, str]] | None = None
        for endpoint in targets:
            if endpoint.format == "data_event":
                if data is None:
                    data = self._data_event(definition, key, change_type, row)
                    events.append(data[0])
                event, headers = data
            else:
                if business is None:
                    business = self._business_event(definition, key, change_type, company)
                    events.append(business)
                event, headers = business, {}
            self._enqueue(_Job(endpoint, event, headers=headers))
            if self.settings.duplicate_delivery:
                self._enqueue(_Job(endpoint, event, copy_index=1, headers=headers))
        for event in events:
            self._published.append(copy.deepcopy(event))
        return events

    def _business_event(self, definition: EntitySet, key: Mapping[str, Any], change_type: str,
                        company: str) -> dict[str, Any]:
        assert definition.business_event_id is not None
        event = self._base_event(definition.business_event_id, company)
        for name in definition.keys:
            event[name] = key.get(name)
        event["ChangeType"] = change_type
        return dict(sorted(event.items()))  # DataContract JSON orders members by name

    # -- data events (§4.4) ---------------------------------------------------------------------
    def _target_id(self, definition: EntitySet, key: Mapping[str, Any], change_type: str) -> str:
        """Entity id (4 bytes) + RecId (8 bytes, little-endian): one per record; a Deleted record's id is retired."""
        record = (definition.name, tuple(_fold(key.get(k)) for k in definition.keys))
        with self._lock:
            rec_id = self._rec_ids.get(record)
            if rec_id is None or change_type == "Created":
                rec_id = self._next_rec_id
                self._next_rec_id += self._rng.randint(1, 5)
            if change_type == "Deleted":
                self._rec_ids.pop(record, None)
            else:
                self._rec_ids[record] = rec_id
        entity_id = zlib.crc32(definition.data_entity.encode("ascii")) & 0xFFFF or 1  # inferred: any stable number
        rec = rec_id.to_bytes(8, "little").hex()
        return f"{entity_id:08x}-0000-0000-{rec[:4]}-{rec[4:]}"

    def _data_event(self, definition: EntitySet, key: Mapping[str, Any], change_type: str,
                    row: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
        """A Dataverse ``RemoteExecutionContext`` for one F&O data event, and the webhook's headers."""
        table = f"mserp_{definition.data_entity.lower()}"
        message = DATA_EVENT_MESSAGES[change_type]
        target_id = self._target_id(definition, key, change_type)
        attributes: list[dict[str, Any]] = []
        if change_type != "Deleted":  # documented: a Deleted event carries only the record's id
            values = {**dict(row or {}), **{k: key.get(k) for k in definition.keys}}
            leave_out = set() if change_type == "Created" or self.settings.updated_carries_keys else set(definition.keys)
            for prop in definition.properties:
                if prop.name in leave_out or prop.name not in values:
                    continue
                value = _virtual_value(prop, values[prop.name])
                if value is not _LEFT_OUT:
                    attributes.append({"key": f"mserp_{prop.name.lower()}", "value": value})
        target = {"__type": f"Entity:{CONTRACTS}", "Attributes": attributes, "EntityState": None,
                  "FormattedValues": [], "Id": target_id, "KeyAttributes": [], "LogicalName": table,
                  "RelatedEntities": [], "RowVersion": None}
        moment = datetime.now(UTC)
        correlation = str(uuid.uuid4())
        event: dict[str, Any] = {
            "BusinessUnitId": BUSINESS_UNIT_ID, "CorrelationId": correlation, "Depth": 1,
            "InitiatingUserAzureActiveDirectoryObjectId": self.initiating_user.strip("{}").lower(),
            "InitiatingUserId": USER_ID, "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False, "IsolationMode": 1,
            "MessageName": message, "Mode": 1,
            # Whole seconds, as in the F&O capture (so two changes within a second share it).
            "OperationCreatedOn": f"/Date({int(moment.timestamp()) * 1000}+0000)/",
            "OrganizationId": ORGANIZATION_ID, "OrganizationName": "unqemulator", "OutputParameters": [],
            "OwningExtension": None, "ParentContext": None, "PostEntityImages": [], "PreEntityImages": [],
            "PrimaryEntityId": EMPTY_GUID, "PrimaryEntityName": table, "RequestId": str(uuid.uuid4()),
            "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": USER_ID,
        }
        if self.settings.operation_id != "absent":
            event["OperationId"] = str(uuid.uuid4()) if self.settings.operation_id == "unique" else EMPTY_GUID
        headers = {"x-ms-dynamics-organization": "emulator.crm.dynamics.com", "x-ms-dynamics-entity-name": table,
                   "x-ms-dynamics-request-name": message, "x-ms-correlation-request-id": correlation}
        if self.settings.size_exceeded:
            for name in ("InputParameters", "PreEntityImages", "PostEntityImages", "ParentContext"):
                event.pop(name)
            headers[SIZE_EXCEEDED_HEADER] = "true"
        return dict(sorted(event.items())), headers

    def _base_event(self, business_event_id: str, company: str, *, control_number: int | None = None) -> dict[str, Any]:
        """The §4.2 base contract fields."""
        moment, ticks = _now()
        if control_number is None:
            with self._lock:
                self._control_number += self._rng.randint(1, 7)  # increasing, with gaps (§4.1)
                control_number = self._control_number
        return {
            "BusinessEventId": business_event_id,
            "BusinessEventLegalEntity": company,
            "ContextRecordSubject": "",
            "ControlNumber": control_number,
            "EventId": str(uuid.uuid4()).upper(),
            "EventTime": wcf_date(moment),
            "EventTimeIso8601": iso_7(moment, ticks),
            "InitiatingUserAADObjectId": self.initiating_user,
            "MajorVersion": 0,
            "MinorVersion": 0,
            "ParentContextRecordSubjects": [],
        }

    # -- queue and worker -----------------------------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        if self._closed:
            return
        self._ensure_worker()
        self._queue.put(job)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="business-events", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        # Out of order: an event is held until the next event overtakes it. Its duplicate (duplicate_delivery) is
        # held with it, so with both knobs on an event is overtaken by another event, not by its own copy.
        held: list[_Job] = []
        while True:
            try:
                job = self._queue.get(timeout=self.settings.hold_seconds if held else 0.5)
            except queue.Empty:
                self._release(held)
                continue
            if job is None:  # close()
                self._queue.task_done()
                self._release(held)
                return
            if self.settings.out_of_order and (not held or job.event["EventId"] == held[0].event["EventId"]):
                held.append(job)
                continue
            self._deliver(job)
            self._queue.task_done()
            self._release(held)

    def _release(self, held: list[_Job]) -> None:
        for job in held:
            self._deliver(job)
            self._queue.task_done()
        held.clear()

    def _deliver(self, job: _Job) -> None:
        webhook = job.endpoint.format == "data_event"
        # F&O: up to ``retries`` more attempts after any failure (§4.1). A Dataverse webhook: one more, only after
        # 502/503/504 (§4.4).
        attempts = 2 if webhook else 1 + max(0, self.settings.retries)
        status: int | None = None
        error: str | None = None
        attempt = 0
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(self.settings.retry_wait)
            status, error = self._attempt(job, attempt)
            if _ok(status) or (webhook and status not in WEBHOOK_RETRY_STATUSES):
                break
        if _ok(status):
            return
        with self._lock:
            entry = {
                "id": self._next_error_id,
                "endpoint_id": job.endpoint.id,
                "url": job.endpoint.url,
                **_identity(job.event),
                "attempts": attempt,
                "last_status": status,
                "last_error": error,
                "failed_at": _utc_iso(),
                "payload": copy.deepcopy(job.event),
                "headers": dict(job.headers),
            }
            self._errors[self._next_error_id] = entry
            self._next_error_id += 1

    def _attempt(self, job: _Job, attempt: int) -> tuple[int | None, str | None]:
        body = json.dumps(job.event, separators=(",", ":")).encode("utf-8")
        timeout = self.settings.webhook_timeout if job.endpoint.format == "data_event" else self.settings.timeout
        status: int | None
        error: str | None = None
        try:
            status = self.transport(job.endpoint.url, body, timeout, job.headers)
        except Exception as exc:  # timeouts, refused connections, TLS errors
            status, error = None, f"{type(exc).__name__}: {exc}"
        if status is not None and not _ok(status):
            error = f"HTTP {status}"
        with self._lock:
            self._deliveries.append({
                "endpoint_id": job.endpoint.id,
                "url": job.endpoint.url,
                "format": job.endpoint.format,
                **_identity(job.event),
                "copy": job.copy_index,
                "attempt": attempt,
                "status": status,
                "error": error,
                "ok": _ok(status),
                "at": _utc_iso(),
            })
        return status, error

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was delivered or logged as an error; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def close(self) -> None:
        """Stop the worker after the queue drains (pending events are still delivered)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
        if worker is not None and worker.is_alive():
            self._queue.put(None)
            worker.join(timeout=5)

    # -- logs -------------------------------------------------------------------------------------
    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in self._deliveries]

    def published(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._published))

    def errors(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._errors.values()))

    def resend(self, error_ids: Iterable[int] | None = None) -> int:
        """Re-queue error-log entries (all when ``error_ids`` is None); returns how many."""
        with self._lock:
            ids = list(self._errors) if error_ids is None else [i for i in error_ids if i in self._errors]
            entries = [self._errors.pop(i) for i in ids]
            endpoints = dict(self._endpoints)
        for entry in entries:
            endpoint = endpoints.get(entry["endpoint_id"]) or Endpoint(
                entry["endpoint_id"], entry["url"], None, None, _utc_iso(),
                "data_event" if "MessageName" in entry["payload"] else "business_event")
            self._enqueue(_Job(endpoint, entry["payload"], headers=dict(entry.get("headers") or {})))
        return len(entries)

    def reset(self) -> None:
        """Forget endpoints and logs; restore the constructor's knobs (control numbers keep increasing)."""
        with self._lock:
            self._endpoints.clear()  # no new deliveries are queued from here on
        self.flush(timeout=30)
        with self._lock:
            self._deliveries.clear()
            self._errors.clear()
            self._published.clear()
            self.settings.__dict__.update(copy.copy(self._initial_settings).__dict__)


def _identity(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the logs show of an event: a business event's id fields, or a data event's message and Target.Id."""
    if "MessageName" not in event:
        return {"BusinessEventId": event["BusinessEventId"], "EventId": event["EventId"],
                "ControlNumber": event["ControlNumber"]}
    target = next((p["value"] for p in event.get("InputParameters") or [] if p.get("key") == "Target"), None)
    return {"MessageName": event["MessageName"], "PrimaryEntityName": event.get("PrimaryEntityName"),
            "TargetId": target.get("Id") if isinstance(target, dict) else None, "OperationId": event.get("OperationId")}


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _virtual_value(prop: Property, value: Any) -> Any:
    """A property's value as the virtual table's attribute (§4.4); ``_LEFT_OUT`` when the table has none."""
    if prop.name in TIME_FIELDS:
        return _LEFT_OUT
    if prop.enum is not None:
        if value not in prop.enum.member_names:
            return _LEFT_OUT
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": OPTION_SET_BASE + prop.enum.value_of(value)}
    if prop.edm_type == "Edm.DateTimeOffset":
        if not value or value == EMPTY_DATE or str(value).startswith("1900-01-01"):
            return _LEFT_OUT  # empty dates are null, and null datetimes are removed
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return f"/Date({int(moment.timestamp() * 1000)})/"
    return value


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _http_post(url: str, body: bytes, timeout: float, headers: Mapping[str, str]) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "Dynamics365-BusinessEvents-Emulator",
                 **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
