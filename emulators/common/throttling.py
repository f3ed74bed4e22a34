"""Service-protection limits shared by both emulators (docs/protocol-notes.md §2.12 Dataverse, §3.5 F&O).

Both services enforce, **per user per web server** over a **sliding window** (300 s): a number of
requests (6,000), a combined execution time (1,200 s) and a number of concurrent requests
(52). Over a limit the request gets ``429`` with ``Retry-After`` (seconds), and the delay
grows when the client keeps sending. Request-count and execution-time limits are enforced
*after the fact* (a request is refused once the window already holds the limit);
concurrency errors are immediate.

Emulator model (one emulator = one web server; user = the bearer token):

* :class:`ServiceProtection`: the configuration (limits scaled down for tests; ``None``
  disables one measure) plus a simulated server time per request and per record written
  (really slept, so the execution time is real and measurable).
* :class:`ServiceProtectionTracker`: the sliding windows and counters; :meth:`admit` returns
  an :class:`Admission` or a :class:`Throttle` (reason + Retry-After).
* :func:`run_protected`: wraps one route call (admission, buffered response, simulated
  time, accounting); each emulator supplies its own 429 error (codes/messages differ).

``Retry-After`` (inferred algorithm): the whole seconds until enough of the window expires
to admit one more request (at least 1); a request sent while the previous ``Retry-After`` has
not elapsed is refused again with the remaining time plus ``retry_after_growth_s`` times the
number of such early retries. Concurrency 429s carry ``concurrency_retry_after_s``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from .server import EmulatorHTTPError, EmulatorRequestHandler, Route

__all__ = [
    "Admission",
    "Reason",
    "ServiceProtection",
    "ServiceProtectionTracker",
    "Throttle",
    "add_cli_arguments",
    "admin_routes",
    "bearer_user",
    "from_cli_arguments",
    "run_protected",
]


def format_limit(value: float) -> str:
    """A limit as the services print it: 300, not 300.0."""
    return str(int(value)) if float(value).is_integer() else str(value)


class Reason(StrEnum):
    """Which limit refused a request."""

    REQUESTS = "requests"
    EXECUTION_TIME = "execution_time"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True)
class ServiceProtection:
    """Service-protection settings; the defaults are the documented production limits.

    ``window_s``: sliding window; ``max_requests`` / ``max_execution_s`` / ``max_concurrent``:
    the three limits (``None`` = not enforced); ``server_ms_per_request`` and
    ``server_ms_per_record``: simulated server time, slept before the response is sent and
    counted as execution time (a record = one row written: a single write, each successful
    write inside ``$batch``, each bulk target); ``dop_hint``: the ``x-ms-dop-hint`` value
    (``None`` = the server's own setting).
    """

    window_s: float = 300.0
    max_requests: int | None = 6000
    max_execution_s: float | None = 1200.0
    max_concurrent: int | None = 52
    server_ms_per_request: float = 0.0
    server_ms_per_record: float = 0.0
    retry_after_growth_s: int = 1
    concurrency_retry_after_s: int = 1
    dop_hint: int | None = None

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        for name in ("max_requests", "max_execution_s", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None")
        for name in ("server_ms_per_request", "server_ms_per_record", "retry_after_growth_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.concurrency_retry_after_s < 1:
            raise ValueError("concurrency_retry_after_s must be >= 1")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceProtection:
        """Build from a JSON object (admin route); unknown fields are a ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError("The service-protection configuration must be a JSON object.")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"Unknown service-protection fields {sorted(unknown)}; allowed: {sorted(names)}.")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def simulated_seconds(self, records: int) -> float:
        return (self.server_ms_per_request + self.server_ms_per_record * records) / 1000.0


@dataclass(frozen=True)
class Throttle:
    """A refused request: the limit that was hit and the ``Retry-After`` seconds."""

    reason: Reason
    retry_after: int


@dataclass
class Admission:
    """An admitted request; pass it back to :meth:`ServiceProtectionTracker.finish`."""

    user: str
    start: float
    burst_remaining: int | None
    time_remaining_s: float | None


@dataclass
class _UserWindow:
    requests: deque[float] = field(default_factory=deque)  # admission times
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (end time, seconds)
    in_flight: int = 0
    blocked_until: float = 0.0
    early_retries: int = 0
    last_reason: Reason = Reason.REQUESTS


def bearer_user(authorization: str | None) -> str | None:
    """The user identity of a request: its bearer token (``None`` without one)."""
    match = re.fullmatch(r"\s*Bearer\s+(\S+)\s*", authorization or "", flags=re.IGNORECASE)
    return match.group(1) if match else None


def _user_label(user: str) -> str:
    return "user-" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:10]


