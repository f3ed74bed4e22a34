"""Transaction lines of ``RetailLoyaltyCardRewardPointTransactions`` as the fold reads them.

F&O OData sends enums as member names (``"Earn"``), decimals as JSON numbers and dates as ``DateTimeOffset`` at
midnight UTC (docs/protocol-notes.md §3.7, §3.8); only the date part of a date is used. A line that cannot be read
raises ``LineError`` naming the property, so the caller can keep the card with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.balances.fold import EntryType, Line

# The properties a fold needs (``$select``); the group key first.
LINE_PROPERTIES = ("CardNumber", "RewardPointId", "EntryType", "RewardPointAmountQty", "Remaining", "StartDate",
                   "ExpirationDate", "EntryDate")
_MEMBERS = {"earn": EntryType.EARN, "redeem": EntryType.REDEEM, "returnearned": EntryType.RETURN_EARNED,
            "adjust": EntryType.ADJUST, "refund": EntryType.REFUND}


class LineError(ValueError):
    """A transaction line the fold cannot read; ``field`` names the OData property at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _text(row: Mapping[str, Any], prop: str) -> str:
    value = row.get(prop)
    if not isinstance(value, str) or not value:
        raise LineError(prop, f"expected a non-empty string, got {value!r}")
    return value


def _decimal(row: Mapping[str, Any], prop: str) -> Decimal:
    value = row.get(prop)
    if value is None:
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LineError(prop, f"expected a number, got {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise LineError(prop, f"{value!r} is not a number") from None


def _date(row: Mapping[str, Any], prop: str) -> date | None:
    value = row.get(prop)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LineError(prop, f"expected an ISO 8601 date, got {value!r}")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise LineError(prop, f"{value!r} is not an ISO 8601 date") from None


def _entry_type(row: Mapping[str, Any]) -> EntryType:
    value = row.get("EntryType")
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return EntryType(value)
        except ValueError:
            pass
    elif isinstance(value, str) and value.lower() in _MEMBERS:
        return _MEMBERS[value.lower()]
    accepted = ", ".join(m.name.title().replace("_", "") for m in EntryType)
    raise LineError("EntryType", f"{value!r} is not an entry type ({accepted})")


def line_of(row: Mapping[str, Any]) -> Line:
    """One OData row as a ``Line``."""
    return Line(_text(row, "CardNumber"), _text(row, "RewardPointId"), _entry_type(row),
                _decimal(row, "RewardPointAmountQty"), _decimal(row, "Remaining"), _date(row, "StartDate"),
                _date(row, "ExpirationDate"), _date(row, "EntryDate"))
