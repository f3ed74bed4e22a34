"""Dataverse service protection limits and the Dataverse shape of throttling faults
(docs/protocol-notes.md §2.12, §2.9/§2.10 accounting, checklist §5.1).

Off by default: ``start_dataverse(service_protection=ServiceProtection(...))`` (or the admin
route ``POST /_emulator/service-protection``) turns it on. Then, per bearer token:

* over the request-count / execution-time limit → ``429`` + ``Retry-After`` with
  ``0x80072322`` / ``0x80072321`` (enforced after the fact), over the concurrency limit →
  ``0x80072326`` (immediate); messages as documented, with the configured numbers;
* every response carries ``x-ms-ratelimit-burst-remaining-xrm-requests`` (requests left in
  the window), ``x-ms-ratelimit-time-remaining-xrm-requests`` (execution seconds left in the
  live format of §2.12, ``1,200.00``: a grouping separator and two decimals, falling as the
  user's requests spend execution time) and ``x-ms-dop-hint``;
* a ``$batch`` or a bulk action is one request; its whole execution time counts, and each
  record it writes adds ``server_ms_per_record`` of simulated (slept) server time.

The 429 body shape is the one seen in public code (§2.12): ``{"error":{"code","message"}}``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from emulators.common import throttling
from emulators.common.faults import FaultRule
from emulators.common.server import EmulatorHTTPError, Route
from emulators.common.throttling import (
    Admission,
    Reason,
    ServiceProtection,
    ServiceProtectionTracker,
    Throttle,
    bearer_user,
    run_protected,
)

if TYPE_CHECKING:
    from .server import DataverseRequestHandler

__all__ = [
    "CODES",
    "ServiceProtection",
    "admin_routes",
    "fault_error",
    "invoke_protected",
    "make_tracker",
    "throttle_error",
]

#: §2.12 error codes by limit.
CODES: dict[Reason, str] = {
    Reason.REQUESTS: "0x80072322",
    Reason.EXECUTION_TIME: "0x80072321",
    Reason.CONCURRENCY: "0x80072326",
}
#: The documented production limits, used in the texts of injected 429 faults.
_DEFAULTS = ServiceProtection()
#: Generic platform failure (seen in public code for unexpected server errors, §2.2).
UNEXPECTED_ERROR = "0x80040216"
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def message(reason: Reason, config: ServiceProtection) -> str:
    """The §2.12 message for ``reason`` with the configured limits."""
    window = throttling.format_limit(config.window_s)
    if reason is Reason.REQUESTS:
        return f"Number of requests exceeded the limit of {config.max_requests} over time window of {window} seconds."
    if reason is Reason.EXECUTION_TIME:
        limit_ms = round((config.max_execution_s or 0) * 1000)
        return (
            f"Combined execution time of incoming requests exceeded limit of {limit_ms:,} milliseconds over time "
            f"window of {window} seconds. Decrease number of concurrent requests or reduce the duration of requests "
            f"and try again later."
        )
    return f"Number of concurrent requests exceeded the limit of {config.max_concurrent}."


def throttle_error(config: ServiceProtection, throttle: Throttle) -> EmulatorHTTPError:
    """``429`` + integer ``Retry-After`` + the documented code and message."""
    return EmulatorHTTPError(
        429, CODES[throttle.reason], message(throttle.reason, config), headers={"Retry-After": str(throttle.retry_after)}
    )


def fault_error(rule: FaultRule) -> EmulatorHTTPError:
    """The Dataverse error for a ``status`` (or ``batch_partial``) fault rule: 429 → the
    §2.12 code/message of ``rule.reason`` (default: request count, documented numbers);
    500 → ``0x80040216`` "An unexpected error occurred."; other statuses → code ``""`` and a
    generic text (inferred). ``code``/``message`` of the rule override; ``Retry-After`` when
    the rule sets ``retry_after``."""
    status = rule.status or 503
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
    if status == 429:
        reason = Reason(rule.reason) if rule.reason in {r.value for r in Reason} else Reason.REQUESTS
        code, text = CODES[reason], message(reason, _DEFAULTS)
    elif status == 500:
        code, text = UNEXPECTED_ERROR, "An unexpected error occurred."
    elif status == 503:
        code, text = "", "The service is temporarily unavailable. Please try again later."  # inferred
    else:
        code, text = "", f"Fault injected by the emulator: HTTP {status}."
    return EmulatorHTTPError(status, rule.code if rule.code is not None else code, rule.message or text, headers=headers)


def make_tracker(config: ServiceProtection | None) -> ServiceProtectionTracker | None:
    return None if config is None else ServiceProtectionTracker(config, codes=CODES)


def records_of(handler: DataverseRequestHandler) -> int:
    """Rows written by a request: what the route reported (bulk, ``$batch``), else 1 for a
    successful single write."""
    if handler.records_written:
        return handler.records_written
    if handler.method in _WRITE_METHODS and 200 <= handler.response_status < 300 and handler.route_name != "$batch":
        return 1
    return 0


def _headers(handler: DataverseRequestHandler, config: ServiceProtection, admission: Admission | None) -> dict[str, str]:
    headers = {"x-ms-dop-hint": str(config.dop_hint if config.dop_hint is not None else handler.server.dop_hint)}
    if admission is not None and admission.burst_remaining is not None:
        headers["x-ms-ratelimit-burst-remaining-xrm-requests"] = str(admission.burst_remaining)
    if admission is not None and admission.time_remaining_s is not None:
        headers["x-ms-ratelimit-time-remaining-xrm-requests"] = f"{admission.time_remaining_s:,.2f}"
    return headers


def invoke_protected(handler: DataverseRequestHandler, route: Route, match: re.Match[str]) -> None:
    """The Dataverse ``invoke_route``: the route under service protection when it is on."""
    tracker = handler.server.service_protection
    user = bearer_user(handler.header("Authorization"))
    if tracker is None or user is None:
        route.handler(handler, match)
        return
    config = tracker.config

    def on_admit(admission: Admission) -> None:
        handler.extra_response_headers = _headers(handler, config, admission)

    def on_throttle(throttle: Throttle) -> EmulatorHTTPError:
        handler.extra_response_headers = _headers(handler, config, None)
        return throttle_error(config, throttle)

    run_protected(
        handler,
        tracker,
        user,
        lambda: route.handler(handler, match),
        on_throttle=on_throttle,
        on_admit=on_admit,
        records=lambda: records_of(handler),
    )


def admin_routes() -> list[Route]:
    """``/_emulator/service-protection`` admin routes (see :func:`throttling.admin_routes`)."""
    return throttling.admin_routes(CODES)
