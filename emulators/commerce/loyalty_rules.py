"""What Commerce does to reward-point lines: earn, redeem, return, adjust, refund, and the generated history.

Rules (docs/domain-notes.md §8 and §11, docs/protocol-notes.md §3.8; the consumption order is inferred from the
deduction table ``RetailLoyaltyCardRewardPointDeduction``, which records which earn lines a deduction consumed):

* **Earn**: ``RewardPointAmountQty`` = ``Remaining`` = the points; ``StartDate`` = the entry date plus the reward
  point's vesting period; ``ExpirationDate`` = the entry date plus its expiration period, or the never-expires value
  when the period is 0 (documented: 0 means never).
* **Redeem**: a negative line with ``Remaining`` 0 that lowers ``Remaining`` on *earlier* lines of the same reward
  point that are available at the entry date (vested, not expired), earliest expiry first, never-expiring last
  (inferred). An "As card tender" card consumes only its own lines; an "As contact tender" card consumes lines of any
  card of the same customer (documented, define-loyalty-cards.md; the order across cards is inferred: expiry first,
  the redeeming card's own lines first on a tie). "No tender" and "Blocked" cards cannot redeem (documented), and a
  redemption beyond the available points is refused (inferred: the POS refuses it).
* **ReturnEarned**: a negative line that deducts unvested points first (documented default), latest earned first
  (inferred), then available points as a redemption does, on the card's own lines only (inferred). What cannot be
  deducted stays on the return line as a negative ``Remaining`` (inferred: a debt the next earns do not repay here).
* **Adjust**: positive like an earn without vesting; negative like a return without the unvested step (inferred).
* **Refund** (points given back for a return paid with points): positive, available at once (inferred).

Lines already expired keep their ``Remaining`` (there is no "Expire" entry type, docs/protocol-notes.md §3.8).
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from .loyalty_lines import ENTRY_TYPES, LOYALTY_ADJUSTMENT, RETAIL, CardInfo, Line, LineStore, cents

EARN, REDEEM, RETURN, ADJUST, REFUND = (ENTRY_TYPES.index(n) for n in
                                        ("Earn", "Redeem", "ReturnEarned", "Adjust", "Refund"))
KINDS = {"earn": EARN, "redeem": REDEEM, "return": RETURN, "adjust": ADJUST, "refund": REFUND}


class ActivityError(ValueError):
    """An activity Commerce would refuse (the admin API answers 409 with the message)."""


@dataclass(frozen=True)
class RewardRule:
    """A reward point's definition as far as lines need it (``RetailLoyaltyRewardPoints``)."""

    reward_point_id: str
    amount: bool  # Amount points have two decimals; Quantity points are whole
    redeemable: bool
    vest: tuple[int, str]  # (value, Day/Month/Year)
    expire: tuple[int, str]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RewardRule:
        return cls(str(row["RewardPointId"]), row.get("RewardPointType") == "Amount", row.get("Redeemable") == "Yes",
                   (int(row.get("VestingTimeValue") or 0), str(row.get("VestingTimeUnit") or "Day")),
                   (int(row.get("ExpirationTimeValue") or 0), str(row.get("ExpirationTimeUnit") or "Day")))

    def start_day(self, entry_day: int) -> int:
        return add_period(entry_day, *self.vest)

    def exp_day(self, entry_day: int) -> int:
        value, unit = self.expire
        return 0 if value <= 0 else add_period(entry_day, value, unit)


def add_period(day: int, value: int, unit: str) -> int:
    if value <= 0:
        return day
    if unit == "Day":
        return day + value
    months = value if unit == "Month" else 12 * value
    moment = date.fromordinal(day)
    year, month = divmod(moment.month - 1 + months, 12)
    year += moment.year
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(moment.day, last)).toordinal()


# -- consumption ---------------------------------------------------------------------------------------------------


def _available(line: Line, reward: str, day: int) -> bool:
    return (line.remaining > 0 and line.reward == reward and line.start_day <= day
            and (line.exp_day == 0 or line.exp_day >= day) and line.entry_day <= day)


