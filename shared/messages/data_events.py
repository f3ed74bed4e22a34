"""F&O data events as a Dataverse webhook delivers them (docs/protocol-notes.md §4.4).

With the Power Platform integration, F&O's Create, Update and Delete data events travel through Dataverse: the
HTTPS endpoint receives a Dataverse ``RemoteExecutionContext`` whose ``MessageName`` is ``OnExternalCreated``,
``OnExternalUpdated`` or ``OnExternalDeleted`` on the entity's virtual table (``mserp_...``), with the record in
``InputParameters`` -> ``Target`` (attributes as ``{"key": column, "value": value}`` pairs). Documented: Created
carries the properties set at creation, Updated only the changed ones, Deleted only ``Target.Id`` (a GUID holding
the entity id and the RecId). There is no ``EventId`` and no ``ControlNumber``.

This module reads the envelope only, strictly where the app relies on it (message, table, ``Target.Id``, the
attribute list) and not at all elsewhere: attribute values other than the key columns are never used (enum
integers are documented as unstable; the worker re-reads the record from F&O OData). Which columns hold the
key is the template's business (``data_event`` in its file), so a body is parsed without knowing it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.messages.events import text_problem

MARKERS = ("MessageName", "InputParameters", "PrimaryEntityName")
SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
ENTITY_NAME_HEADER = "x-ms-dynamics-entity-name"
_GUID = re.compile(r"\{?([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}?")
_EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
_MAX_NAME = 128
_MAX_TEXT = 100
# A fixed namespace for the de-duplication ids of data events (they carry no EventId): uuid5 of what identifies one.
_DEDUP_NAMESPACE = uuid.UUID("5b0f1d53-3c63-4c1e-9d2e-6a1f2f0d7c41")


class DataChange(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


MESSAGES = {"onexternalcreated": DataChange.CREATED, "onexternalupdated": DataChange.UPDATED,
            "onexternaldeleted": DataChange.DELETED}


class DataEventError(ValueError):
    """The body is a RemoteExecutionContext the app cannot read; the text names the member at fault."""


def looks_like_data_event(raw: Mapping[str, Any]) -> bool:
    """A JSON object that is meant as a Dataverse execution context (and not as a business event)."""
    return "BusinessEventId" not in raw and any(marker in raw for marker in MARKERS)


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A request header, its name compared case-insensitively."""
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def size_exceeded(headers: Mapping[str, str] | None) -> bool:
    """Dataverse cut the body (over 256 KB): ``InputParameters``, images and ``ParentContext`` were removed."""
    value = header(headers, SIZE_EXCEEDED_HEADER)
    return value is not None and value.strip().lower() not in ("", "false", "0", "no")


@dataclass(frozen=True)
class EntityImage:
    """An ``Entity`` (or ``EntityReference``) value: its table, its id and its attributes by lower-case column."""

    logical_name: str | None
    id: str | None  # lower case, without braces; None when absent or the empty GUID
    attributes: dict[str, list[Any]] = field(default_factory=dict)  # a column named twice (in any case) has two
    raw_attributes: list[Any] = field(default_factory=list)

    def values(self, column: str) -> list[Any]:
        return self.attributes.get(column.lower(), [])


@dataclass(frozen=True)
class DataEvent:
    message_name: str
    change: DataChange | None  # None: another message (not an F&O data event)
    entity: str | None  # the table it names, lower case
    target: EntityImage | None  # None when the body was cut (size exceeded) or the message is another one
    pre_image: EntityImage | None
    operation_id: str | None  # lower case; None when absent or the empty GUID
    created_on: str | None
    size_exceeded: bool

    @property
    def target_id(self) -> str | None:
        return self.target.id if self.target is not None else None

    def dedup_id(self) -> str:
        """What makes two deliveries the same event (they carry no EventId), as a GUID in upper case.

        ``OperationId`` when there is one (with the message and ``Target.Id``, so an id shared by several records
        of one operation cannot merge them); otherwise ``MessageName`` + ``Target.Id`` + ``OperationCreatedOn`` (in
        whole seconds on F&O's events) plus a digest of the attributes, so two updates of one record in the same
        second are two events while a redelivery, byte for byte the same, is one. Case-normalised."""
        target = (self.target_id or "").lower()
        message = self.message_name.lower()
        if self.operation_id:
            name = f"op|{self.operation_id}|{message}|{target}"
        else:
            attributes = json.dumps(self.target.raw_attributes if self.target else None, sort_keys=True,
                                    separators=(",", ":"), ensure_ascii=True)
            digest = hashlib.sha256(attributes.encode("ascii")).hexdigest()
            name = f"ev|{message}|{target}|{(self.created_on or '').lower()}|{digest}"
        return str(uuid.uuid5(_DEDUP_NAMESPACE, name)).upper()


