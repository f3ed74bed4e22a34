"""Derived columns: values no F&O field holds, computed by one pure rule each from a group of rows.

``current_tier`` (docs/domain-notes.md §11, inferred: Microsoft documents no formula): a loyalty card holds tier rows
per program (``LoyaltyCardTiersV2``), each valid from one date to another. The card's **current tier for a program** is,
among its rows of that program valid today (``ValidFrom`` <= today <= ``ValidTo``, the empty date 1900-01-01 as
``ValidTo`` meaning "open"), the one whose tier has the highest ``RetailLoyaltyTiers.TierLevel``. Every other row of
the group is not current. Ties (inferred): the later ``ValidFrom`` wins, then the greater tier id, so the answer never
depends on the order rows were read in. A tier that ``RetailLoyaltyTiers`` does not list ranks below every listed one
(inferred: it still counts, so a card whose only valid row names an unknown tier has a current row).

The rule is pure: rows, levels and today in, one flag per row out. ``shared.sync.derived`` feeds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from shared.mapping.model import CurrentTierSpec

EMPTY_DATE = date(1900, 1, 1)  # F&O's "no date" (docs/domain-notes.md §6): an open ValidTo (inferred)
UNKNOWN_LEVEL = Decimal("-Infinity")

# (program, tier id) -> level; tier ids compared case-insensitively, as F&O compares them (inferred).
Levels = Mapping[tuple[str, str], Decimal]


def as_date(value: Any) -> date | None:
    """An F&O date or DateTimeOffset (``2024-01-01`` or ``2024-01-01T00:00:00Z``) as its UTC date; None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    if len(text) == 10:
        return date.fromisoformat(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).date() if parsed.tzinfo else parsed.date()


def level_key(program: str, tier: str) -> tuple[str, str]:
    return (program.casefold(), tier.casefold())


def valid_on(valid_from: date | None, valid_to: date | None, today: date) -> bool:
    """``valid_from`` <= today <= ``valid_to``; an empty ``valid_from`` is no lower bound, an empty (or 1900-01-01)
    ``valid_to`` no upper bound (inferred: F&O's empty date)."""
    if valid_from is not None and valid_from > today:
        return False
    return valid_to is None or valid_to <= EMPTY_DATE or today <= valid_to


def current_tier_flags(rows: Sequence[Mapping[str, Any]], spec: CurrentTierSpec, levels: Levels,
                       today: date) -> list[bool]:
    """One flag per row of ``rows``: True for each group's current tier row, False for every other row.

    Rows are grouped by ``spec.group_by`` (a card in a program); a group with no row valid today has no current row,
    and a row with no tier id (program membership only) is never current.
    """
    best: dict[tuple[str, ...], tuple[tuple[Decimal, date, str], int]] = {}
    for index, row in enumerate(rows):
        valid_from, valid_to = as_date(row.get(spec.valid_from)), as_date(row.get(spec.valid_to))
        if not valid_on(valid_from, valid_to, today):
            continue
        tier = str(row.get(spec.tier) or "")
        if not tier:
            continue  # a row with no tier id is program membership only, never a tier (inferred, §3.8)
        group = tuple(str(row.get(p) or "").casefold() for p in spec.group_by)
        program = str(row.get(spec.program) or "")
        rank = (levels.get(level_key(program, tier), UNKNOWN_LEVEL), valid_from or EMPTY_DATE, tier.casefold())
        held = best.get(group)
        if held is None or rank > held[0]:
            best[group] = (rank, index)
    winners = {index for _, index in best.values()}
    return [index in winners for index in range(len(rows))]

