"""Dataverse metadata Web API: what a table, its columns and keys look like, and sending metadata creates.

On the HTTP core (token per request, bounded retries, OData errors as typed exceptions). Wire facts from
docs/protocol-notes.md §2.14: ``EntityDefinitions(LogicalName='<t>')`` with ``$select``, its ``Attributes`` and
``Keys``; creates are POSTs carrying ``MSCRM.SolutionUniqueName``; solutions and publishers are rows of the
``solutions`` and ``publishers`` tables (a solution's publisher is its ``publisherid`` lookup).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.dataverse.client import ODATA_HEADERS
from shared.http.core import HttpCore
from shared.http.errors import ApiError, NotFoundError
from shared.http.urls import literal

SOLUTION_HEADER = "MSCRM.SolutionUniqueName"
ACTIVE = "Active"
_ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class EntityInfo(_Read):
    logical_name: str = Field(alias="LogicalName")
    entity_set: str | None = Field(default=None, alias="EntitySetName")
    primary_id: str | None = Field(default=None, alias="PrimaryIdAttribute")
    primary_name: str | None = Field(default=None, alias="PrimaryNameAttribute")
    metadata_id: str | None = Field(default=None, alias="MetadataId")


class AttributeInfo(_Read):
    logical_name: str = Field(alias="LogicalName")
    schema_name: str | None = Field(default=None, alias="SchemaName")
    attribute_type: str | None = Field(default=None, alias="AttributeType")


class KeyInfo(_Read):
    schema_name: str = Field(alias="SchemaName")
    logical_name: str | None = Field(default=None, alias="LogicalName")
    key_attributes: list[str] = Field(default_factory=list, alias="KeyAttributes")
    status: str = Field(default="", alias="EntityKeyIndexStatus")  # Pending, InProgress, Active, Failed (§2.14)


class SolutionInfo(_Read):
    solution_id: str = Field(alias="solutionid")
    unique_name: str = Field(alias="uniquename")
    publisher_id: str | None = Field(default=None, alias="_publisherid_value")


class PublisherInfo(_Read):
    publisher_id: str = Field(alias="publisherid")
    unique_name: str = Field(alias="uniquename")
    prefix: str = Field(alias="customizationprefix")


def _entity(logical_name: str) -> str:
    return f"EntityDefinitions(LogicalName={literal(logical_name)})"


class MetadataClient:
    """Reads of table definitions, and the POSTs that create tables, columns, lookups and keys."""

    def __init__(self, core: HttpCore) -> None:
        self.core = core

    def entity(self, logical_name: str) -> EntityInfo | None:
        """The table's definition; None when Dataverse has no such table (404)."""
        try:
            body = self.core.get_json(_entity(logical_name), params={
                "$select": "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"}, headers=ODATA_HEADERS)
        except NotFoundError:
            return None
        return EntityInfo.model_validate(body)

    def attributes(self, logical_name: str) -> dict[str, AttributeInfo]:
        """The table's columns by logical name (lower case). An unknown table raises ``NotFoundError``."""
        body = self.core.get_json(f"{_entity(logical_name)}/Attributes",
                                  params={"$select": "LogicalName,SchemaName,AttributeType"}, headers=ODATA_HEADERS)
        found = (AttributeInfo.model_validate(a) for a in body.get("value") or [] if isinstance(a, dict))
        return {a.logical_name.lower(): a for a in found}

    def keys(self, logical_name: str) -> dict[str, KeyInfo]:
        """The table's alternate keys by lower-cased schema name, with their index states."""
        body = self.core.get_json(f"{_entity(logical_name)}/Keys",
                                  params={"$select": "SchemaName,LogicalName,KeyAttributes,EntityKeyIndexStatus"},
                                  headers=ODATA_HEADERS)
        found = (KeyInfo.model_validate(k) for k in body.get("value") or [] if isinstance(k, dict))
        return {k.schema_name.lower(): k for k in found}

    def solution(self, unique_name: str) -> SolutionInfo | None:
        body = self.core.get_json("solutions", params={
            "$select": "solutionid,uniquename,_publisherid_value", "$filter": f"uniquename eq {literal(unique_name)}"},
            headers=ODATA_HEADERS)
        rows = body.get("value") or []
        return SolutionInfo.model_validate(rows[0]) if rows else None

    def publisher(self, publisher_id: str) -> PublisherInfo | None:
        try:
            body = self.core.get_json(f"publishers({publisher_id})",
                                      params={"$select": "publisherid,uniquename,customizationprefix"},
                                      headers=ODATA_HEADERS)
        except NotFoundError:
            return None
        return PublisherInfo.model_validate(body)

    def publisher_with_prefix(self, prefix: str) -> PublisherInfo | None:
        body = self.core.get_json("publishers", params={
            "$select": "publisherid,uniquename,customizationprefix",
            "$filter": f"customizationprefix eq {literal(prefix)}"}, headers=ODATA_HEADERS)
        rows = body.get("value") or []
        return PublisherInfo.model_validate(rows[0]) if rows else None

    def post(self, path: str, body: Mapping[str, Any], *, solution: str | None) -> str | None:
        """One create; the id in the answer's ``OData-EntityId`` (a MetadataId or a row's GUID), if any. Never resent
        after a lost answer (the HTTP core resends no POST): a create that did land is found by the next read."""
        headers = {**ODATA_HEADERS, **({SOLUTION_HEADER: solution} if solution else {})}
        response = self.core.request("POST", path, json=dict(body), headers=headers)
        match = _ENTITY_ID.search(response.headers.get("OData-EntityId", ""))
        return match.group(1) if match else None


def is_missing(exc: ApiError) -> bool:
    """A read that failed because the table does not exist."""
    return isinstance(exc, NotFoundError)
