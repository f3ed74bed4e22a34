"""Records that could not be synced are parked: kept in Table Storage with their key, direction, payload,
error class and the server's reason, until they land. One place for both directions and the worker."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared.http.errors import ApiError, is_fatal
from shared.mapping.model import Direction
from shared.mapping.plan import MappingError, Plan
from shared.observability import correlation_id, log
from shared.state.store import ConcurrencyConflict, StateStore, decode_key, parked_key
from shared.sync.runs import ALL, Outcome, scope_of
from shared.telemetry import metrics

logger = logging.getLogger("loyaltysync.sync")
UNEXPECTED = "unexpected"  # a fault of this code, not of the data or the services: not retried by the timer


def error_class_of(exc: BaseException) -> str:
    """The class an operator sees on a parked record (docs/operations.md: Failed records)."""
    if isinstance(exc, ApiError):
        return exc.error_class
    if isinstance(exc, MappingError):
        return "validation"
    if isinstance(exc, ConcurrencyConflict):
        return "conflict"
    return UNEXPECTED


def reason_of(exc: BaseException) -> str:
    """The readable reason: the server's own message (F&O's Infolog) for an API error."""
    if isinstance(exc, ApiError):
        return exc.reason
    if isinstance(exc, (MappingError, ConcurrencyConflict)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # a fault of this code: the exception's type says most


class Parking:
    """Parks and unparks one template's records in one direction. ``plan`` (optional) tells the scope of a
    Commerce -> Dataverse key (its legal entity) for ``loyaltysync.records``; without it the scope is ``all``."""

    def __init__(self, state: StateStore, template: str, direction: Direction, *, plan: Plan | None = None) -> None:
        self.state = state
        self.template = template
        self.direction = direction
        self.plan = plan

    def scope_of_key(self, key: str) -> str:
        """The run scope a parked key belongs to (the legal entity of a company-specific template's key)."""
        if self.plan is None or self.direction is not Direction.TO_DATAVERSE:
            return ALL
        try:
            return scope_of(self.plan.company_of(decode_key(key)))
        except (IndexError, ValueError):  # a key parked under a digest (no usable key): no company to name
            return ALL

    def row_key(self, key: str) -> str:
        """The parked row's key: Dataverse -> Commerce records carry a direction prefix (``%in%``)."""
        return key if self.direction is Direction.TO_DATAVERSE else parked_key(key, self.direction.value)

    def park(self, key: str, exc: BaseException, source: str, payload: Mapping[str, Any] | None, *,
             correlation: str | None = None) -> Outcome:
        """Keep the record with its reason. A fatal error (authentication: every record would fail the same
        way) is not parked but raised, so the run aborts: the one place that decides it."""
        if is_fatal(exc):
            raise exc
        error_class, reason = error_class_of(exc), reason_of(exc)
        attempts = self.state.parked.park(self.template, self.row_key(key), direction=self.direction.value,
                                   error_class=error_class, error=reason, source=source,
                                   correlation_id=correlation or correlation_id(),
                                   payload=dict(payload) if payload is not None else None)
        log(logger, logging.WARNING, "record parked for retry", template=self.template, key=key,
            direction=self.direction.value, error_class=error_class, attempts=attempts, source=source, error=reason)
        metrics.record_outcome(self.template, self.direction.value, self.scope_of_key(key), Outcome.PARKED,
                               error_class=error_class)
        self.state.auto_pause.failed(self.template, error_class, reason)
        return Outcome.PARKED

    def unpark(self, key: str) -> None:
        self.state.parked.unpark(self.template, self.row_key(key))
