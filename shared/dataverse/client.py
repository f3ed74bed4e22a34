"""Dataverse Web API client: upsert by alternate key, delete, paged reads, lookup resolution.

Wire facts follow docs/protocol-notes.md §2: headers of §2.1, upsert semantics of §2.5 (a PATCH without
``If-Match`` creates or updates; the response does not say which), ``@odata.bind`` of §2.6, paging
with ``Prefer: odata.maxpagesize`` of §2.8.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from shared.dataverse import batch
from shared.http.core import HttpCore
from shared.http.errors import LOOKUP_MISSING, ApiError, NotFoundError
from shared.http.limiter import AdaptiveLimiter
from shared.http.urls import filter_equal, key_segment, literal, odata_id
from shared.observability import log

logger = logging.getLogger("loyaltysync.dataverse")

ODATA_HEADERS = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
RECORD_NOT_FOUND_BY_KEY = "0x80060891"


class LookupMissingError(ApiError):
    """The referenced row (a currency, a company) does not exist in Dataverse yet."""

    error_class = LOOKUP_MISSING


DELETED_ENTITY = "$deletedEntity"


class ChangeFeed:
    """One pass over Dataverse change tracking; ``delta_link`` is known once the rows are exhausted.

    Without a delta link this is the baseline: every row, paged, with ``Prefer: odata.track-changes``.
    With one, the changed rows first, then ``{"id": ..., "reason": "deleted"}`` entries (marked with
    ``"@removed": True`` here). An expired or rejected link raises the server's error: re-baseline.
    """

    def __init__(self, client: DataverseClient, entity_set: str, select: list[str], delta_link: str | None) -> None:
        self.client = client
        self.entity_set = entity_set
        self.select = select
        self.start = delta_link
        self.delta_link: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        core = self.client.core
        headers = {**ODATA_HEADERS, "Prefer": f"odata.track-changes,odata.maxpagesize={self.client.page_size}"}
        if self.start:
            bodies = core.iter_bodies(self.start, headers=headers)
        else:
            bodies = core.iter_bodies(self.entity_set, params={"$select": ",".join(self.select)}, headers=headers)
        last: dict[str, Any] = {}
        for body in bodies:
            last = body
            for row in body.get("value") or []:
                if str(row.get("@odata.context", "")).endswith(DELETED_ENTITY) or row.get("reason") == "deleted":
                    yield {"@removed": True, "id": row.get("id")}
                else:
                    yield row
        self.delta_link = last.get("@odata.deltaLink")
        if not self.delta_link:
            raise ApiError("change tracking answered without an @odata.deltaLink", method="GET",
                           url=core.url(self.entity_set))


class DataverseClient:
    def __init__(self, core: HttpCore, *, page_size: int = 5000, limiter: AdaptiveLimiter | None = None) -> None:
        self.core = core
        self.limiter = limiter
        if limiter is not None:
            core.observers.append(limiter.observe)
        self.page_size = page_size
        self._lookup_cache: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def upsert(self, entity_set: str, key: Mapping[str, Any], body: Mapping[str, Any],
               *, guid_columns: frozenset[str] = frozenset()) -> None:
        """``PATCH set(key)`` without ``If-Match``: creates or updates; 204 either way (§2.5)."""
        path = key_segment(entity_set, key, guid_columns=guid_columns)
        self.core.request("PATCH", path, json=dict(body), headers={**ODATA_HEADERS, "If-None-Match": "null"})

    def upsert_multiple(self, entity_set: str, logical_name: str,
                        targets: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                        *, guid_columns: frozenset[str] = frozenset()) -> None:
        """``UpsertMultiple`` by alternate key (§2.10): ``@odata.type`` + ``@odata.id`` per target, key
        columns (lookups included) never in the body (the create path would fail with 0x80040216).
        All-or-nothing. ``@odata.id`` is a JSON value, not a path: the raw literal, never percent-encoded
        (§2.5); keys holding a character a key URL cannot carry must not come here (see ``find``)."""
        payload = {"Targets": [
            {"@odata.type": f"Microsoft.Dynamics.CRM.{logical_name}",
             "@odata.id": odata_id(entity_set, key, guid_columns=guid_columns), **body}
            for key, body in targets
        ]}
        self.core.request("POST", f"{entity_set}/Microsoft.Dynamics.CRM.UpsertMultiple", json=payload,
                          headers={**ODATA_HEADERS, "If-None-Match": "null"}, read_timeout_s=240)

    def batch_upserts(self, entity_set: str, targets: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                      *, guid_columns: frozenset[str] = frozenset(), update_only: bool = False) -> list[ApiError | None]:
        """One ``PATCH`` upsert per target in a ``$batch`` with ``continue-on-error``: per-target errors.
        ``update_only``: each part carries ``If-Match: *``, so a row that does not exist answers 404 instead
        of being created (docs/protocol-notes.md §2.5) - what a write of only some columns needs."""
        headers = (("If-Match", "*"),) if update_only else ()
        parts = [batch.BatchPart("PATCH", key_segment(entity_set, key, guid_columns=guid_columns), dict(body), headers)
                 for key, body in targets]
        boundary, data = batch.build(urlsplit(self.core.base_url).path, parts)
        response = self.core.request("POST", "$batch", data=data, headers={
            **ODATA_HEADERS, "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "Prefer": "odata.continue-on-error"}, read_timeout_s=240)
        results = batch.parse(response)
        if len(results) != len(parts):
            raise ApiError(f"$batch answered {len(results)} parts for {len(parts)} operations", method="POST",
                           url=self.core.url("$batch"))
        return [r.error for r in results]

    def find(self, entity_set: str, key: Mapping[str, Any], *, select: list[str],
             guid_columns: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        """The row whose key columns equal ``key``, found with ``$filter`` rather than a key URL: the way to
        reach a row whose key holds ``/ < > * % & : \\ ? +`` (docs/protocol-notes.md §2.5). None when there is none."""
        body = self.core.get_json(entity_set, params={
            "$select": ",".join(select), "$filter": filter_equal(key, guid_columns=guid_columns), "$top": "2"},
            headers=ODATA_HEADERS)
        rows = body.get("value") or []
        if len(rows) > 1:
            raise ApiError(f"{len(rows)} rows of {entity_set} match the key {dict(key)}: an alternate key is unique",
                           method="GET", url=self.core.url(entity_set))
        return rows[0] if rows else None

    def create(self, entity_set: str, body: Mapping[str, Any]) -> None:
        """``POST set``: 204 with ``OData-EntityId`` (§2.3). Not resent after a lost answer (HTTP core)."""
        self.core.request("POST", entity_set, json=dict(body), headers=ODATA_HEADERS)

    def update_by_id(self, entity_set: str, row_id: str, body: Mapping[str, Any]) -> None:
        """``PATCH set(<guid>)`` with ``If-Match: *``: an update only; a row gone meanwhile answers 404 (§2.5)."""
        path = key_segment(entity_set, {"id": row_id}, guid_columns=frozenset({"id"}), named=False)
        self.core.request("PATCH", path, json=dict(body), headers={**ODATA_HEADERS, "If-Match": "*"})

    def delete_by_id(self, entity_set: str, row_id: str) -> bool:
        """``DELETE set(<guid>)``; False when the row was already gone."""
        try:
            self.core.request("DELETE", key_segment(entity_set, {"id": row_id}, guid_columns=frozenset({"id"}),
                                                    named=False), headers=ODATA_HEADERS)
        except NotFoundError:
            return False
        return True

    def delete(self, entity_set: str, key: Mapping[str, Any], *, guid_columns: frozenset[str] = frozenset()) -> bool:
        """``DELETE set(key)``; False when the row was already gone (404)."""
        try:
            self.core.request("DELETE", key_segment(entity_set, key, guid_columns=guid_columns), headers=ODATA_HEADERS)
        except NotFoundError:
            return False
        return True

    def get(self, entity_set: str, key: Mapping[str, Any], *, select: list[str] | None = None,
            guid_columns: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        params = {"$select": ",".join(select)} if select else None
        try:
            return self.core.get_json(key_segment(entity_set, key, guid_columns=guid_columns), params=params,
                                      headers=ODATA_HEADERS)
        except NotFoundError:
            return None

    def iter_rows(self, entity_set: str, *, select: list[str] | None = None,
                  filter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every row, page by page (``Prefer: odata.maxpagesize``; nextLink followed verbatim)."""
        params: dict[str, str] = {}
        if select:
            params["$select"] = ",".join(select)
        if filter:
            params["$filter"] = filter
        headers = {**ODATA_HEADERS, "Prefer": f"odata.maxpagesize={self.page_size}"}
        for page in self.core.iter_pages(entity_set, params=params, headers=headers):
            yield from page

    def resolve(self, entity_set: str, primary_id: str, match_column: str, value: str) -> str:
        """The GUID of the row whose ``match_column`` equals ``value`` (cached; misses are not cached)."""
        cache_key = (entity_set, match_column, value.lower())
        with self._lock:
            cached = self._lookup_cache.get(cache_key)
        if cached:
            return cached
        body = self.core.get_json(
            entity_set,
            params={"$select": primary_id, "$filter": f"{match_column} eq {literal(value)}", "$top": "2"},
            headers=ODATA_HEADERS,
        )
        rows = body.get("value") or []
        if not rows:
            raise LookupMissingError(
                f"Couldn't resolve the guid for the field: {match_column}. The lookup wasn't found: {value}.",
                status=404, code=RECORD_NOT_FOUND_BY_KEY, method="GET", url=self.core.url(entity_set),
            )
        if len(rows) > 1:
            log(logger, logging.WARNING, "lookup is ambiguous, taking the first row", entity_set=entity_set,
                match_column=match_column, value=value)
        guid = str(rows[0][primary_id])
        with self._lock:
            self._lookup_cache[cache_key] = guid
        return guid

    def code_of(self, entity_set: str, primary_id: str, match_column: str, guid: str) -> str | None:
        """The ``match_column`` value of the row with this GUID (cached): a lookup read back as its code."""
        cache_key = (entity_set, f"@id:{match_column}", guid.lower())
        with self._lock:
            cached = self._lookup_cache.get(cache_key)
        if cached:
            return cached
        row = self.get(entity_set, {primary_id: guid}, select=[match_column], guid_columns=frozenset({primary_id}))
        if row is None or row.get(match_column) is None:
            return None
        code = str(row[match_column])
        with self._lock:
            self._lookup_cache[cache_key] = code
        return code

    def changes(self, entity_set: str, *, select: list[str], delta_link: str | None = None) -> ChangeFeed:
        """Rows changed since ``delta_link`` (all rows without one), and the link to resume from (§2.11)."""
        return ChangeFeed(self, entity_set, select, delta_link)

    def who_am_i(self) -> dict[str, Any]:
        """``GET WhoAmI`` (docs/protocol-notes.md §5.1): the app's user, business unit and organisation ids. The cheapest call
        that proves the URL, the token and the application user."""
        return self.core.get_json("WhoAmI", headers=ODATA_HEADERS)

    def attribute_names(self, logical_name: str) -> set[str]:
        """The logical names (lower case) of a table's columns: ``GET EntityDefinitions(LogicalName='<table>')/
        Attributes?$select=LogicalName``. An unknown table raises ``NotFoundError``."""
        body = self.core.get_json(f"EntityDefinitions(LogicalName={literal(logical_name)})/Attributes",
                                  params={"$select": "LogicalName"}, headers=ODATA_HEADERS)
        return {str(a["LogicalName"]).lower() for a in body.get("value") or [] if isinstance(a, dict) and a.get("LogicalName")}

    def probe(self, entity_set: str, select: Sequence[str]) -> None:
        """Read at most one row of ``entity_set`` with ``select``: proves the set, the columns and the read right."""
        self.core.get_json(entity_set, params={"$select": ",".join(select), "$top": "1"}, headers=ODATA_HEADERS)

    def forget_lookups(self) -> None:
        with self._lock:
            self._lookup_cache.clear()