class ServiceProtectionTracker:
    """Per-user sliding windows and global counters (thread-safe)."""

    def __init__(
        self,
        config: ServiceProtection,
        *,
        clock: Callable[[], float] = time.monotonic,
        codes: Mapping[Reason, str] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._codes = dict(codes or {})
        self._lock = threading.Lock()
        self._users: dict[str, _UserWindow] = {}
        self._counters: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._execution_s = 0.0

    # -- admission -------------------------------------------------------------------------
    def admit(self, user: str) -> Admission | Throttle:
        """Admit a request of ``user`` (counting it) or refuse it with a :class:`Throttle`."""
        cfg = self.config
        with self._lock:
            now = self._clock()
            state = self._users.setdefault(user, _UserWindow())
            self._prune(state, now)
            throttle = self._check(state, now)
            if throttle is not None:
                self._throttled[throttle.reason.value] += 1
                return throttle
            state.requests.append(now)
            state.in_flight += 1
            self._counters["requests"] += 1
            self._counters["max_concurrent_seen"] = max(self._counters["max_concurrent_seen"], state.in_flight)
            burst = None if cfg.max_requests is None else max(0, cfg.max_requests - len(state.requests))
            used = sum(seconds for _, seconds in state.executions)
            remaining = None if cfg.max_execution_s is None else max(0.0, cfg.max_execution_s - used)
            return Admission(user, now, burst, remaining)

    def _check(self, state: _UserWindow, now: float) -> Throttle | None:
        cfg = self.config
        if cfg.max_concurrent is not None and state.in_flight >= cfg.max_concurrent:
            return Throttle(Reason.CONCURRENCY, cfg.concurrency_retry_after_s)  # immediate (§2.12)
        if now < state.blocked_until:
            # The client did not wait for Retry-After: refuse again, with a longer delay.
            state.early_retries += 1
            wait = math.ceil(state.blocked_until - now) + cfg.retry_after_growth_s * state.early_retries
            state.blocked_until = now + wait
            return Throttle(state.last_reason, wait)
        state.early_retries = 0
        wait_s: float | None = None
        reason = Reason.REQUESTS
        if cfg.max_requests is not None and len(state.requests) >= cfg.max_requests:
            # Enough of the oldest requests must leave the window to get below the limit.
            wait_s = state.requests[len(state.requests) - cfg.max_requests] + cfg.window_s - now
        elif cfg.max_execution_s is not None:
            total = sum(seconds for _, seconds in state.executions)
            if total >= cfg.max_execution_s:
                reason = Reason.EXECUTION_TIME
                for ended, seconds in state.executions:
                    total -= seconds
                    if total < cfg.max_execution_s:
                        wait_s = ended + cfg.window_s - now
                        break
        if wait_s is None:
            return None
        retry_after = max(1, math.ceil(wait_s))
        state.blocked_until = now + retry_after
        state.last_reason = reason
        return Throttle(reason, retry_after)

    def _prune(self, state: _UserWindow, now: float) -> None:
        horizon = now - self.config.window_s
        while state.requests and state.requests[0] <= horizon:
            state.requests.popleft()
        while state.executions and state.executions[0][0] <= horizon:
            state.executions.popleft()

    def elapsed(self, admission: Admission) -> float:
        """Seconds since ``admission`` (on the tracker's clock)."""
        return max(0.0, self._clock() - admission.start)

    def finish(self, admission: Admission, *, records: int = 0) -> float:
        """Account the end of an admitted request; returns its execution time (s)."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - admission.start)
            state = self._users.setdefault(admission.user, _UserWindow())
            state.in_flight = max(0, state.in_flight - 1)
            state.executions.append((now, elapsed))
            self._counters["records_written"] += records
            self._execution_s += elapsed
            return elapsed

    # -- admin -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every window and zero the counters (the configuration is kept)."""
        with self._lock:
            self._users.clear()
            self._counters.clear()
            self._throttled.clear()
            self._execution_s = 0.0

    def throttled(self) -> dict[str, int]:
        """429s by reason."""
        with self._lock:
            return dict(self._throttled)

    def snapshot(self) -> dict[str, Any]:
        """Configuration, counters and per-user windows (users as hashed labels)."""
        with self._lock:
            now = self._clock()
            users: dict[str, Any] = {}
            for user, state in self._users.items():
                self._prune(state, now)
                users[_user_label(user)] = {
                    "requests_in_window": len(state.requests),
                    "execution_s_in_window": round(sum(s for _, s in state.executions), 3),
                    "in_flight": state.in_flight,
                    "blocked_for_s": round(max(0.0, state.blocked_until - now), 3),
                }
            by_reason = dict(self._throttled)
            return {
                "enabled": True,
                "config": self.config.as_json(),
                "requests": self._counters["requests"],
                "records_written": self._counters["records_written"],
                "execution_s": round(self._execution_s, 3),
                "max_concurrent_seen": self._counters["max_concurrent_seen"],
                "throttled": sum(by_reason.values()),
                "throttled_by_reason": by_reason,
                "throttled_by_code": {self._codes.get(Reason(r), r): n for r, n in by_reason.items()},
                "users": users,
            }


def run_protected(
    handler: EmulatorRequestHandler,
    tracker: ServiceProtectionTracker,
    user: str,
    call: Callable[[], None],
    *,
    on_throttle: Callable[[Throttle], EmulatorHTTPError],
    on_admit: Callable[[Admission], None] | None = None,
    records: Callable[[], int] = lambda: 0,
) -> None:
    """Run one route call under service protection.

    Refused → ``raise on_throttle(throttle)``. Admitted → ``on_admit`` (e.g. to prepare
    rate-limit headers), the call runs with its response buffered, the simulated server time
    (``server_ms_per_request + server_ms_per_record * records()``) minus the time already
    spent is slept, the execution time is accounted, then the response is sent.
    """
    verdict = tracker.admit(user)
    if isinstance(verdict, Throttle):
        raise on_throttle(verdict)
    count = 0
    try:
        if on_admit is not None:
            on_admit(verdict)
        output = handler.call_captured(call)
        count = records()
        remaining = tracker.config.simulated_seconds(count) - tracker.elapsed(verdict)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        tracker.finish(verdict, records=count)
    handler.wfile.write(output)


# -- admin routes (both emulators) -------------------------------------------------------
# The server object carries ``service_protection: ServiceProtectionTracker | None``.


def _tracker(handler: EmulatorRequestHandler) -> ServiceProtectionTracker | None:
    tracker = getattr(handler.server, "service_protection", None)
    return tracker if isinstance(tracker, ServiceProtectionTracker) else None


def admin_routes(codes: Mapping[Reason, str]) -> list[Route]:
    """``/_emulator/service-protection`` (no auth):

    * ``GET``: ``{"enabled": false, "config": null}`` or :meth:`ServiceProtectionTracker.snapshot`
      (config, ``requests``, ``records_written``, ``execution_s``, ``throttled``,
      ``throttled_by_reason``, ``throttled_by_code``, ``users``);
    * ``POST`` with a JSON :class:`ServiceProtection` (``{}`` = documented defaults): turn on
      or replace (fresh windows and counters); answers like ``GET``;
    * ``DELETE``: turn off; ``POST .../reset``: forget windows and zero counters.
    """

    def get(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
        tracker = _tracker(handler)
        body = tracker.snapshot() if tracker is not None else {"enabled": False, "config": None}
        handler.send_json(200, body, content_type="application/json")

    def configure(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
        try:
            config = ServiceProtection.from_json(json.loads(handler.body.decode("utf-8") or "{}"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EmulatorHTTPError(400, "", f"Invalid service-protection configuration: {exc}") from None
        handler.server.service_protection = ServiceProtectionTracker(config, codes=codes)  # type: ignore[attr-defined]
        get(handler, match)

    def disable(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
        handler.server.service_protection = None  # type: ignore[attr-defined]
        handler.send_empty(204)

    def reset(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
        tracker = _tracker(handler)
        if tracker is not None:
            tracker.reset()
        handler.send_empty(204)

    base = r"/_emulator/service-protection"
    return [
        Route.make("GET", base, "admin.service-protection", get, admin=True),
        Route.make("POST", base, "admin.service-protection.set", configure, admin=True),
        Route.make("DELETE", base, "admin.service-protection.off", disable, admin=True),
        Route.make("POST", base + r"/reset", "admin.service-protection.reset", reset, admin=True),
    ]


# -- command line (both emulators) -------------------------------------------------------

_CLI_FIELDS = {
    "sp_window_s": ("window_s", float),
    "sp_max_requests": ("max_requests", int),
    "sp_max_execution_s": ("max_execution_s", float),
    "sp_max_concurrent": ("max_concurrent", int),
    "sp_server_ms_per_request": ("server_ms_per_request", float),
    "sp_server_ms_per_record": ("server_ms_per_record", float),
}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``--service-protection`` (documented limits) and ``--sp-*`` overrides (any of them
    turns service protection on)."""
    group = parser.add_argument_group("service protection (off by default)")
    group.add_argument("--service-protection", action="store_true", help="enforce the per-user 429 limits")
    for dest, (name, kind) in _CLI_FIELDS.items():
        flag = "--" + dest.replace("_", "-")
        group.add_argument(flag, dest=dest, type=kind, default=None, help=f"ServiceProtection.{name}")


def from_cli_arguments(args: argparse.Namespace) -> ServiceProtection | None:
    """The :class:`ServiceProtection` the parsed arguments ask for, or ``None``."""
    overrides = {name: getattr(args, dest) for dest, (name, _) in _CLI_FIELDS.items() if getattr(args, dest) is not None}
    if not overrides and not getattr(args, "service_protection", False):
        return None
    return ServiceProtection(**overrides)
