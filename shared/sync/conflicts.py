"""Conflicts: both sides changed a record since the last sync. The verdicts are pure functions of the hashes
and the policy (``SYNC_CONFLICT_POLICY``); ``ConflictResolver`` records a conflict and hands a Dataverse win
to the side that writes Commerce. Both directions get the same resolver through their constructors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from shared.observability import correlation_id, log
from shared.state.store import StateStore

logger = logging.getLogger("loyaltysync.sync")


class Policy(StrEnum):
    COMMERCE_WINS = "commerce_wins"  # the default: Commerce is the system of record for loyalty
    DATAVERSE_WINS = "dataverse_wins"


class Verdict(StrEnum):
    NO_CONFLICT = "no_conflict"  # write as usual
    COMMERCE_WINS = "commerce_wins"  # write Commerce's whole record to Dataverse
    DATAVERSE_WINS = "dataverse_wins"  # write the Dataverse row to Commerce instead


def _winner(policy: Policy) -> Verdict:
    return Verdict.COMMERCE_WINS if policy is Policy.COMMERCE_WINS else Verdict.DATAVERSE_WINS


def outbound_verdict(dataverse_hash: str | None, commerce_hash: str, last_shared: str, policy: Policy,
                     ours: frozenset[str] = frozenset()) -> Verdict:
    """Commerce changed and is about to be written to Dataverse. Did Dataverse change too? Not when it has no
    row (``None``), still holds the image of the last sync, already holds Commerce's image, or holds an image
    this app itself just wrote (``ours``: a re-read after losing a race to a concurrent writer)."""
    if dataverse_hash is None or dataverse_hash in (last_shared, commerce_hash) or dataverse_hash in ours:
        return Verdict.NO_CONFLICT
    return _winner(policy)


def inbound_verdict(commerce_hash: str, dataverse_hash: str, last_shared: str | None, policy: Policy) -> Verdict:
    """Dataverse changed and is about to be written to Commerce. Did Commerce change too since the last sync?
    A record with no sync history whose sides differ counts as changed on both."""
    if commerce_hash == dataverse_hash:
        return Verdict.NO_CONFLICT
    if last_shared and commerce_hash == last_shared:
        return Verdict.NO_CONFLICT
    return _winner(policy)


# Writes a Dataverse row to Commerce after Dataverse won a conflict; returns the outcome.
CommerceSide = Callable[[Mapping[str, Any]], str]


class ConflictResolver:
    """One template's conflicts: the policy, the record of each conflict, and the way a Dataverse win reaches
    Commerce (the inbound side registers itself when it is built; without it, Commerce wins)."""

    def __init__(self, state: StateStore, template: str, policy: Policy | str = Policy.COMMERCE_WINS) -> None:
        self.state = state
        self.template = template
        self.policy = Policy(policy)
        self.commerce_side: CommerceSide | None = None

    def register_commerce_side(self, apply: CommerceSide) -> None:
        self.commerce_side = apply

    def outbound(self, dataverse_hash: str | None, commerce_hash: str, last_shared: str,
                 ours: frozenset[str] = frozenset()) -> Verdict:
        verdict = outbound_verdict(dataverse_hash, commerce_hash, last_shared, self.policy, ours)
        if verdict is Verdict.DATAVERSE_WINS and self.commerce_side is None:
            return Verdict.COMMERCE_WINS  # one-way: nothing can write Commerce
        return verdict

    def inbound(self, commerce_hash: str, dataverse_hash: str, last_shared: str | None) -> Verdict:
        return inbound_verdict(commerce_hash, dataverse_hash, last_shared, self.policy)

    def record(self, row_key: str, verdict: Verdict, *, commerce: Mapping[str, Any], dataverse: Mapping[str, Any],
               detected_by: str) -> None:
        winner = "commerce" if verdict is Verdict.COMMERCE_WINS else "dataverse"
        self.state.conflicts.record(self.template, row_key, commerce=dict(commerce), dataverse=dict(dataverse),
                                   winner=winner, detected_by=detected_by, correlation_id=correlation_id())
        log(logger, logging.WARNING, "conflict: both sides changed since the last sync", template=self.template,
            key=row_key, winner=winner, detected_by=detected_by)

    def dataverse_wins(self, dataverse_row: Mapping[str, Any]) -> str:
        assert self.commerce_side is not None
        return self.commerce_side(dataverse_row)
