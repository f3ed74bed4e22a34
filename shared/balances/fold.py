"""A card's points balance per reward point: one pure fold over the card's transaction lines.

What is documented (docs/domain-notes.md §11, from Microsoft's pages on reward points and loyalty cards): points
expire a configured time after they are issued (0: never); vesting delays their availability and HQ's Loyalty cards
page shows them as *unvested*; that page shows, per reward point, issued, used, expired, active (available) and
unvested points.

What is **inferred** (no Microsoft formula was found; verify against HQ's "Reward point summary" of a test card,
see docs/domain-notes.md §11). Per card and ``RewardPointId``, over the card's lines of
``RetailLoyaltyCardRewardPointTransactions`` (docs/protocol-notes.md §3.8), as of ``today`` (a date):

* **available** = Σ ``Remaining`` of lines with ``StartDate`` ≤ today and (``ExpirationDate`` ≥ today or never);
* **unvested** = Σ ``Remaining`` of lines with ``StartDate`` > today;
* **expired** = Σ ``Remaining`` of lines with ``ExpirationDate`` < today (never-expiring lines never are);
* **issued** = Σ positive ``RewardPointAmountQty``; **used** = Σ |negative ``RewardPointAmountQty``| of Redeem,
  ReturnEarned and Adjust lines;
* **expiring soon** = Σ ``Remaining`` of available lines whose ``ExpirationDate`` is at most ``horizon_days`` after
  today, with the earliest such date;
* **next change**: the balance changes with no new transaction when a line with ``Remaining`` ≠ 0 vests (on its
  ``StartDate``) or expires (the day after its ``ExpirationDate``: it is available through that date, by the rule
  above): the earliest such day after today.

Choices of this implementation (also inferred): the three ``Remaining`` buckets are exclusive, a line that has
expired counts as expired even when its ``StartDate`` is later still (F&O should never produce one); the empty date
(1900-01-01, or no date at all) is "none": an empty ``StartDate`` is vested, an empty ``ExpirationDate`` never
expires; dates on or after 2154-12-31 (F&O's largest date) and the configured ``never_expires`` date never expire
either. ``today`` is a date in the time zone ``BalanceSettings.timezone`` (UTC unless configured: which zone HQ uses
is not documented).

Nothing here does I/O: ``fold`` is a function of its lines, ``today`` and the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

EMPTY_DATE = date(1900, 1, 1)  # F&O's "no date" (inferred)
FO_MAX_DATE = date(2154, 12, 31)  # F&O's largest date: on or after it means "never" (inferred)
DEFAULT_HORIZON_DAYS = 30
ZERO = Decimal(0)


class EntryType(IntEnum):
    """``EntryType`` of a transaction line (docs/domain-notes.md §8)."""

    EARN = 1
    REDEEM = 2
    RETURN_EARNED = 3
    ADJUST = 4
    REFUND = 5


USED_TYPES = frozenset({EntryType.REDEEM, EntryType.RETURN_EARNED, EntryType.ADJUST})


@dataclass(frozen=True)
class BalanceSettings:
    """What the fold needs besides the lines: the extra "never expires" date a tenant may store, the time zone of
    "today" and the expiring-soon horizon (``shared.settings``: ``SYNC_BALANCE_*``)."""

    never_expires: date = EMPTY_DATE
    timezone: str = "UTC"
    horizon_days: int = DEFAULT_HORIZON_DAYS

    def today(self, now: datetime) -> date:
        """The date ``now`` falls on in the configured time zone."""
        zone = UTC if self.timezone.upper() == "UTC" else ZoneInfo(self.timezone)
        return now.astimezone(zone).date()


@dataclass(frozen=True, slots=True)
class Line:
    """One transaction line, as the fold reads it. ``start`` None: vested from the beginning; ``expiration`` None:
    as the line says, which ``BalanceSettings`` decides is never or a date (see ``expires``)."""

    card_number: str
    reward_point_id: str
    entry_type: EntryType
    amount: Decimal  # RewardPointAmountQty, signed
    remaining: Decimal
    start: date | None
    expiration: date | None
    entry_date: date | None


@dataclass(frozen=True, slots=True)
class Balance:
    """One card's balance of one reward point, as of ``as_of``."""

    card_number: str
    reward_point_id: str
    available: Decimal
    unvested: Decimal
    expired: Decimal
    issued: Decimal
    used: Decimal
    expiring_soon: Decimal
    expiring_soon_date: date | None
    next_change_date: date | None
    last_transaction_date: date | None
    as_of: date
    recompute_on: date | None  # the first day the fold's result changes by itself (next change, or a line
    # entering the expiring-soon horizon): when the card must be folded again with no new line

    @property
    def key(self) -> tuple[str, str]:
        return (self.card_number, self.reward_point_id)


def never_expires(expiration: date | None, settings: BalanceSettings) -> bool:
    """Whether an ``ExpirationDate`` means "never": none, the empty date, F&O's largest date or later, or the
    configured ``never_expires`` date (inferred, docs/domain-notes.md §11)."""
    return (expiration is None or expiration <= EMPTY_DATE or expiration >= FO_MAX_DATE
            or expiration == settings.never_expires)