def _text(raw: Mapping[str, Any], name: str, *, required: bool, limit: int = _MAX_TEXT) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise DataEventError(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise DataEventError(f"{name} must be a string, got {_json_type(value)}")
    problem = text_problem(value)
    if problem is not None:
        raise DataEventError(f"{name} {problem}")
    if len(value) > limit:
        raise DataEventError(f"{name} is longer than {limit} characters")
    return value


def _guid(value: Any, name: str) -> str | None:
    """A GUID in lower case without braces; None for null or the empty GUID (no identity)."""
    if value is None:
        return None
    if not isinstance(value, str) or (match := _GUID.fullmatch(value)) is None:
        raise DataEventError(f"{name} must be a GUID like 00004951-0000-0000-5e1a-005001000000")
    guid = match.group(1).lower()
    return None if guid == _EMPTY_GUID else guid


def _json_type(value: Any) -> str:
    return {type(None): "null", bool: "boolean", int: "number", float: "number", list: "array",
            dict: "object", str: "string"}.get(type(value), type(value).__name__)


def _pairs(value: Any, name: str) -> list[tuple[str, Any]]:
    """A DataContract key-value list (``[{"key": ..., "value": ...}, ...]``)."""
    if not isinstance(value, list):
        raise DataEventError(f"{name} must be an array of {{key, value}} pairs, got {_json_type(value)}")
    pairs: list[tuple[str, Any]] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str) or "value" not in pair:
            raise DataEventError(f"{name}[{i}] must be an object with a string 'key' and a 'value'")
        pairs.append((pair["key"], pair["value"]))
    return pairs


def _image(value: Any, name: str) -> EntityImage:
    if not isinstance(value, dict):
        raise DataEventError(f"{name} must be an Entity object, got {_json_type(value)}")
    logical = _text(value, "LogicalName", required=False, limit=_MAX_NAME)
    target_id = _guid(value.get("Id"), f"{name}.Id")
    raw_attributes = value.get("Attributes")
    attributes: dict[str, list[Any]] = {}
    if raw_attributes is not None:
        for column, item in _pairs(raw_attributes, f"{name}.Attributes"):
            attributes.setdefault(column.lower(), []).append(item)
    return EntityImage(logical.lower() if logical else None, target_id, attributes,
                       raw_attributes if isinstance(raw_attributes, list) else [])


def parse_data_event(raw: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> DataEvent:
    """Read a RemoteExecutionContext; ``DataEventError`` naming the member when it cannot be read."""
    message = _text(raw, "MessageName", required=True)
    assert message is not None
    change = MESSAGES.get(message.lower())
    primary = _text(raw, "PrimaryEntityName", required=False, limit=_MAX_NAME)
    operation_id = _guid(raw.get("OperationId"), "OperationId")
    created_on = _text(raw, "OperationCreatedOn", required=False)
    cut = size_exceeded(headers)
    target: EntityImage | None = None
    pre_image: EntityImage | None = None
    parameters = raw.get("InputParameters")
    if parameters is None:
        if not cut and change is not None:
            raise DataEventError(f"InputParameters is missing (and {SIZE_EXCEEDED_HEADER} does not say it was cut)")
    else:
        found: dict[str, Any] = {}
        for name, value in _pairs(parameters, "InputParameters"):
            if name in found:
                raise DataEventError(f"InputParameters names {name!r} twice")
            found[name] = value
        if change is not None:
            if "Target" not in found:
                raise DataEventError("InputParameters holds no Target")
            target = _image(found["Target"], "Target")
            if found.get("PreImage") is not None:
                pre_image = _image(found["PreImage"], "PreImage")
    entity = primary.lower() if primary else None
    if target is not None and target.logical_name:
        if entity is not None and entity != target.logical_name:
            raise DataEventError(f"PrimaryEntityName {primary!r} and Target.LogicalName "
                                 f"{target.logical_name!r} name different tables")
        entity = entity or target.logical_name
    if entity is None:
        entity_header = header(headers, ENTITY_NAME_HEADER)
        entity = entity_header.strip().lower() if entity_header and entity_header.strip() else None
    if entity is None and change is not None:
        raise DataEventError("the event names no table (PrimaryEntityName, Target.LogicalName)")
    return DataEvent(message, change, entity, target, pre_image, operation_id, created_on, cut)
