"""The folds an aggregate template may name (``"aggregate": {"fold": "<name>"}``): what each reads and writes.

A fold is pure (lines in, one record per group out, as of a date); the template maps its output fields to Dataverse
columns like any source row's properties. ``volatile`` outputs change with the date alone (the as-of date): they are
written with the record but left out of its content hash, so a day passing rewrites nothing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.balances.fold import BALANCE_FIELDS
from shared.balances.lines import LINE_PROPERTIES


@dataclass(frozen=True)
class FoldSpec:
    name: str
    source_properties: tuple[str, ...]  # what is read of each source line ($select)
    outputs: tuple[str, ...]  # the fields of the folded record
    volatile: frozenset[str]


FOLDS: dict[str, FoldSpec] = {
    "points_balance": FoldSpec("points_balance", LINE_PROPERTIES, BALANCE_FIELDS, frozenset({"AsOfDate"})),
}
