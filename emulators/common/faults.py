"""Fault injection shared by both emulators (docs/protocol-notes.md §5.1 "fault-injection hooks",
§5.2 throttling, §6.1 client retry policy).

A :class:`FaultSet` (``server.faults``) holds :class:`FaultRule` objects. The common request
dispatch (:meth:`emulators.common.server.EmulatorRequestHandler.run_route`) asks it, for every
non-admin request, whether a rule fires; the first rule that fires decides:

* ``status``: answer ``status`` (429/500/503, ...) with the emulator's own error body (the
  handler's ``fault_error`` hook: Dataverse ``{"error":{"code":"0x80072322",...}}`` for 429,
  F&O its error shape) and ``Retry-After: <retry_after>`` when ``retry_after`` is set;
* ``delay``: sleep ``delay_s`` seconds, then handle the request normally (``after: true``:
  handle first, then sleep before sending the response, so the write happens even when the
  client gave up);
* ``drop``: close the connection without any response (``after: true``: after the request
  was processed, i.e. the client never learns that its write succeeded);
* ``batch_partial``: only evaluated by the Dataverse ``$batch`` route, which fails inner
  operation number ``operation`` (1-based, in request order) with ``status`` (400/500).

Matching: ``route`` is ``null``/``"*"`` (any request), a route name (``resource``,
``$batch``, ``WhoAmI``, ``odata.resource``, ...) or a regular expression searched in the
percent-decoded path (``msdyn_loyaltycards``, ``UpsertMultiple$``); ``method`` is ``null``
(any) or an HTTP method. Firing: ``nth`` (only the n-th matching call), ``every`` (every
n-th matching call), ``probability`` (seeded by ``seed``), or none of them (every matching
call); ``times`` caps the number of fires (``null`` = unlimited). Every matching rule counts
every matching call, but only the first rule that decides to fire is applied.

This module is pure (no HTTP): the admin routes ``GET|POST|DELETE /_emulator/faults`` live in
:mod:`emulators.common.server`.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BATCH_KINDS", "HTTP_KINDS", "KINDS", "FaultRule", "FaultRuleError", "FaultSet"]

#: Kinds applied by the common dispatch.
HTTP_KINDS = frozenset({"status", "delay", "drop"})
#: Kinds applied by the Dataverse ``$batch`` route only.
BATCH_KINDS = frozenset({"batch_partial"})
KINDS = HTTP_KINDS | BATCH_KINDS

_FIELDS = frozenset(
    {
        "route",
        "method",
        "kind",
        "status",
        "retry_after",
        "delay_s",
        "nth",
        "every",
        "probability",
        "times",
        "seed",
        "operation",
        "after",
        "code",
        "message",
        "reason",
    }
)
_DEFAULT_STATUS = {"status": 429, "batch_partial": 500}


class FaultRuleError(ValueError):
    """An invalid rule (unknown field, wrong type, contradictory options)."""


def _opt_int(data: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FaultRuleError(f"'{name}' must be an integer >= {minimum} or null, not {value!r}.")
    return value


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise FaultRuleError(f"'{name}' must be a string or null, not {value!r}.")
    return value


@dataclass
class FaultRule:
    """One fault rule plus its counters (``matched`` calls, ``fired`` applications)."""

    kind: str
    route: str | None = None
    method: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay_s: float = 5.0
    nth: int | None = None
    every: int | None = None
    probability: float | None = None
    times: int | None = None
    seed: int | None = None
    operation: int = 1
    after: bool = False
    code: str | None = None
    message: str | None = None
    reason: str | None = None
    id: int = 0
    matched: int = 0
    fired: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """Validate one rule as sent to ``POST /_emulator/faults`` (see module doc)."""
        if not isinstance(data, Mapping):
            raise FaultRuleError(f"A fault rule must be a JSON object, not {data!r}.")
        unknown = set(data) - _FIELDS
        if unknown:
            raise FaultRuleError(f"Unknown fault rule fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}.")
        kind = data.get("kind")
        if kind not in KINDS:
            raise FaultRuleError(f"'kind' must be one of {sorted(KINDS)}, not {kind!r}.")
        route = _opt_str(data, "route")
        pattern = None
        if route not in (None, "*"):
            try:
                pattern = re.compile(str(route))
            except re.error as exc:
                raise FaultRuleError(f"'route' is neither a route name nor a valid regular expression: {exc}.") from None
        method = _opt_str(data, "method")
        status = _opt_int(data, "status", 100)
        if status is not None and status > 599:
            raise FaultRuleError(f"'status' must be an HTTP status code, not {status}.")
        delay = data.get("delay_s", 5.0)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
            raise FaultRuleError(f"'delay_s' must be a number >= 0, not {delay!r}.")
        probability = data.get("probability")
        if probability is not None and (
            not isinstance(probability, (int, float)) or isinstance(probability, bool) or not 0 <= probability <= 1
        ):
            raise FaultRuleError(f"'probability' must be a number between 0 and 1, not {probability!r}.")
        nth, every = _opt_int(data, "nth", 1), _opt_int(data, "every", 1)
        if sum(x is not None for x in (nth, every, probability)) > 1:
            raise FaultRuleError("Use at most one of 'nth', 'every' and 'probability'.")
        after = data.get("after", False)
        if not isinstance(after, bool) or (after and kind not in ("delay", "drop")):
            raise FaultRuleError("'after' must be a boolean and is only meaningful for 'delay' and 'drop'.")
        seed = _opt_int(data, "seed", -(2**63))
        rule = cls(
            kind=str(kind),
            route=route,
            method=method.upper() if method else None,
            status=status if status is not None else _DEFAULT_STATUS.get(str(kind)),
            retry_after=_opt_int(data, "retry_after", 0),
            delay_s=float(delay),
            nth=nth,
            every=every,
            probability=float(probability) if probability is not None else None,
            times=_opt_int(data, "times", 1),
            seed=seed,
            operation=_opt_int(data, "operation", 1) or 1,
            after=after,
            code=_opt_str(data, "code"),
            message=_opt_str(data, "message"),
            reason=_opt_str(data, "reason"),
        )
        rule._pattern = pattern
        rule._rng = random.Random(seed)
        return rule

    def matches(self, route_name: str, path: str, method: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.route in (None, "*") or self.route == route_name:
            return True
        return self._pattern is not None and self._pattern.search(path) is not None

    def _decide(self) -> bool:
        """Count one matching call; True when the rule fires on it."""
        self.matched += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.nth is not None:
            return self.matched == self.nth
        if self.every is not None:
            return self.matched % self.every == 0
        if self.probability is not None:
            return self._rng.random() < self.probability
        return True

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "method": self.method,
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_s": self.delay_s,
            "nth": self.nth,
            "every": self.every,
            "probability": self.probability,
            "times": self.times,
            "seed": self.seed,
            "operation": self.operation,
            "after": self.after,
            "code": self.code,
            "message": self.message,
            "reason": self.reason,
            "matched": self.matched,
            "fired": self.fired,
        }


class FaultSet:
    """The thread-safe rule list of one server (``server.faults``).

    Python API for in-process tests::

        server.faults.add(route="resource", method="PATCH", kind="status", status=503, nth=2)
        server.faults.fired()   # {"status": 1, "delay": 0, "drop": 0, "batch_partial": 0}
        server.faults.clear()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._fired: dict[str, int] = dict.fromkeys(sorted(KINDS), 0)

    def add(self, rule: Mapping[str, Any] | None = None, /, **fields: Any) -> FaultRule:
        """Append one rule given as a mapping and/or keyword fields; returns it."""
        return self.extend([{**(rule or {}), **fields}])[0]

    def extend(self, rules: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        """Validate every rule first, then append them all (all or nothing)."""
        parsed = [FaultRule.from_json(rule) for rule in rules]
        with self._lock:
            for rule in parsed:
                rule.id = self._next_id
                self._next_id += 1
                self._rules.append(rule)
        return parsed

    def clear(self) -> None:
        """Remove every rule and zero the fired counters."""
        with self._lock:
            self._rules.clear()
            self._fired = dict.fromkeys(sorted(KINDS), 0)

    def fired(self) -> dict[str, int]:
        """How many times rules fired, by kind (since the last :meth:`clear`)."""
        with self._lock:
            return dict(self._fired)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.as_json() for rule in self._rules]

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /_emulator/faults`` body: ``{"rules": [...], "fired": {kind: n}}``."""
        with self._lock:
            return {"rules": [rule.as_json() for rule in self._rules], "fired": dict(self._fired)}

    def pick(self, route_name: str, path: str, method: str, kinds: frozenset[str] = HTTP_KINDS) -> FaultRule | None:
        """Count the call on every matching rule of ``kinds``; return the first that fires."""
        with self._lock:
            if not self._rules:
                return None
            chosen: FaultRule | None = None
            for rule in self._rules:
                if rule.kind not in kinds or not rule.matches(route_name, path, method):
                    continue
                if rule._decide() and chosen is None:
                    chosen = rule
                    rule.fired += 1
                    self._fired[rule.kind] += 1
            return chosen
