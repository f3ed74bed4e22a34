"""How a chunk of records falls back when Dataverse refuses it as a whole: a pure decision, unit-tested
without servers (``tests/shared/sync/test_fallback.py``)."""

from __future__ import annotations

from enum import StrEnum

from shared.http.errors import ApiError, ThrottledError, TransportError


class Step(StrEnum):
    BULK = "bulk"  # one UpsertMultiple request: all-or-nothing on standard tables (docs/protocol-notes.md §2.10)
    BATCH = "batch"  # one $batch, a part per record, continue-on-error: only the bad records fail
    SINGLE = "single"  # one request per record


_FINER = {Step.BULK: Step.BATCH, Step.BATCH: Step.SINGLE}


def next_step(step: Step, error: ApiError) -> Step | None:
    """After ``step`` failed as a whole with ``error``: the finer step to try, or None when every record of
    the chunk keeps ``error`` (and is parked). Throttling and transport failures that outlasted the HTTP
    core's retries never fall back: more, smaller requests would only deepen them. Fatal errors (auth)
    never get here: they abort the run."""
    if error.fatal:
        raise error
    if isinstance(error, (ThrottledError, TransportError)):
        return None
    return _FINER.get(step)


def bulk_refused_by_table(step_failed: Step | None, results: list[ApiError | None]) -> bool:
    """A bulk request refused while its records then all succeeded one way or another: the table (not the
    data) refused the bulk message (docs/protocol-notes.md §2.10: not every table supports them)."""
    return step_failed is Step.BULK and all(result is None for result in results)
