"""F&O service protection and throttling faults (docs/protocol-notes.md §3.5, checklist §5.2).

Two knobs, both off by default:

* **User-based limits** (per user = bearer token, sliding window): the same engine as the
  Dataverse emulator (:mod:`emulators.common.throttling`), turned on with
  ``start_commerce(service_protection=ServiceProtection(...))``, ``--sp-*`` command-line flags
  or ``POST /_emulator/service-protection``. Over a limit: ``429`` + ``Retry-After``
  (integer seconds, growing while the client keeps sending) and the exact §3.5 messages
  (Microsoft's typo "exeeded" included), with the configured numbers.
* **Fault rules** (``POST /_emulator/faults``, :mod:`emulators.common.faults`): a ``status``
  rule with ``status: 429`` answers the §3.5 message of its ``reason``: ``requests``
  (default), ``execution_time``, ``concurrency`` or ``resource`` (resource-based throttling,
  "system experiencing high resource utilization"), with the documented default limits.

F&O documents no 429 body or headers (§7 q.3): the body is the emulator's usual F&O error
shape ``{"error":{"code":"","message":"..."}}`` (inferred) and only ``Retry-After`` is sent.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from emulators.common import throttling
from emulators.common.faults import FaultRule
from emulators.common.server import EmulatorHTTPError, Route
from emulators.common.throttling import Reason, ServiceProtection, ServiceProtectionTracker, Throttle, bearer_user

if TYPE_CHECKING:
    from .server import CommerceRequestHandler

__all__ = ["RESOURCE_MESSAGE", "ServiceProtection", "admin_routes", "fault_error", "invoke_protected", "make_tracker"]

#: §3.5 resource-based (environment-wide) throttling message.
RESOURCE_MESSAGE = "This request could not be processed at this time due to system experiencing high resource utilization."
_DEFAULTS = ServiceProtection()


def message(reason: Reason, config: ServiceProtection) -> str:
    """The exact §3.5 user-based messages, with the configured limits."""
    window = throttling.format_limit(config.window_s)
    if reason is Reason.REQUESTS:
        return f"Number of requests exeeded the limit of {config.max_requests} over the time window of {window} seconds."
    if reason is Reason.EXECUTION_TIME:
        limit = throttling.format_limit(config.max_execution_s or 0)
        return (
            f"Combined execution time of incoming requests exceeded limit of {limit} "
            f"seconds over time window of {window} seconds. Decrease number of concurrent requests or reduce the "
            f"duration of requests and try again later."
        )
    return f"Number of concurrent requests exceeded the limit of {config.max_concurrent}."


def throttle_error(config: ServiceProtection, throttle: Throttle) -> EmulatorHTTPError:
    return EmulatorHTTPError(429, "", message(throttle.reason, config), headers={"Retry-After": str(throttle.retry_after)})


def fault_error(rule: FaultRule) -> EmulatorHTTPError:
    """F&O error for a ``status`` fault rule (see module doc); 500 → the generic
    "An error has occurred." (§3.4); other statuses → a generic text (inferred)."""
    status = rule.status or 503
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
    if status == 429:
        if rule.reason == "resource":
            text = RESOURCE_MESSAGE
        else:
            reason = Reason(rule.reason) if rule.reason in {r.value for r in Reason} else Reason.REQUESTS
            text = message(reason, _DEFAULTS)
    elif status == 500:
        text = "An error has occurred."
    elif status == 503:
        text = "The service is unavailable."  # inferred
    else:
        text = f"Fault injected by the emulator: HTTP {status}."
    return EmulatorHTTPError(status, rule.code or "", rule.message or text, headers=headers)


def make_tracker(config: ServiceProtection | None) -> ServiceProtectionTracker | None:
    return None if config is None else ServiceProtectionTracker(config)


def invoke_protected(handler: CommerceRequestHandler, route: Route, match: re.Match[str]) -> None:
    """The Commerce ``invoke_route``: user-based limits around every ``/data`` route."""
    tracker = handler.server.service_protection
    user = bearer_user(handler.header("Authorization"))
    if tracker is None or user is None:
        route.handler(handler, match)
        return
    config = tracker.config
    throttling.run_protected(
        handler,
        tracker,
        user,
        lambda: route.handler(handler, match),
        on_throttle=lambda throttle: throttle_error(config, throttle),
    )


def admin_routes() -> list[Route]:
    """``/_emulator/service-protection`` (see :func:`emulators.common.throttling.admin_routes`)."""
    return throttling.admin_routes({})
