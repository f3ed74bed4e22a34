"""Every instrument of the app, with the functions the sync records through (docs/operations.md: Metrics and traces).

Instruments come from the process's ``MeterProvider``: the Azure Monitor one when ``setup.configure`` found a
connection string, else OpenTelemetry's no-op default (recording costs a function call). ``bind`` points
them at another provider (tests: one with an ``InMemoryMetricReader``). Names and attributes are a contract
with the alert rules in ``infra/``: change them together.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

METER_NAME = "loyaltysync"

# What happened to one record, as ``loyaltysync.records`` counts it: the sync's outcomes folded onto the
# values the alert rules use (a created record is written; a record that was only read is counted by ``read``).
RECORD_OUTCOMES: Mapping[str, str] = {"written": "written", "created": "written", "unchanged": "unchanged",
                                      "deleted": "deleted", "parked": "parked", "conflict": "conflict"}
READ = "read"
# Outcomes of a callback request (``loyaltysync.callbacks``, ``loyaltysync.callback.ack_latency``).
ACCEPTED, DUPLICATE, IGNORED, REJECTED, FAILED = "accepted", "duplicate", "ignored", "rejected", "failed"
# The kinds of backlog ``loyaltysync.backlog`` reports.
QUEUED, POISON, HELD = "queued", "poison", "held"


class InFlight(Protocol):
    """What the limiter gauge reads: the number of requests a limiter has let through and not yet released."""

    in_flight: int


@dataclass
class Snapshot:
    """The last sample of storage (``sampling``): observable gauges report it while it is fresh."""

    backlog: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    parked: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    watermark_age: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    taken_monotonic: float = 0.0


class Gauges:
    """The state behind the observable gauges: limiters to read, and the last storage sample."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: list[tuple[str, weakref.ref[InFlight]]] = []
        self.snapshot: Snapshot | None = None
        self.max_age_s = 900.0  # a sample older than this is not reported (the sampling instance stopped)
        self.monotonic = time.monotonic

    def watch(self, api: str, limiter: InFlight) -> None:
        with self._lock:
            self._limiters = [(a, ref) for a, ref in self._limiters if ref() is not None]
            self._limiters.append((api, weakref.ref(limiter)))

    def in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[str, int] = {}
        with self._lock:
            for api, ref in self._limiters:
                limiter = ref()
                if limiter is not None:
                    totals[api] = totals.get(api, 0) + limiter.in_flight
        return [Observation(value, {"api": api}) for api, value in totals.items()]

    def _fresh(self) -> Snapshot | None:
        snapshot = self.snapshot
        if snapshot is None or self.monotonic() - snapshot.taken_monotonic > self.max_age_s:
            return None
        return snapshot

    def backlog(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._fresh()
        return [Observation(v, a) for v, a in snapshot.backlog] if snapshot else []

    def parked(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._fresh()
        return [Observation(v, a) for v, a in snapshot.parked] if snapshot else []

    def watermark_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._fresh()
        return [Observation(v, a) for v, a in snapshot.watermark_age] if snapshot else []


class Tally:
    """Counts kept in the process and reported as an observable counter's running totals: recording is a dict
    update (about 0.5 µs) instead of an SDK ``Counter.add`` (about 10 µs, measured), which a scan pays twice per
    record (read, then its outcome). Totals are cumulative, as an observable counter's must be."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[tuple[str, str], ...], int] = {}

    def add(self, count: int, attributes: tuple[tuple[str, str], ...]) -> None:
        with self._lock:
            self._counts[attributes] = self._counts.get(attributes, 0) + count

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            totals = list(self._counts.items())
        return [Observation(value, dict(attributes)) for attributes, value in totals]


class Instruments:
    """The instruments, created once per meter."""

    def __init__(self, meter: Meter, gauges: Gauges) -> None:
        self.records = Tally()
        meter.create_observable_counter(
            "loyaltysync.records", [self.records.observe], unit="{record}",
            description="Records by what happened to them: read, written, unchanged, deleted, parked, conflict")
        self.runs = meter.create_counter("loyaltysync.runs", unit="{run}", description="Sync runs by final status")
        self.http_requests = meter.create_counter(
            "loyaltysync.http.requests", unit="{request}", description="HTTP responses from Dataverse and Commerce")
        self.http_throttled = meter.create_counter(
            "loyaltysync.http.throttled", unit="{response}", description="429 responses (service protection)")
        self.http_retry_wait = meter.create_histogram(
            "loyaltysync.http.retry_wait", unit="s", description="Time waited before retrying a request")
        self.callback_ack_latency = meter.create_histogram(
            "loyaltysync.callback.ack_latency", unit="ms", description="Time from a callback's arrival to its answer")
        self.callbacks = meter.create_counter(
            "loyaltysync.callbacks", unit="{callback}", description="Callbacks by result")
        self.work_items = meter.create_counter(
            "loyaltysync.work_items", unit="{item}",
            description="Callback work items the queue worker finished, by outcome (written, duplicate, held, ...)")
        self.refresh_requests = meter.create_counter(
            "loyaltysync.refresh.requests", unit="{request}",
            description="Requests for a scan of a template (a callback naming no record found), by reason and by "
                        "outcome: pending (made a refresh pending), coalesced (joined one), covered (a scan since)")
        self.refreshes = meter.create_counter(
            "loyaltysync.refreshes", unit="{refresh}",
            description="Pending refreshes taken up, by outcome: started, busy (a scan held the lease), covered")
        self.lag = meter.create_histogram(
            "loyaltysync.lag", unit="s", description="From the event's time in Commerce to the record written in Dataverse")
        meter.create_observable_gauge("loyaltysync.limiter.in_flight", [gauges.in_flight], unit="{request}",
                                      description="Requests the adaptive limiters have in flight")
        meter.create_observable_gauge("loyaltysync.backlog", [gauges.backlog], unit="{message}",
                                      description="Work waiting: queued, poison and held messages (sampled)")
        meter.create_observable_gauge("loyaltysync.parked", [gauges.parked], unit="{record}",
                                      description="Records parked now (sampled)")
        meter.create_observable_gauge("loyaltysync.watermark.age", [gauges.watermark_age], unit="s",
                                      description="Time since the last successful run of a scope started (sampled)")


GAUGES = Gauges()
_lock = threading.Lock()
_bound: Instruments | None = None


def bind(provider: MeterProvider | None = None) -> Instruments:
    """Create the instruments on ``provider`` (None: the global one) and record through them from now on."""
    global _bound
    meter = (provider or metrics.get_meter_provider()).get_meter(METER_NAME)
    with _lock:
        _bound = Instruments(meter, GAUGES)
        return _bound


def instruments() -> Instruments:
    bound = _bound  # one read of a module global: no lock on the per-record path
    return bound if bound is not None else bind()


# -- what the sync records -----------------------------------------------------------------------------


def record_outcome(template: str, direction: str, scope: str, outcome: str, *, error_class: str | None = None,
                   count: int = 1) -> None:
    """One record's outcome (or ``count`` records read). Outcomes that are not about a record (held, duplicate,
    refreshed, ...) are not counted here."""
    value = READ if outcome == READ else RECORD_OUTCOMES.get(str(outcome))
    if value is None or count <= 0:
        return
    attributes: tuple[tuple[str, str], ...] = (("template", template), ("direction", direction), ("scope", scope),
                                               ("outcome", value))
    if value == "parked":
        attributes += (("error_class", error_class or "unknown"),)
    instruments().records.add(count, attributes)


def record_run(template: str, direction: str, scope: str, status: str) -> None:
    instruments().runs.add(1, {"template": template, "direction": direction, "scope": scope, "status": str(status)})


def record_response(api: str, status_code: int) -> None:
    """One HTTP response (every attempt, retried or not)."""
    bound = instruments()
    bound.http_requests.add(1, {"api": api, "status_code": status_code})
    if status_code == 429:
        bound.http_throttled.add(1, {"api": api})


def record_retry_wait(api: str, seconds: float) -> None:
    instruments().http_retry_wait.record(max(seconds, 0.0), {"api": api})


def record_callback(template: str, kind: str, result: str, latency_ms: float | None) -> None:
    """One callback answered (``latency_ms``), or dropped by the worker as a duplicate (None)."""
    bound = instruments()
    bound.callbacks.add(1, {"template": template, "result": result})
    if latency_ms is not None:
        bound.callback_ack_latency.record(max(latency_ms, 0.0), {"template": template, "kind": kind, "result": result})


def record_work_item(template: str, kind: str, outcome: str) -> None:
    instruments().work_items.add(1, {"template": template, "kind": kind, "outcome": str(outcome)})


def record_refresh_request(template: str, reason: str, outcome: str) -> None:
    """One request for a scan of the template, whether it starts one or not."""
    instruments().refresh_requests.add(1, {"template": template, "reason": reason, "outcome": outcome})


def record_refresh(template: str, outcome: str) -> None:
    instruments().refreshes.add(1, {"template": template, "outcome": outcome})


def record_lag(template: str, direction: str, seconds: float) -> None:
    instruments().lag.record(max(seconds, 0.0), {"template": template, "direction": direction})


def watch_limiter(api: str, limiter: InFlight) -> None:
    """Report ``limiter.in_flight`` as ``loyaltysync.limiter.in_flight`` (held weakly)."""
    GAUGES.watch(api, limiter)
