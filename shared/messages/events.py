"""The F&O business-event payload a Commerce callback carries (docs/protocol-notes.md §4.2).

The base contract fields are modelled strictly: present, of their exact JSON type, never coerced (a
``ControlNumber`` of ``true``, ``1.0`` or ``"1"`` is refused, not read as 1). Event-specific fields (the
entity's key properties, for the loyalty change events a partner adds) ride along as extras, and only
the template's key fields among them are ever read. Which event a tenant sends for loyalty changes is a
partner choice (no standard loyalty event exists; inferred): any event whose payload names the template's
F&O key properties will do.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TEST_EVENT_MARKER = "BusinessEventsTestEndpointContract"
MAX_CONTROL_NUMBER = 2**63 - 1  # int64, as F&O and Table Storage hold it
MAX_VERSION = 2**31 - 1
MAX_KEY_LENGTH = 255
# ASCII digits only (``\d`` would also take other scripts' digits) and no trailing newline (fullmatch).
_WCF_DATE = re.compile(r"/Date\((-?[0-9]{1,15})(?:([+-])([0-9]{2})([0-9]{2}))?\)/")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_DATA_AREA_ID = re.compile(r"[A-Za-z0-9]{1,4}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot name anything: empty or only whitespace, a control character (Unicode category
    Cc: C0, DEL and C1), a format character (category Cf: bidirectional overrides and isolates such as U+202E,
    zero-width characters, the BOM: invisible, and able to make one key read as another) or a lone surrogate
    (not Unicode text; no UTF-8 encoder, JSON writer or storage service takes it). None when it is usable."""
    if not value.strip():
        return "is empty or only whitespace"
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"holds a control character (U+{ord(ch):04X})"
        if category == "Cf":
            return f"holds a format character (U+{ord(ch):04X}, such as a bidirectional override)"
        if category == "Cs":
            return f"holds a lone surrogate (U+{ord(ch):04X}), which is not Unicode text"
    return None


def is_data_area_id(value: str) -> bool:
    """A legal entity's id: 1 to 4 letters or digits (``USMF`` or ``usmf``; case varies)."""
    return _DATA_AREA_ID.fullmatch(value) is not None


def wcf_date(value: str) -> datetime:
    """The instant of a WCF date ``/Date(<ms since the epoch>[+-hhmm])/`` (the milliseconds are UTC; the
    offset only says where it was recorded); ValueError when it is not one or not representable."""
    match = _WCF_DATE.fullmatch(value)
    if match is None:
        raise ValueError("must be a WCF date like /Date(1672408275000)/")
    if match.group(2) and (int(match.group(3)) > 14 or int(match.group(4)) > 59):
        raise ValueError("has a UTC offset beyond +-14:00")
    try:
        return _EPOCH + timedelta(milliseconds=int(match.group(1)))
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999") from None


_ISO_8601 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,7})?(?:Z|[+-][0-9]{2}:[0-9]{2})")


def iso_8601(value: str) -> datetime:
    """An ISO 8601 date and time with seconds and a UTC offset (``Z`` or ``+hh:mm``), up to 7 fractional digits
    as F&O writes them; ValueError naming the field when it is not one."""
    problem = "EventTimeIso8601 must be an ISO 8601 date and time with its offset, like 2022-12-30T13:51:15.2942742Z"
    if _ISO_8601.fullmatch(value) is None:
        raise ValueError(problem)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(problem) from None


