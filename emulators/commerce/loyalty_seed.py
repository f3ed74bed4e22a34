"""Generated loyalty programs, tiers, card tiers and transaction lines for the emulator's cards.

* ``RetailLoyaltyTiers``: a few tiers per program with increasing ``TierLevel`` (a higher level is a higher tier,
  inferred). Program and tier names are invented, Contoso-like (inferred).
* ``LoyaltyCardTiersV2``: per card, a program-membership row (no tier id, open ``ValidTo``: inferred), its tier
  history (some past, one current or none, some future, some with an open ``ValidTo``), and for a few cards a
  "General" affiliation. Dates are at midnight UTC (date fields, docs/domain-notes.md §6).
* ``RetailLoyaltyCardRewardPointTransactions``: :func:`emulators.commerce.loyalty_rules.generate` over the cards
  (the existing ``RetailLoyaltyCards``) and reward points (``RetailLoyaltyRewardPoints``).

Everything is deterministic for one seed and dated relative to ``as_of`` (the emulator clock's start).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from .loyalty_lines import CardInfo, LineStore, day_of, iso_day
from .loyalty_rules import Ledger, RewardRule, generate

Row = dict[str, Any]

#: (program, ((tier id, level), ...)): invented names (inferred).
PROGRAMS: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    ("Contoso Rewards", (("Basic", 1), ("Silver", 2), ("Gold", 3), ("Platinum", 4))),
    ("Contoso Club", (("Member", 10), ("Elite", 20))),
)
#: A "General" affiliation some cards belong to (inferred).
GENERAL_AFFILIATION = "Employees"


@dataclass(frozen=True)
class LoyaltySeed:
    tiers: list[Row]
    card_tiers: list[Row]
    ledger: Ledger


def customer_account(party: str) -> str:
    """The customer of a party: Contoso-like six digits (inferred; the card carries only the party number)."""
    party = party.strip()
    return f"{int(party):06d}" if party.isdigit() else party


def build_tiers() -> list[Row]:
    return [{"LoyaltyName": program, "TierId": tier, "ValidDateInterval": "", "TierLevel": level}
            for program, tiers in PROGRAMS for tier, level in tiers]


def _card_tier_rows(card: Mapping[str, Any], program: str, tiers: Sequence[tuple[str, int]], rng: random.Random,
                    as_of: int, open_to: str) -> tuple[list[Row], str]:
    """One card's rows and its current tier id ('' when none is current)."""
    number = str(card["CardNumber"])
    enrolled = min(day_of(str(card["LoyaltyEnrollmentDate"])), as_of - 1)

    def row(tier: str, start: int, end: int | None, *, affiliation: str = program, kind: str = "Loyalty",
            name: str = program) -> Row:
        return {"LoyaltyProgramName": name, "LoyaltyTierAffiliationName": affiliation, "LoyaltyTierId": tier,
                "LoyaltyCardNumber": number, "ValidFrom": iso_day(start),
                "ValidTo": open_to if end is None else iso_day(end), "AffiliationType": kind}

    rows = [row("", enrolled, None)]  # membership of the program only (inferred)
    level = 0
    start = enrolled
    current = ""
    while True:
        tier = tiers[level][0]
        if rng.random() < 0.25 and start <= as_of:
            # An open-ended grant (inferred: tiers granted without an end date).
            rows.append(row(tier, start, None))
            current = tier
            break
        end = start + rng.randint(180, 540)
        rows.append(row(tier, start, end))
        if start <= as_of <= end:
            current = tier
        if start > as_of or level + 1 >= len(tiers) or rng.random() < 0.35:
            if end < as_of and rng.random() < 0.5:
                current = ""  # lapsed: the last grant ended, only the membership row still holds
            elif end < as_of:
                rows.append(row(tier, end + 1, as_of + rng.randint(30, 365)))  # renewed at the same tier
                current = tier
            elif rng.random() < 0.3:
                nxt = tiers[min(level + 1, len(tiers) - 1)][0]
                rows.append(row(nxt, end + 1, end + 366))  # a future grant
            break
        level += 1
        start = end + 1
    names = [t for t, _ in tiers]
    held = {(r["LoyaltyTierId"], r["ValidFrom"]) for r in rows}
    higher = names[names.index(current) + 1:] if current else names[1:]
    if higher and rng.random() < 0.1:
        # A promotion granted on top of the tier held: two rows are current, the higher level wins (inferred).
        start = as_of - rng.randint(10, 100)
        if (higher[0], iso_day(start)) not in held:
            rows.append(row(higher[0], start, as_of + rng.randint(30, 200)))
            current = higher[0]
    if rng.random() < 0.1:
        # A grant that starts later (the next evaluation period), open-ended or for a year.
        start = as_of + rng.randint(5, 60)
        tier = names[min(names.index(current) + 1, len(names) - 1)] if current else names[0]
        if (tier, iso_day(start)) not in held:
            rows.append(row(tier, start, None if rng.random() < 0.5 else start + 365))
    if rng.random() < 0.05:
        rows.append(row("", enrolled, None, affiliation=GENERAL_AFFILIATION, kind="General",
                        name=GENERAL_AFFILIATION))
    return rows, current


def build_loyalty(cards: Sequence[Mapping[str, Any]], reward_points: Sequence[Mapping[str, Any]], *, lines: int,
                  as_of: date, seed: int, company: str, never_expires: str, open_valid_to: str) -> LoyaltySeed:
    rng = random.Random(seed * 104_729 + 3)
    as_of_day = as_of.toordinal()
    store = LineStore(never_expires)
    ledger = Ledger(store, {str(r["RewardPointId"]): RewardRule.from_row(r) for r in reward_points})
    card_tiers: list[Row] = []
    infos: list[CardInfo] = []
    enrolled: dict[str, int] = {}
    for card in sorted(cards, key=lambda c: str(c["CardNumber"]).casefold()):
        program, tiers = PROGRAMS[0] if rng.random() < 0.8 else PROGRAMS[1]
        rows, current = _card_tier_rows(card, program, tiers, rng, as_of_day, open_valid_to)
        card_tiers.extend(rows)
        party = str(card.get("PartyNumber") or "")
        info = ledger.register(CardInfo(
            str(card["CardNumber"]), party=party, customer=customer_account(party) if party else "",
            company=company, tender=str(card.get("CardTenderType") or "AsCardTender"), program=program, tier=current))
        infos.append(info)
        enrolled[info.key] = day_of(str(card["LoyaltyEnrollmentDate"]))
    generate(ledger, infos, lines, as_of=as_of_day, seed=seed, enrolled=enrolled)
    return LoyaltySeed(build_tiers(), card_tiers, ledger)