def _expiry_order(line: Line) -> tuple[int, int]:
    return (line.exp_day if line.exp_day else 10**9, line.entry_day)


def consume(cards: Sequence[CardInfo], reward: str, day: int, amount: int, *, unvested_first: bool = False,
            changed: list[Line] | None = None) -> int:
    """Lower ``Remaining`` on the lines of ``cards`` (the first is the card acting) by up to ``amount`` hundredths;
    returns what could not be consumed. Consumed lines are appended to ``changed``."""
    left = amount
    if unvested_first:
        own = cards[0]
        unvested = [ln for ln in own.lines if ln.remaining > 0 and ln.reward == reward and ln.start_day > day
                    and ln.entry_day <= day]
        unvested.sort(key=lambda ln: (-ln.entry_day, -ln.entry_time))  # latest earned first (inferred)
        left = _take(unvested, left, changed)
    if left > 0:
        pool = [(ln, rank) for rank, card in enumerate(cards) for ln in card.lines if _available(ln, reward, day)]
        pool.sort(key=lambda pair: (*_expiry_order(pair[0]), pair[1]))
        left = _take([ln for ln, _ in pool], left, changed)
    return left


def _take(lines: Iterable[Line], left: int, changed: list[Line] | None) -> int:
    for line in lines:
        if left <= 0:
            break
        used = min(line.remaining, left)
        line.remaining -= used
        left -= used
        line.rec_version += 1
        if changed is not None:
            changed.append(line)
    return left


def available_points(cards: Sequence[CardInfo], reward: str, day: int) -> int:
    return sum(ln.remaining for card in cards for ln in card.lines if _available(ln, reward, day))


# -- activities ----------------------------------------------------------------------------------------------------


@dataclass
class Activity:
    kind: str  # earn / redeem / return / adjust / refund
    card: str
    points: float
    day: int
    time: int = 0  # seconds since midnight
    reward_point: str | None = None
    start_day: int | None = None
    exp_day: int | None = None  # 0: never expires
    unit: str | None = None


