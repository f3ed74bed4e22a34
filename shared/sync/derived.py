"""A template's derived columns, computed for rows read from Commerce before they are mapped.

A derived column (a field row with ``derive``) depends on more than its own row: ``current_tier`` on the card's other
tier rows of the program and on ``RetailLoyaltyTiers``. The rule itself is pure (``shared.mapping.derive``); this module
gives it what it needs and writes each row's value into the row as ``@<name>``, which the plan maps like a field.

Groups. The rule's ``group_by`` properties are the first parts of the key (the template model checks it), so a scan,
which reads in key order, reads each group's rows together: only the first and the last group of a key range can be
cut by the range's edges, and those two are read whole by a ``$filter`` on the group (two small reads per range). A
single row (a callback, a delete check, a reconcile's extra row) has its whole group read.

Kept current when dates pass (chosen: recompute on every timer run). The entity has no modified time, so every timer
run reads every row anyway; the flag is computed from today's date on each read and is part of the content hash, so
a row whose ``ValidFrom`` or ``ValidTo`` boundary has passed is written on the next run after midnight, and only such
rows are. No per-card "next boundary" has to be stored: it would save nothing, since the rows are read regardless.

Levels. ``RetailLoyaltyTiers`` is small and changes rarely: read once and kept for ``LEVELS_TTL_S`` (about one timer
period, so once per run), by the injectable clock. "Today" is the UTC date of that clock (docs/domain-notes.md §11:
which time zone HQ uses is not documented; UTC, inferred).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.clock import SYSTEM_CLOCK, Clock
from shared.commerce.client import CommerceClient
from shared.http.urls import literal
from shared.mapping.derive import Levels, current_tier_flags, level_key
from shared.mapping.model import CurrentTierSpec
from shared.mapping.plan import MappingError, Plan
from shared.observability import log

logger = logging.getLogger("loyaltysync.sync")
LEVELS_TTL_S = 300.0

Row = dict[str, Any]


class Deriver:
    """Computes one template's derived columns (``@<name>`` in each row) from Commerce."""

    def __init__(self, plan: Plan, commerce: CommerceClient, clock: Callable[[], Clock] = lambda: SYSTEM_CLOCK) -> None:
        self.plan = plan
        self.commerce = commerce
        self.clock = clock
        self.entity_set = plan.template.commerce.entity_set
        self.specs: dict[str, CurrentTierSpec] = dict(plan.derived)
        self._levels: dict[str, tuple[float, Levels]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.specs)

    def today(self) -> date:
        return self.clock().now().astimezone(UTC).date()

    # -- reference data ----------------------------------------------------------------------------------------

    def levels(self, spec: CurrentTierSpec) -> Levels:
        """``(program, tier id) -> level`` from the spec's tier entity set, read at most once per ``LEVELS_TTL_S``."""
        source = spec.levels
        now = self.clock().monotonic()
        with self._lock:
            held = self._levels.get(source.entity_set)
            if held is not None and now - held[0] < LEVELS_TTL_S:
                return held[1]
        levels: dict[tuple[str, str], Decimal] = {}
        for row in self.commerce.iter_rows(source.entity_set, select=[source.program, source.tier, source.level]):
            try:
                levels[level_key(str(row.get(source.program) or ""), str(row.get(source.tier) or ""))] = Decimal(
                    str(row.get(source.level)))
            except InvalidOperation:
                log(logger, logging.WARNING, "tier level is not a number; the tier ranks lowest", template=self.plan.name,
                    program=row.get(source.program), tier=row.get(source.tier), tier_level=row.get(source.level))
        with self._lock:
            self._levels[source.entity_set] = (now, levels)
        return levels

    # -- groups ------------------------------------------------------------------------------------------------

    def _group_of(self, spec: CurrentTierSpec, row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(row.get(p) or "").casefold() for p in spec.group_by)

    def group_rows(self, spec: CurrentTierSpec, sample: Mapping[str, Any]) -> list[Row]:
        """Every Commerce row of ``sample``'s group (``$filter`` on the group's properties, in key order)."""
        where = " and ".join(f"{p} eq {literal(self.plan.fo_literal(p, sample.get(p)))}" for p in spec.group_by)
        company = (str(sample.get("dataAreaId") or "").lower() or None) if self.plan.company_specific else None
        rows: list[Row] = []
        source = self.plan.template.commerce.filter
        for page in self.commerce.iter_pages(self.entity_set, select=list(self.plan.select_properties), company=company,
                                             where=f"{where} and ({source})" if source else where):
            rows.extend(page)
        return rows

    # -- computing ---------------------------------------------------------------------------------------------

    def augment(self, rows: Sequence[Mapping[str, Any]], *, contiguous: bool = False, whole: bool = False) -> list[Row]:
        """``rows`` (copies) with every derived value set. ``contiguous``: the rows are one key range of a scan, so
        groups inside it are whole and only its first and last group are read again; ``whole``: every group is
        whole already (``group_rows``); otherwise each group is read."""
        result = [dict(row) for row in rows]
        if not self.specs or not result:
            return result
        today = self.today()
        for name, spec in self.specs.items():
            levels = self.levels(spec)
            groups: dict[tuple[str, ...], list[int]] = {}
            for index, row in enumerate(result):
                groups.setdefault(self._group_of(spec, row), []).append(index)
            order = list(groups)
            edges = set() if whole else {order[0], order[-1]} if contiguous else set(order)
            for group, indexes in groups.items():
                members: list[Mapping[str, Any]] = [result[i] for i in indexes]
                if group in edges:
                    members = self._whole(spec, members)
                flags = current_tier_flags(members, spec, levels, today)
                by_key = {self._key(member): flag for member, flag in zip(members, flags, strict=True)}
                for i in indexes:
                    result[i][f"@{name}"] = by_key.get(self._key(result[i]), False)
        return result

    def _whole(self, spec: CurrentTierSpec, members: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The group's rows as Commerce has them now, plus any of ``members`` it no longer lists (they are still
        mapped, with a flag computed among the rest)."""
        fetched: list[Mapping[str, Any]] = list(self.group_rows(spec, members[0]))
        known = {self._key(row) for row in fetched}
        return [*fetched, *(m for m in members if self._key(m) not in known)]

    def _key(self, row: Mapping[str, Any]) -> tuple[str, ...] | None:
        try:
            return tuple(part.casefold() for part in self.plan.key_of(row))
        except MappingError:
            return None
