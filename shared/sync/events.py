"""The F&O business-event payload a Commerce callback carries (protocols.md §4.2).

Only the base contract fields are modelled strictly; event-specific fields (the entity's key
properties, for the loyalty change events a partner adds) ride along as extras. Which event a
tenant sends for loyalty changes is a partner choice (no standard loyalty event exists; inferred):
any event whose payload names the template's F&O key properties will do.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

TEST_EVENT_MARKER = "BusinessEventsTestEndpointContract"
_WCF_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class BusinessEvent(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    BusinessEventId: str = Field(min_length=1, max_length=200)
    EventId: str = Field(default="", max_length=100)
    ControlNumber: int = Field(default=0, ge=0)
    BusinessEventLegalEntity: str = Field(default="", max_length=10)
    EventTime: str | None = None
    EventTimeIso8601: str | None = None
    MajorVersion: int = 0
    MinorVersion: int = 0

    @field_validator("EventTime")
    @classmethod
    def _wcf_date(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not _WCF_DATE.match(value):
            raise ValueError("EventTime must be a WCF date like /Date(1672408275000)/")
        return value

    @property
    def is_test_event(self) -> bool:
        return TEST_EVENT_MARKER in self.BusinessEventId

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class WorkItem(BaseModel):
    """What a callback puts on its template's queue: enough to find the record, never its content."""

    model_config = ConfigDict(extra="forbid")

    template: str
    key: dict[str, str]
    event_id: str = ""
    business_event_id: str = ""
    control_number: int = 0
    event_time: str | None = None
    received_at: str
    correlation_id: str = ""

    @property
    def order_key(self) -> str:
        """Sortable arrival order: receive time, then the event id for ties."""
        return f"{self.received_at}|{self.event_id or self.correlation_id}"


class WorkBatch(BaseModel):
    """Several work items in one queue message: callbacks that arrived together (group commit)."""

    model_config = ConfigDict(extra="forbid")

    items: list[WorkItem] = Field(min_length=1)


def work_items(message: str | bytes) -> list[WorkItem]:
    """The work items of a queue message: one ``WorkItem``, or a ``WorkBatch`` of them."""
    data = json.loads(message)
    if isinstance(data, dict) and "items" in data:
        return WorkBatch.model_validate(data).items
    return [WorkItem.model_validate(data)]
