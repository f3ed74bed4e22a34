"""Scan task messages: one planned key range, or one delete check, of a fanned-out full scan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PageTask(BaseModel):
    """A queue message of a fanned-out full scan: process one planned key range of a run, or one delete
    check (``kind="deletes"``; ``index`` is its number)."""

    kind: Literal["page", "deletes"] = "page"
    template: str = Field(min_length=1, max_length=100)
    scope: str = Field(min_length=1, max_length=100)
    run_id: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=0)