class Folder:
    """The fold of one (card, reward point), a line at a time: constant memory whatever the number of lines."""

    __slots__ = ("_first_entering", "_first_expiry", "_first_vesting", "available", "card_number", "expired",
                 "expiring_soon", "expiring_soon_date", "horizon", "issued", "last_transaction_date",
                 "reward_point_id", "settings", "today", "unvested", "used")

    def __init__(self, card_number: str, reward_point_id: str, today: date, settings: BalanceSettings) -> None:
        self.card_number = card_number
        self.reward_point_id = reward_point_id
        self.today = today
        self.settings = settings
        self.horizon = today + timedelta(days=settings.horizon_days)
        self.available = self.unvested = self.expired = self.issued = self.used = self.expiring_soon = ZERO
        self.expiring_soon_date: date | None = None
        self.last_transaction_date: date | None = None
        self._first_vesting: date | None = None  # earliest StartDate after today (Remaining ≠ 0)
        self._first_expiry: date | None = None  # earliest ExpirationDate on or after today (Remaining ≠ 0)
        self._first_entering: date | None = None  # earliest ExpirationDate after the horizon (Remaining ≠ 0)

    def add(self, line: Line) -> None:
        amount = line.amount
        if amount > 0:
            self.issued += amount
        elif amount < 0 and line.entry_type in USED_TYPES:
            self.used -= amount
        if line.entry_date is not None and (self.last_transaction_date is None
                                            or line.entry_date > self.last_transaction_date):
            self.last_transaction_date = line.entry_date
        remaining = line.remaining
        if not remaining:
            return
        today = self.today
        expiration = None if never_expires(line.expiration, self.settings) else line.expiration
        start = line.start if line.start is not None and line.start > EMPTY_DATE else None
        if expiration is not None and expiration < today:
            self.expired += remaining
            return
        if expiration is not None and (self._first_expiry is None or expiration < self._first_expiry):
            self._first_expiry = expiration
        if start is not None and start > today:
            self.unvested += remaining
            if self._first_vesting is None or start < self._first_vesting:
                self._first_vesting = start
            return
        self.available += remaining
        if expiration is None:
            return
        if expiration <= self.horizon:
            self.expiring_soon += remaining
            if self.expiring_soon_date is None or expiration < self.expiring_soon_date:
                self.expiring_soon_date = expiration
        elif self._first_entering is None or expiration < self._first_entering:
            self._first_entering = expiration

    def result(self) -> Balance:
        changes = [d for d in (self._first_vesting,
                               self._first_expiry + timedelta(days=1) if self._first_expiry is not None else None)
                   if d is not None]
        next_change = min(changes) if changes else None
        entering = (self._first_entering - timedelta(days=self.settings.horizon_days)
                    if self._first_entering is not None else None)
        due = [d for d in (next_change, entering) if d is not None]
        return Balance(self.card_number, self.reward_point_id, self.available, self.unvested, self.expired,
                       self.issued, self.used, self.expiring_soon, self.expiring_soon_date, next_change,
                       self.last_transaction_date, self.today, min(due) if due else None)


def fold(lines: Iterable[Line], today: date, settings: BalanceSettings, *,
         card_number: str | None = None, reward_point_id: str | None = None) -> Balance:
    """The balance of one (card, reward point) from all of its lines, as of ``today``. The group is taken from the
    first line unless named (a group with no lines has zero balances)."""
    folder: Folder | None = None
    for line in lines:
        if folder is None:
            folder = Folder(card_number or line.card_number, reward_point_id or line.reward_point_id, today, settings)
        elif (line.card_number, line.reward_point_id) != (folder.card_number, folder.reward_point_id):
            raise ValueError(f"line of {line.card_number}/{line.reward_point_id} in the fold of "
                             f"{folder.card_number}/{folder.reward_point_id}")
        folder.add(line)
    if folder is None:
        folder = Folder(card_number or "", reward_point_id or "", today, settings)
    return folder.result()


# -- the fold's output as the template's source row ----------------------------------------------------------


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _datetime(value: date | None) -> str | None:
    return None if value is None else f"{value.isoformat()}T00:00:00Z"


BALANCE_FIELDS = ("Name", "CardNumber", "RewardPointId", "Card", "RewardPoint", "AvailablePoints", "UnvestedPoints",
                  "ExpiredPoints", "IssuedPoints", "UsedPoints", "ExpiringSoonPoints", "ExpiringSoonDate",
                  "NextChangeDate", "LastTransactionDate", "AsOfDate")


def as_row(balance: Balance) -> dict[str, Any]:
    """The balance as the row an aggregate template maps (its ``fo_property`` names): numbers, and dates as F&O
    sends dates (midnight UTC)."""
    return {
        "Name": f"{balance.card_number} {balance.reward_point_id}",
        "CardNumber": balance.card_number,
        "RewardPointId": balance.reward_point_id,
        "Card": balance.card_number,  # the same codes again, for the lookups to the card and the reward point
        "RewardPoint": balance.reward_point_id,
        "AvailablePoints": _number(balance.available),
        "UnvestedPoints": _number(balance.unvested),
        "ExpiredPoints": _number(balance.expired),
        "IssuedPoints": _number(balance.issued),
        "UsedPoints": _number(balance.used),
        "ExpiringSoonPoints": _number(balance.expiring_soon),
        "ExpiringSoonDate": _datetime(balance.expiring_soon_date),
        "NextChangeDate": _datetime(balance.next_change_date),
        "LastTransactionDate": _datetime(balance.last_transaction_date),
        "AsOfDate": _datetime(balance.as_of),
    }
