"""Scan task messages: one planned key range, one delete check or one delete pass of a fanned-out full scan, or one
key range of a fanned-out inbound baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PageTask(BaseModel):
    """A queue message of a fanned-out full scan: process one planned key range of a run, one delete check
    (``kind="deletes"``: count the delete candidates of some state buckets) or one delete pass
    (``kind="delete_pass"``: delete them, once the run decided to), or of an inbound baseline one key range
    (``kind="inbound"``: compare Dataverse's rows of the range with Commerce's) or the rest of its token pass and
    planning (``kind="inbound_plan"``, index 0); ``index`` is its number."""

    kind: Literal["page", "deletes", "delete_pass", "inbound", "inbound_plan"] = "page"
    template: str = Field(min_length=1, max_length=100)
    scope: str = Field(min_length=1, max_length=100)
    run_id: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=0)