class Ledger:
    """Applies activities to a :class:`LineStore`; knows the reward-point rules and each customer's cards."""

    def __init__(self, store: LineStore, rules: Mapping[str, RewardRule]) -> None:
        self.store = store
        self.rules = dict(rules)
        self.customers: dict[str, list[CardInfo]] = {}
        self._txn = 0

    def register(self, card: CardInfo) -> CardInfo:
        card = self.store.add_card(card)
        if card.customer and card not in self.customers.setdefault(card.customer, []):
            self.customers[card.customer].append(card)
        return card

    def refresh(self, card: CardInfo, *, party: str, customer: str, tender: str) -> None:
        """Take a card's current tender type and customer (an edit of its RetailLoyaltyCards row)."""
        with self.store.lock:
            if card.customer != customer:
                if card.customer and card in self.customers.get(card.customer, []):
                    self.customers[card.customer].remove(card)
                if customer:
                    self.customers.setdefault(customer, []).append(card)
            card.party, card.customer, card.tender = party, customer, tender

    def pool_of(self, card: CardInfo) -> list[CardInfo]:
        """The cards whose lines a redemption on ``card`` may consume: ``card`` first."""
        if card.tender != "AsContactTender" or not card.customer:
            return [card]
        return [card, *(c for c in self.customers.get(card.customer, []) if c is not card)]

    def default_reward(self, card: CardInfo) -> str:
        used = [ln.reward for ln in card.lines]
        if used:
            return max(set(used), key=used.count)
        redeemable = [r.reward_point_id for r in self.rules.values() if r.redeemable]
        if not redeemable and not self.rules:
            raise ActivityError("No reward point is defined: seed RetailLoyaltyRewardPoints first.")
        return (redeemable or list(self.rules))[0]

    def apply(self, activity: Activity) -> tuple[Line, list[Line]]:
        """Post one activity; returns the new line and the earlier lines whose ``Remaining`` changed."""
        card = self.store.card(activity.card)
        if card is None:
            raise ActivityError(f"The loyalty card '{activity.card}' does not exist.")
        kind = KINDS.get(activity.kind)
        if kind is None:
            raise ActivityError(f"Unknown activity '{activity.kind}'; one of {', '.join(KINDS)}.")
        reward = activity.reward_point or self.default_reward(card)
        rule = self.rules.get(reward)
        if rule is None:
            raise ActivityError(f"The reward point '{reward}' does not exist.")
        amount = cents(activity.points)
        if not rule.amount and amount % 100:
            raise ActivityError(f"Reward point '{reward}' counts whole points (type Quantity).")
        if kind != ADJUST and amount <= 0:
            raise ActivityError("points must be positive (the sign comes from the activity).")
        if kind == ADJUST and amount == 0:
            raise ActivityError("An adjustment of 0 points changes nothing.")
        day = activity.day
        changed: list[Line] = []
        with self.store.lock:
            if kind == REDEEM:
                if card.tender in ("NoTender", "Blocked"):
                    raise ActivityError(f"Card '{card.card_number}' ({card.tender}) cannot redeem points.")
                if not rule.redeemable:
                    raise ActivityError(f"Reward point '{reward}' is not redeemable.")
                pool = self.pool_of(card)
                have = available_points(pool, reward, day)
                if have < amount:
                    raise ActivityError(f"Card '{card.card_number}' has {have / 100:g} available '{reward}' points; "
                                        f"{amount / 100:g} cannot be redeemed.")
                consume(pool, reward, day, amount, changed=changed)
                line = self._line(card, kind, activity, reward, -amount, 0, day, day, 0)
            elif kind == RETURN or (kind == ADJUST and amount < 0):
                amount = abs(amount)
                short = consume([card], reward, day, amount, unvested_first=kind == RETURN, changed=changed)
                line = self._line(card, kind, activity, reward, -amount, -short, day, day, 0)
            else:  # earn, refund, positive adjust
                start = activity.start_day if activity.start_day is not None else (
                    rule.start_day(day) if kind == EARN else day)
                exp = activity.exp_day if activity.exp_day is not None else rule.exp_day(day)
                line = self._line(card, kind, activity, reward, amount, amount, day, start, exp)
            self.store.append(line)
        return line, _unique(changed)

    def new_txn(self) -> int:
        self._txn += 1
        return self._txn

    def _line(self, card: CardInfo, kind: int, activity: Activity, reward: str, qty: int, remaining: int, day: int,
              start: int, exp: int) -> Line:
        trans_type = LOYALTY_ADJUSTMENT if kind == ADJUST else RETAIL
        line = Line(card, self.store.next_rec_id(), kind, trans_type, self.new_txn(), day, activity.time, qty,
                    remaining, start, exp, reward)
        if activity.unit and trans_type == RETAIL:
            # A channel of the caller's choosing: its register transaction numbers (invented format, inferred).
            terminal = f"{activity.unit}-1"
            line.extra = {"OperatingUnitNumber": activity.unit, "Terminal": terminal,
                          "TransactionNumber": f"{terminal}-{line.txn:08d}", "ReceiptId": f"{activity.unit}{line.txn:09d}"}
        return line


def _unique(lines: list[Line]) -> list[Line]:
    seen: dict[int, Line] = {}
    for line in lines:
        seen.setdefault(id(line), line)
    return list(seen.values())


# -- generated history ---------------------------------------------------------------------------------------------


