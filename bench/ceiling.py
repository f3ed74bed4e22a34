"""What a perfect client does with the emulated Dataverse budget: the yardstick of every ``ceiling_fraction`` the
benchmark prints (pinned by ``tests/bench/test_ceiling.py``, against the emulator's own admission rules).

A sync run is bounded by its work, not by the clock: it writes ``n`` records and stops. So the yardstick is time:
**the least time a perfect client needs to write the same ``n`` records** in requests of the same size, and the
fraction is that time over the run's (1.0: as fast as the budget allows; a perfect client scores 1.0 for every
``n`` and every run length). The perfect client keeps within the budget: it never draws a 429 and never lives on
the after-the-fact slack (Dataverse, and the emulator, refuse a request only once the window already holds the
limit, so requests in flight when it is reached finish and count on top of it: a client that counts on that
slack is not keeping the budget, and the fraction above 1.0 it would read is not merit).

What it can do, under the emulator's rules (``emulators/common/throttling.py``; inferred for Dataverse, whose
docs say "within a 5 minute sliding window" but not when a request is counted):

* a window admits ``window_budget_records``: the tighter of ``max_requests`` requests of ``bulk_size`` records
  and ``max_execution_s`` seconds at the server time per record the emulator counted;
* a request's execution time is counted when it *ends* and stays in the window for ``window_s``, so the room a
  request took is free again ``window_s`` plus its own duration after it was sent (the request count is
  counted at arrival: there the room is free again after ``window_s``);
* at most ``max_concurrent`` requests at once.

So it sends a window's budget at once (in rounds of ``max_concurrent``), the next one a period later, and the
last, partial, one when its period comes: ``(k - 1) * period + rounds * request_s`` for ``k`` budgets.

Why the earlier figures flattered: dividing the run's rate by the steady rate (one budget per window) credited the
client with the first window, which starts empty (1.21 for a 28 s run, which a perfect client reads 1.07 by that
rule), and ignored that a request holds its room for its own duration on top of the window. Counting one budget
for every window a run *begins* (the next try) fixed the first but charged a whole window for the records of a
last, partial one: a perfect client writing 6,001 records read 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def window_budget_records(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int) -> float:
    """Records one window admits: the tighter of ``max_requests`` requests of ``bulk_size`` records and
    ``max_execution_s`` seconds at the server time per record counted (``execution_s`` over ``records``)."""
    return min(_by_requests(protection, bulk_size), _by_time(protection, execution_s, records))


def _by_requests(protection: Mapping[str, Any], bulk_size: int) -> float:
    return float(protection["max_requests"]) * bulk_size


def _by_time(protection: Mapping[str, Any], execution_s: float, records: int) -> float:
    seconds_per_record = execution_s / records if records > 0 else 0.0
    return float(protection["max_execution_s"]) / seconds_per_record if seconds_per_record > 0 else math.inf


def request_seconds(bulk_size: int, execution_s: float, records: int) -> float:
    """The server time of one request of ``bulk_size`` records, at the time per record counted."""
    return execution_s / records * bulk_size if records > 0 else 0.0


def period_s(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int) -> float:
    """How soon a window's budget can be spent again: the window, plus a request's duration when the execution
    time binds (counted when a request ends); the window alone when the request count binds (counted at arrival)."""
    window = float(protection["window_s"])
    time_binds = _by_time(protection, execution_s, records) < _by_requests(protection, bulk_size)
    return window + request_seconds(bulk_size, execution_s, records) if time_binds else window


def perfect_seconds(written: int, protection: Mapping[str, Any], bulk_size: int, execution_s: float,
                    records: int) -> float:
    """The least time a client that keeps within the budget needs to write ``written`` records."""
    budget = window_budget_records(protection, bulk_size, execution_s, records)
    if written <= 0 or budget <= 0:
        return 0.0
    budgets = math.ceil(written / budget - 1e-9)
    last = round(written - (budgets - 1) * budget, 6)  # the last budget's records
    full, rest = divmod(last, bulk_size)
    sizes = [float(bulk_size)] * int(full) + ([rest] if rest > 1e-6 else [])
    concurrency = int(protection.get("max_concurrent") or len(sizes))
    # In rounds of ``concurrency`` requests; a round takes as long as its largest request.
    rounds = [max(sizes[i:i + concurrency]) for i in range(0, len(sizes), concurrency)]
    per_record = execution_s / records if records > 0 else 0.0
    return ((budgets - 1) * period_s(protection, bulk_size, execution_s, records)
            + sum(rounds) * per_record)


def perfect_records_per_s(written: int, protection: Mapping[str, Any], bulk_size: int, execution_s: float,
                          records: int) -> float:
    """The perfect client's rate for this run's work: ``written`` over ``perfect_seconds``."""
    seconds = perfect_seconds(written, protection, bulk_size, execution_s, records)
    return written / seconds if seconds > 0 else 0.0


def steady_records_per_s(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int) -> float:
    """The budget's rate over a long run: one window's budget per period."""
    return (window_budget_records(protection, bulk_size, execution_s, records)
            / period_s(protection, bulk_size, execution_s, records))


def ceiling_fraction(written: int, protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int,
                     seconds: float) -> float:
    """The perfect client's time for the same work over this run's (1.0: as fast as the budget allows)."""
    return perfect_seconds(written, protection, bulk_size, execution_s, records) / seconds if seconds > 0 else 0.0


def windows_in(seconds: float, window_s: float) -> int:
    """Windows a run of ``seconds`` begins: the first at its start (empty), then one every ``window_s``. For runs
    bounded by the clock, not by their work (bench/commerce.py: a fixed time of writes against a request limit,
    counted at arrival): a perfect client sends one window's requests in each."""
    return max(1, math.ceil(seconds / window_s - 1e-9))


def clock_bound_fraction(written: int, max_requests: int, window_s: float, seconds: float) -> float:
    """A run that sends for a fixed ``seconds`` (one write a request, the request count counted at arrival):
    ``written`` against one window's requests for every window begun while it sent. Not the time it took to
    finish: the writes in flight at the end may wait out a ``Retry-After`` after it, and counting the windows
    those waits began charged a client that stopped sending at 25 s a fourth window (0.51 instead of 0.68)."""
    ceiling = max_requests * windows_in(seconds, window_s)
    return written / ceiling if ceiling > 0 else 0.0


WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def request_split(by_method: Mapping[str, int], written: int) -> dict[str, float]:
    """The emulator's request counts split in two: the fixed requests of a run (the preflight's reads, the lookups'
    resolution, every ``GET``) and the per-record write path (``requests_per_1000`` records written)."""
    writes = sum(int(n) for method, n in by_method.items() if method.upper() in WRITE_METHODS)
    fixed = sum(int(n) for method, n in by_method.items() if method.upper() not in WRITE_METHODS)
    return {"fixed_requests": fixed, "requests_per_1000": round(writes / max(written, 1) * 1000, 3),
            "all_requests_per_1000": round((writes + fixed) / max(written, 1) * 1000, 3)}
