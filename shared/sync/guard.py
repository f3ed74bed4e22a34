"""The mass-delete guard: how many Dataverse rows a full scan may delete without an operator's consent.

A scan whose source shrank by mistake (Commerce reseeded, a wrong environment, a data refresh) would
otherwise delete the difference in Dataverse and report the run as completed. Like Entra Connect's
"prevent accidental deletes" (threshold 500), a run that would delete more than ``SYNC_DELETE_THRESHOLD``
rows of a scope, or more than ``SYNC_DELETE_THRESHOLD_SHARE`` of the scope's synced records, deletes
nothing and ends ``deletes_held``. The share is only judged from ``MASS_DELETE_FLOOR`` deletes on, so
deleting one of a company's three loyalty levels is not a mass delete.

An operator's approval (on the scope's watermark) lets the next run delete up to the approved number more
than the guard allows; whichever run closes next spends it, so an approval never lingers for a later,
unrelated shrink. The decision is pure: ``decide`` takes the counts and the watermark, ``apply`` writes the
outcome (the hold, or its end, and the spent approval) onto the watermark when the run closes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from shared.state.store import Watermark

MASS_DELETE_FLOOR = 10  # the share is judged from this many deletes on (a small scope may lose a few rows)
APPROVE_HINT = "approve with 'python -m shared.cli approve-deletes' or POST /api/ops/approve-deletes"


@dataclass(frozen=True)
class DeleteDecision:
    """What a run's delete search decided, from its counts: delete the candidates, or hold them."""

    candidates: int  # keys no range saw and Commerce confirmed missing
    states: int  # the scope's synced records the search read
    allowed: int  # deletes the guard allows without consent
    hold: bool
    approved: int = 0  # an operator's approval taken into account (0: none)
    approval: str = ""  # its time (``approved_at``), to spend exactly that approval
    approved_by: str = ""
    limit: str = ""  # which setting the allowance comes from

    @property
    def reason(self) -> str:
        """One line for the run's detail and the logs."""
        if self.hold:
            approved = f" + {self.approved} approved by {self.approved_by}" if self.approved else ""
            return (f"{self.candidates} deletes held, nothing deleted: more than {self.allowed}{approved} "
                    f"({self.limit}); {APPROVE_HINT}, or restore the records in Commerce")
        if self.approved and self.candidates > self.allowed:
            return f"{self.candidates} deletes approved by {self.approved_by} at {self.approval}"
        return ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DeleteDecision:
        return cls(**json.loads(text))

    def apply(self, mark: Watermark, run_id: str, now: str) -> None:
        """Record the outcome on the scope's watermark as the run closes: the hold (or that none is left), and
        the approval this decision took into account as spent. An approval given after the decision stays
        pending for the next run."""
        if self.hold:
            mark.held_deletes, mark.held_states, mark.held_run, mark.held_at = self.candidates, self.states, run_id, now
        else:
            mark.held_deletes, mark.held_states, mark.held_run, mark.held_at = 0, 0, "", ""
        if self.approval and mark.approval_pending and mark.approved_at == self.approval:
            mark.approval_spent_by = run_id


@dataclass(frozen=True)
class DeleteGuard:
    """``threshold``: most deletes of a scope without consent; ``share``: most deletes as a share of the scope's
    synced records; ``enabled``: False with ``SYNC_DELETE_POLICY=ignore`` (no Dataverse row is deleted)."""

    threshold: int = 500
    share: float = 0.2
    enabled: bool = True

    def allowed(self, states: int) -> tuple[int, str]:
        """The deletes allowed among ``states`` synced records, and which setting sets that number."""
        by_share = max(MASS_DELETE_FLOOR, int(self.share * states + 1e-9))  # 0.29 * 100 is 28.999…
        if self.threshold <= by_share:
            return self.threshold, f"SYNC_DELETE_THRESHOLD={self.threshold}"
        return by_share, f"SYNC_DELETE_THRESHOLD_SHARE={self.share:g} of {states} synced records"

    def decide(self, candidates: int, states: int, mark: Watermark) -> DeleteDecision:
        allowed, limit = self.allowed(states)
        pending = mark.approval_pending
        approved = mark.approved_deletes if pending else 0
        hold = self.enabled and candidates > allowed + approved
        return DeleteDecision(candidates, states, allowed, hold, approved=approved,
                              approval=mark.approved_at if pending else "",
                              approved_by=mark.approved_by if pending else "", limit=limit)