def generate(ledger: Ledger, cards: Sequence[CardInfo], lines: int, *, as_of: int, seed: int,
             enrolled: Mapping[str, int]) -> None:
    """``lines`` lines (exactly, when some reward point exists) over ``cards``, dated up to ``as_of``.

    Each card earns on its usual reward point from enrollment (at most three years back), redeems now and then when
    it may (pooled cards from the customer's cards generated before it), returns, gets adjustments and refunds.
    Deterministic for one seed; about a million lines in seconds (one random() per choice, cached dates).
    """
    rules = list(ledger.rules.values())
    if not cards or lines <= 0 or not rules:
        return
    rng = random.Random(seed * 7919 + 17)
    rand = rng.random
    redeemable = [r for r in rules if r.redeemable] or rules
    base, extra = divmod(lines, len(cards))
    counts = [base + (1 if i < extra else 0) for i in range(len(cards))]
    for i in range(0, len(cards) - 1, 2):  # uneven cards, same total
        shift = int(rand() * (counts[i + 1] + 1))
        counts[i] += shift
        counts[i + 1] -= shift
    store = ledger.store
    caches: dict[str, tuple[dict[int, int], dict[int, int]]] = {r.reward_point_id: ({}, {}) for r in rules}
    seen: dict[int, int] = {}
    intern = seen.setdefault
    rec_id = store.next_rec_id()
    txn = ledger._txn
    made = 0
    for card, count in zip(cards, counts, strict=True):
        if count <= 0:
            continue
        first = max(enrolled.get(card.key, as_of - 1000), as_of - 3 * 365)
        span = max(1, as_of - first)
        days = sorted(first + int(rand() * span) for _ in range(count))
        rule = redeemable[int(rand() * len(redeemable))] if rand() < 0.9 else rules[int(rand() * len(rules))]
        reward = rule.reward_point_id
        starts, exps = caches[reward]
        scale = 1 if rule.amount else 100  # Quantity points are whole
        can_redeem = card.tender in ("AsCardTender", "AsContactTender") and rule.redeemable
        pool = ledger.pool_of(card)
        own = card.lines
        for day in days:
            day = intern(day, day)
            r = rand()
            time = 28_800 + int(rand() * 46_800)
            time = intern(time, time)  # shared int objects: a million lines hold far fewer distinct values
            txn += 1
            rec_id += 1
            if r < 0.16:
                have = available_points(pool, reward, day) if can_redeem else 0
                if have >= 500:
                    amount = min(have, (5 + int(rand() * 56)) * 100) // scale * scale or scale
                    consume(pool, reward, day, amount)
                    own.append(Line(card, rec_id, REDEEM, RETAIL, txn, day, time, -amount, 0, day, 0, reward))
                    continue
                r = 0.5  # nothing to redeem: an earn instead
            if r < 0.22 and own:
                amount = (1 + int(rand() * 40)) * 100 // scale * scale or scale
                short = consume([card], reward, day, amount, unvested_first=True)
                line = Line(card, rec_id, RETURN, RETAIL, txn, day, time, -amount, -short, day, 0, reward)
            elif r < 0.26:
                amount = (1 + int(rand() * 50)) * 100 // scale * scale or scale
                if rand() < 0.3 and own:
                    short = consume([card], reward, day, amount)
                    line = Line(card, rec_id, ADJUST, LOYALTY_ADJUSTMENT, txn, day, time, -amount, -short, day, 0,
                                reward)
                else:
                    exp = exps.get(day)
                    if exp is None:
                        exp = exps[day] = rule.exp_day(day)
                    line = Line(card, rec_id, ADJUST, LOYALTY_ADJUSTMENT, txn, day, time, amount, amount, day, exp,
                                reward)
            else:
                kind = REFUND if r < 0.28 else EARN
                amount = ((1 + int(rand() * 20)) * 100 if kind == REFUND else 100 + int(rand() * 49_900)) \
                    // scale * scale or scale
                exp = exps.get(day)
                if exp is None:
                    exp = exps[day] = rule.exp_day(day)
                start = day
                if kind == EARN:
                    cached = starts.get(day)
                    if cached is None:
                        vested = rule.start_day(day)
                        cached = starts[day] = intern(vested, vested)
                    start = cached
                amount = intern(amount, amount)
                line = Line(card, rec_id, kind, RETAIL, txn, day, time, amount, amount, start, exp, reward)
            own.append(line)
        made += count
    store.count += made
    store.reserve_rec_ids(rec_id + 1)
    ledger._txn = txn