def _usable_text(name: str, value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return value


class BusinessEvent(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    BusinessEventId: str = Field(min_length=1, max_length=200)
    EventId: str  # a GUID; kept in upper case, the form F&O sends, so duplicates compare case-insensitively
    ControlNumber: int = Field(ge=0, le=MAX_CONTROL_NUMBER)
    BusinessEventLegalEntity: str
    EventTime: str
    MajorVersion: int = Field(ge=0, le=MAX_VERSION)
    MinorVersion: int = Field(ge=0, le=MAX_VERSION)
    # Optional (not every publisher sends it); when present, an ISO 8601 date and time with its UTC offset, as F&O
    # writes it ("2022-12-30T13:51:15.2942742Z", docs/protocol-notes.md §4.2). Only checked, never used.
    EventTimeIso8601: str | None = Field(default=None, max_length=40)

    @field_validator("BusinessEventId")
    @classmethod
    def _business_event_id(cls, value: str) -> str:
        return _usable_text("BusinessEventId", value)

    @field_validator("EventId")
    @classmethod
    def _guid(cls, value: str) -> str:
        if _GUID.fullmatch(value) is None:
            raise ValueError("EventId must be a GUID like 3C47A4CD-6EDC-4319-B893-3F862EED65FD")
        return value.upper()

    @field_validator("BusinessEventLegalEntity")
    @classmethod
    def _legal_entity(cls, value: str) -> str:
        if not is_data_area_id(value):
            raise ValueError("BusinessEventLegalEntity must be a dataAreaId: 1 to 4 letters or digits")
        return value

    @field_validator("EventTime")
    @classmethod
    def _wcf_date(cls, value: str) -> str:
        try:
            wcf_date(value)
        except ValueError as exc:
            raise ValueError(f"EventTime {exc}") from None
        return value

    @field_validator("EventTimeIso8601", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("EventTimeIso8601 must be an ISO 8601 string when present, got null")
        if isinstance(value, str):
            iso_8601(value)
        return value

    @property
    def event_time(self) -> datetime:
        return wcf_date(self.EventTime)

    @property
    def is_test_event(self) -> bool:
        return is_test_event(self.BusinessEventId)

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def is_test_event(business_event_id: object) -> bool:
    """The activation test event (``BusinessEventsTestEndpointContract``), accepted and ignored (§4.1)."""
    return isinstance(business_event_id, str) and TEST_EVENT_MARKER in business_event_id


class WorkKind(StrEnum):
    """What a work item asks for. A business event and a data event's Created/Updated name a record (a data event
    may name it by ``Target.Id`` only, or by part of its key); a Deleted data event names it by ``Target.Id``; a
    refresh names none (a data event cut for size, or one carrying only part of the key and no ``Target.Id``): the
    template's pending refresh is asked for (coalesced: ``shared.state.refresh``)."""

    BUSINESS_EVENT = "business_event"
    DATA_UPSERT = "data_upsert"
    DATA_DELETE = "data_delete"
    REFRESH = "refresh"


_TARGET_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class WorkItem(BaseModel):
    """What a callback puts on its template's queue: enough to find the record, never its content.

    Validated again when a worker reads it, with the callback's own rules, so no value that a state write
    could refuse (a ControlNumber beyond int64, a key no storage service can encode) reaches the work."""

    model_config = ConfigDict(extra="forbid")

    template: str
    kind: WorkKind = WorkKind.BUSINESS_EVENT  # items queued before data events existed are business events
    key: dict[str, str] = Field(default_factory=dict)
    target_id: str = ""  # a data event's Target.Id (lower case), the only name a Deleted event gives its record
    # The key fields a data event did carry when it did not carry them all (an Updated event carries only the changed
    # columns): the worker looks the record up by them in Commerce before it asks for a scan.
    partial_key: dict[str, str] = Field(default_factory=dict)
    event_id: str = Field(default="", max_length=100)
    business_event_id: str = Field(default="", max_length=200)
    control_number: int = Field(default=0, ge=0, le=MAX_CONTROL_NUMBER, strict=True)
    event_time: str | None = None
    received_at: str
    correlation_id: str = ""

    @field_validator("key", "partial_key")
    @classmethod
    def _usable_key(cls, key: dict[str, str]) -> dict[str, str]:
        for prop, value in key.items():
            _usable_text(f"key field {prop}", value)
            if len(value) > MAX_KEY_LENGTH:
                raise ValueError(f"key field {prop} is longer than {MAX_KEY_LENGTH} characters")
        return key

    @field_validator("event_id", "business_event_id")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        return value if value == "" else _usable_text("the id", value)

    @field_validator("target_id")
    @classmethod
    def _target_id(cls, value: str) -> str:
        if value and _TARGET_ID.fullmatch(value) is None:
            raise ValueError("target_id must be a GUID in lower case")
        return value

    @model_validator(mode="after")
    def _names_what_it_needs(self) -> WorkItem:
        if self.kind is WorkKind.BUSINESS_EVENT and not self.key:
            raise ValueError("a business event's work item needs its key")
        if self.kind in (WorkKind.DATA_UPSERT, WorkKind.DATA_DELETE) and not (self.key or self.target_id):
            raise ValueError(f"a {self.kind.value} work item needs a key or a target_id")
        return self

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
