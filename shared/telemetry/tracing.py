"""The app's spans: ``sync.run`` (one scope's run), ``sync.range`` (one key range or page task) and
``sync.callback`` (one callback request). Each carries the correlation id (the Functions invocation id, as
every log line does, ``shared.observability``); spans opened while another is current are its children, so
a run's in-process ranges nest under it. A fanned-out range runs in another invocation: it names its run by
``run_id`` instead.

The run's bookkeeping (``shared.sync.runs``) annotates the current ``sync.run`` span with what only it
knows (run id, mode, status, counts) through ``annotate_run``; the span's lifetime is the trigger's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from shared.observability import correlation_id

TRACER_NAME = "loyaltysync"
RUN, RANGE, CALLBACK = "sync.run", "sync.range", "sync.callback"

_lock = threading.Lock()
_provider: TracerProvider | None = None


def bind(provider: TracerProvider | None = None) -> None:
    """Create spans with ``provider`` (None: the global one) from now on."""
    global _provider
    with _lock:
        _provider = provider


def tracer() -> Tracer:
    with _lock:
        provider = _provider
    return (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (bool, int, float)) else str(v) for k, v in attributes.items() if v is not None}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span named ``name``, current inside the block, with ``correlation_id`` and ``attributes``; an exception
    marks it as an error (and is raised on)."""
    with tracer().start_as_current_span(name, attributes=_clean({"correlation_id": correlation_id(), **attributes}),
                                        record_exception=True, set_status_on_exception=True) as current:
        yield current


def run_span(template: str, direction: str, scope: str, **attributes: Any) -> contextlib.AbstractContextManager[Span]:
    """``sync.run`` for one scope; ``run_id`` and the outcome are added by ``annotate_run`` once known."""
    return span(RUN, template=template, direction=direction, scope=scope, **attributes)


def range_span(template: str, scope: str, run_id: str, index: int, kind: str = "page") -> contextlib.AbstractContextManager[Span]:
    """``sync.range``: one key range (or delete check, delete pass) of run ``run_id``."""
    return span(RANGE, template=template, scope=scope, run_id=run_id, index=index, kind=kind)


def callback_span(template: str) -> contextlib.AbstractContextManager[Span]:
    return span(CALLBACK, template=template)


def _current_run() -> Span | None:
    """The current span when it is a recording ``sync.run`` (an SDK span has a ``name``; the no-op one does not)."""
    current = trace.get_current_span()
    return current if current.is_recording() and getattr(current, "name", None) == RUN else None


def annotate_run(**attributes: Any) -> None:
    """Add ``attributes`` to the current ``sync.run`` span, if the current span is one (no-op otherwise)."""
    current = _current_run()
    if current is not None:
        current.set_attributes(_clean(attributes))


def fail_run(reason: str) -> None:
    """Mark the current ``sync.run`` span as failed with ``reason`` (a run can fail without raising)."""
    current = _current_run()
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, reason))
