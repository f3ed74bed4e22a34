"""Scan task messages: one planned key range, one delete check or one delete pass of a fanned-out full scan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PageTask(BaseModel):
    """A queue message of a fanned-out full scan: process one planned key range of a run, one delete check
    (``kind="deletes"``: count the delete candidates of some state buckets) or one delete pass
    (``kind="delete_pass"``: delete them, once the run decided to); ``index`` is its number."""

    kind: Literal["page", "deletes", "delete_pass"] = "page"
    template: str = Field(min_length=1, max_length=100)
    scope: str = Field(min_length=1, max_length=100)
    run_id: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=0)
