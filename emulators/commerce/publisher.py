"""F&O business-events publisher for HTTPS endpoints (protocols.md §4 and checklist §5.3).

* Endpoints are registered and activated in one step; activation sends the test event
  (``BusinessEventId`` = ``BusinessEventsTestEndpointContract``) synchronously, so a dead
  endpoint fails activation like in F&O (§4.1).
* Change events are queued after the OData write commits and delivered by a background worker:
  POST JSON, HTTPS timeout (default 10 s), up to ``retries`` retries ``retry_wait`` seconds apart
  (default 3 x 1 s), then an entry in the error log with resend (§4.1, §4.3).
* Payload = the §4.2 base contract fields + the entity's key fields + ``ChangeType``.
* Knobs: duplicate delivery (every event sent twice) and out-of-order delivery (consecutive
  events swapped), because delivery is at-least-once and unordered (§4.1).
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
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .entities import ENTITY_SETS, EntitySet

TEST_EVENT_ID = "BusinessEventsTestEndpointContract"
CHANGE_TYPES = ("Created", "Updated", "Deleted")
#: Business event category shown in the catalog (inferred).
CATEGORY = "Commerce loyalty"
#: First control number; real values look like 5637317109 (§4.2).
FIRST_CONTROL_NUMBER = 5_637_317_109


class ActivationError(Exception):
    """The activation test event could not be delivered, so the endpoint stays inactive."""


@dataclass
class Endpoint:
    id: int
    url: str
    entity_sets: tuple[str, ...] | None  # None = every event in the catalog
    legal_entity: str | None  # None = all legal entities (§4.1: blank = all)
    activated_at: str

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
        }


@dataclass
class _Job:
    endpoint: Endpoint
    event: dict[str, Any]
    copy_index: int = 0  # 1 for the duplicate of a duplicated delivery


@dataclass
class PublisherSettings:
    timeout: float = 10.0
    retries: int = 3
    retry_wait: float = 1.0
    duplicate_delivery: bool = False
    out_of_order: bool = False
    #: How long the out-of-order knob holds an event waiting for a successor.
    hold_seconds: float = 0.2

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
        #: Injection point for tests: replaces the HTTP POST (url, body, timeout) -> status.
        self.transport: Callable[[str, bytes, float], int] = _http_post

    # -- configuration ------------------------------------------------------------------------
    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change timeout / retries / retry_wait / duplicate_delivery / out_of_order / hold_seconds."""
        with self._lock:
            for name, value in knobs.items():
                if not hasattr(self.settings, name):
                    raise ValueError(f"Unknown publisher setting '{name}'.")
                current = getattr(self.settings, name)
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
    ) -> Endpoint:
        """Register and activate an endpoint; activation delivers the test event first (§4.1)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("The endpoint URL must be an http:// or https:// URL.")
        sets = tuple(entity_sets) if entity_sets is not None else None
        for name in sets or ():
            if name not in self.catalog:
                raise ValueError(f"No business event is defined for entity set '{name}'.")
        with self._lock:
            endpoint = Endpoint(self._next_endpoint_id, url, sets, legal_entity or None, _utc_iso())
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
                       legal_entity: str | None = None) -> list[dict[str, Any]]:
        """Queue one change event per matching endpoint; returns the events queued.

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
            event = self._base_event(definition.business_event_id, company)
        for name in definition.keys:
            event[name] = key.get(name)
        event["ChangeType"] = change_type
        event = dict(sorted(event.items()))  # DataContract JSON orders members by name
        self._published.append(copy.deepcopy(event))
        for endpoint in targets:
            self._enqueue(_Job(endpoint, event))
            if self.settings.duplicate_delivery:
                self._enqueue(_Job(endpoint, event, copy_index=1))
        return [event]

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
        held: _Job | None = None
        while True:
            try:
                job = self._queue.get(timeout=self.settings.hold_seconds if held else 0.5)
            except queue.Empty:
                if held is not None:
                    self._deliver(held)
                    held = None
                    self._queue.task_done()
                continue
            if job is None:  # close()
                self._queue.task_done()
                if held is not None:
                    self._deliver(held)
                    self._queue.task_done()
                return
            if self.settings.out_of_order and held is None:
                held = job  # hold until the next event overtakes it
                continue
            self._deliver(job)
            self._queue.task_done()
            if held is not None:
                self._deliver(held)
                held = None
                self._queue.task_done()

    def _deliver(self, job: _Job) -> None:
        attempts = 1 + max(0, self.settings.retries)
        status: int | None = None
        error: str | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(self.settings.retry_wait)
            status, error = self._attempt(job, attempt)
            if _ok(status):
                return
        with self._lock:
            entry = {
                "id": self._next_error_id,
                "endpoint_id": job.endpoint.id,
                "url": job.endpoint.url,
                "BusinessEventId": job.event["BusinessEventId"],
                "EventId": job.event["EventId"],
                "ControlNumber": job.event["ControlNumber"],
                "attempts": attempts,
                "last_status": status,
                "last_error": error,
                "failed_at": _utc_iso(),
                "payload": copy.deepcopy(job.event),
            }
            self._errors[self._next_error_id] = entry
            self._next_error_id += 1

    def _attempt(self, job: _Job, attempt: int) -> tuple[int | None, str | None]:
        body = json.dumps(job.event, separators=(",", ":")).encode("utf-8")
        status: int | None
        error: str | None = None
        try:
            status = self.transport(job.endpoint.url, body, self.settings.timeout)
        except Exception as exc:  # timeouts, refused connections, TLS errors
            status, error = None, f"{type(exc).__name__}: {exc}"
        if status is not None and not _ok(status):
            error = f"HTTP {status}"
        with self._lock:
            self._deliveries.append({
                "endpoint_id": job.endpoint.id,
                "url": job.endpoint.url,
                "BusinessEventId": job.event["BusinessEventId"],
                "EventId": job.event["EventId"],
                "ControlNumber": job.event["ControlNumber"],
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
                entry["endpoint_id"], entry["url"], None, None, _utc_iso())
            self._enqueue(_Job(endpoint, entry["payload"]))
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


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _http_post(url: str, body: bytes, timeout: float) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "Dynamics365-BusinessEvents-Emulator"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
