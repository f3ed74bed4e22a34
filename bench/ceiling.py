"""The most records a perfect client could write in a run against the emulated Dataverse budget: the yardstick of
every ``ceiling_fraction`` the benchmark prints (pinned by ``tests/bench/test_ceiling.py``).

Why the old figure read 1.21: it divided the run's rate by the *steady* rate of the budget (one window's budget
per window length). But the emulator's windows slide, and a run starts with its window empty: a client can spend
a whole window's budget at once at the start, another at 10 s, another at 20 s. A default run of about 28 s spans
three 10-second windows, so a perfect client writes 3 windows' worth in 2.8 windows' time: 1.07 of the steady
rate, and the shorter the run, the more the first burst counts (a 12 s run: 2 budgets in 1.2 windows, 1.67).
The rest of the 1.21 was the budget's own slack, not the client's merit: the execution-time limit is enforced
after the fact (a request is refused only once the window already holds the limit), so requests in flight when the
limit is reached finish and count on top of it; the figure credited the client with both.

So the ceiling here is what the budget lets a client write in *this* run: one window's budget for every window the
run begins (``ceil(seconds / window)``: the first starts empty, each later one adds one budget), the tighter of the
request limit and the execution-time limit, at the server time per record the emulator actually counted. A client
that uses every window's budget to the full scores 1.0 whatever the run's length; above 1.0 it lived on the
after-the-fact slack of the execution-time limit (the throttled fraction then says what that cost).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def window_budget_records(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int) -> float:
    """Records one window admits: the tighter of ``max_requests`` requests of ``bulk_size`` records and
    ``max_execution_s`` seconds at the server time per record counted (``execution_s`` over ``records``)."""
    by_requests = float(protection["max_requests"]) * bulk_size
    seconds_per_record = execution_s / records if records > 0 else 0.0
    by_time = float(protection["max_execution_s"]) / seconds_per_record if seconds_per_record > 0 else math.inf
    return min(by_requests, by_time)


def windows_in(seconds: float, window_s: float) -> int:
    """Windows a run of ``seconds`` begins: the first at its start (empty), then one every ``window_s``."""
    return max(1, math.ceil(seconds / window_s - 1e-9))


def ceiling_records(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int,
                    seconds: float) -> float:
    """The most records a perfect client writes in a run of ``seconds``."""
    return window_budget_records(protection, bulk_size, execution_s, records) * windows_in(seconds,
                                                                                          float(protection["window_s"]))


def ceiling_records_per_s(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int,
                          seconds: float) -> float:
    """``ceiling_records`` as a rate over the run."""
    return ceiling_records(protection, bulk_size, execution_s, records, seconds) / seconds if seconds > 0 else 0.0


def steady_records_per_s(protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int) -> float:
    """The budget's rate over a long run (one window's budget per window length): what the old figure used."""
    return window_budget_records(protection, bulk_size, execution_s, records) / float(protection["window_s"])


def ceiling_fraction(written: int, protection: Mapping[str, Any], bulk_size: int, execution_s: float, records: int,
                     seconds: float) -> float:
    """``written`` against the most a perfect client writes in the same run (1.0: every window's budget used)."""
    ceiling = ceiling_records(protection, bulk_size, execution_s, records, seconds)
    return written / ceiling if ceiling > 0 else 0.0


WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def request_split(by_method: Mapping[str, int], written: int) -> dict[str, float]:
    """The emulator's request counts split in two: the fixed requests of a run (the preflight's reads, the lookups'
    resolution, every ``GET``) and the per-record write path (``requests_per_1000`` records written)."""
    writes = sum(int(n) for method, n in by_method.items() if method.upper() in WRITE_METHODS)
    fixed = sum(int(n) for method, n in by_method.items() if method.upper() not in WRITE_METHODS)
    return {"fixed_requests": fixed, "requests_per_1000": round(writes / max(written, 1) * 1000, 3),
            "all_requests_per_1000": round((writes + fixed) / max(written, 1) * 1000, 3)}
