"""Correlation ids and structured log lines.

Every log line of a sync carries ``correlation_id`` (the Functions invocation id, or a new GUID for
command-line runs) so one record's path can be followed across the trigger, both API calls and Table
Storage. Lines are ``message key=value ...`` so they read well in Application Insights traces and in a
terminal alike; the same fields ride along in ``extra`` for structured handlers.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")


def correlation_id() -> str:
    value = _correlation_id.get()
    if not value:
        value = str(uuid.uuid4())
        _correlation_id.set(value)
    return value


@contextlib.contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    token = _correlation_id.set(value or str(uuid.uuid4()))
    try:
        yield _correlation_id.get()
    finally:
        _correlation_id.reset(token)


def _fmt(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log ``message`` with ``key=value`` fields and the current correlation id."""
    if not logger.isEnabledFor(level):
        return
    fields = {"correlation_id": correlation_id(), **fields}
    suffix = " ".join(f"{key}={_fmt(value)}" for key, value in fields.items())
    logger.log(level, "%s %s", message, suffix, extra={"sync": fields})
