"""Commerce headquarters (F&O) OData client: paged reads, reads by full key, legal entities.

Wire facts follow docs/protocol-notes.md §3: entity keys include ``dataAreaId`` for company-specific entities,
``cross-company=true`` for reads across companies, server-driven paging with ``@odata.nextLink``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.http.core import HttpCore
from shared.http.errors import ApiError, NotFoundError, UnaddressableKeyError
from shared.http.urls import FO_KEY_UNSAFE, addressable, key_segment, literal
from shared.literals import DateTimeOffsetLiteral

ODATA_HEADERS = {"Accept": "application/json;odata.metadata=minimal", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}


class LegalEntitiesError(RuntimeError):
    """The companies to sync could not be listed from F&O (``legal_entities``); one line, for an operator."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"cannot list the legal entities to sync: reading the F&O entity set LegalEntities failed "
                         f"({cause}); set SYNC_LEGAL_ENTITIES to the company ids (comma-separated, e.g. usmf,usrt) "
                         f"or let the app's F&O user read LegalEntities")


class CommerceClient:
    def __init__(self, core: HttpCore) -> None:
        self.core = core

    def iter_rows(self, entity_set: str, *, select: list[str], company: str | None = None,
                  order_by: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row of the set: all companies, or one company of a company-specific set."""
        for page in self.iter_pages(entity_set, select=select, company=company, order_by=order_by):
            yield from page

    def iter_pages(self, entity_set: str, *, select: list[str], company: str | None = None,
                   order_by: list[str] | None = None, where: str | None = None, top: int | None = None,
                   on_total: Callable[[int], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        """The same rows, one server page at a time (≤ 10,000; docs/protocol-notes.md §3.2). With ``on_total``,
        ``$count=true`` is asked for and the total is reported once. ``where`` is an extra ``$filter``
        clause (a key range); ``top`` caps the rows."""
        params = {"cross-company": "true", "$select": ",".join(select)}
        if on_total is not None:
            params["$count"] = "true"
        clauses = [f"dataAreaId eq {literal(company)}"] if company is not None else []
        if where:
            clauses.append(f"({where})")
        if clauses:
            params["$filter"] = " and ".join(clauses)
        if top is not None:
            params["$top"] = str(top)
        if order_by:
            params["$orderby"] = ",".join(order_by)
        def first(body: dict[str, Any]) -> None:
            if on_total is not None and isinstance(body.get("@odata.count"), int):
                on_total(body["@odata.count"])

        yield from self.core.iter_pages(f"data/{entity_set}", params=params, headers=ODATA_HEADERS, on_first=first)

    def get(self, entity_set: str, key: Mapping[str, str], *, select: list[str] | None = None,
            where: str | None = None) -> dict[str, Any] | None:
        """One row by its full key; None when F&O answers 404. A key holding ``/`` or ``\\`` cannot be put in a
        path (F&O answers 404 "No route data was found", docs/protocol-notes.md §3.1): it is read with ``$filter`` on
        every key field and matched exactly here, since ``eq '…*…'`` is a wildcard match in F&O. ``where`` (a
        template's source filter) reads it that way too, with the filter: a row the filter leaves out is None."""
        params = {"cross-company": "true"}
        if select:
            params["$select"] = ",".join(select)
        if where or not addressable(key, FO_KEY_UNSAFE):
            if select:
                params["$select"] = ",".join([*select, *(name for name in key if name not in select)])
            params["$filter"] = " and ".join([*(f"{name} eq {literal(value)}" for name, value in key.items()),
                                              *([f"({where})"] if where else [])])
            for page in self.core.iter_pages(f"data/{entity_set}", params=params, headers=ODATA_HEADERS):
                for row in page:
                    if all(_same_key_value(name, row.get(name), value) for name, value in key.items()):
                        return row
            return None
        try:
            return self.core.get_json(self._path(entity_set, key), params=params, headers=ODATA_HEADERS)
        except NotFoundError:
            return None

    def find(self, entity_set: str, fields: Mapping[str, str], *, select: list[str], limit: int) -> list[dict[str, Any]]:
        """The rows (across companies) whose ``fields`` equal these values exactly, at most ``limit`` + 1 of them
        (more than ``limit`` means: too many to name one record). ``eq '…*…'`` is a wildcard match in F&O
        (docs/protocol-notes.md §3.2), so each row read is matched exactly here."""
        params = {"cross-company": "true", "$select": ",".join([*select, *(f for f in fields if f not in select)]),
                  "$filter": " and ".join(f"{name} eq {literal(value)}" for name, value in fields.items()),
                  "$top": str(limit + 1)}
        found: list[dict[str, Any]] = []
        for page in self.core.iter_pages(f"data/{entity_set}", params=params, headers=ODATA_HEADERS):
            found.extend(row for row in page
                         if all(_same_key_value(name, row.get(name), value) for name, value in fields.items()))
            if len(found) > limit:
                break
        return found[:limit + 1]

    def _path(self, entity_set: str, key: Mapping[str, str], *, method: str = "GET") -> str:
        if not addressable(key, FO_KEY_UNSAFE):
            raise UnaddressableKeyError(
                f"the key {dict(key)} holds '/' or '\\', which F&O cannot route in a URL path (404 'No route data "
                "was found'); the record is kept here instead of being written to another row",
                method=method, url=self.core.url(f"data/{entity_set}"))
        return f"data/{key_segment(entity_set, key, named=len(key) > 1)}"

    def create(self, entity_set: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /data/Set``: F&O answers 201 with the created entity (docs/protocol-notes.md §3.3)."""
        response = self.core.request("POST", f"data/{entity_set}", json=dict(body), headers=ODATA_HEADERS)
        created: dict[str, Any] = response.json() if response.content else {}
        return created

    def update(self, entity_set: str, key: Mapping[str, str], changes: Mapping[str, Any], *,
               etag: str | None = None) -> None:
        """``PATCH /data/Set(key)`` with only the changed fields; ``If-Match`` guards concurrent edits."""
        path = self._path(entity_set, key, method="PATCH")
        headers = {**ODATA_HEADERS, "If-Match": etag or "*"}
        self.core.request("PATCH", path, params={"cross-company": "true"}, json=dict(changes), headers=headers)

    def delete(self, entity_set: str, key: Mapping[str, str], *, etag: str | None = None) -> bool:
        """``DELETE /data/Set(key)``; False when it was already gone. ``etag``: only while the row is still
        the one last seen (412 otherwise)."""
        path = self._path(entity_set, key, method="DELETE")
        try:
            self.core.request("DELETE", path, params={"cross-company": "true"},
                              headers={**ODATA_HEADERS, "If-Match": etag or "*"})
        except NotFoundError:
            return False
        return True

    def legal_entities(self) -> list[str]:
        """Company ids (lower case) from the ``LegalEntities`` entity. A failed read, or none listed, is a
        ``LegalEntitiesError`` that names the entity set and the setting that replaces the read."""
        ids: list[str] = []
        try:
            for page in self.core.iter_pages("data/LegalEntities", params={"$select": "LegalEntityId"},
                                             headers=ODATA_HEADERS):
                ids.extend(str(row["LegalEntityId"]).lower() for row in page)
        except ApiError as exc:
            raise LegalEntitiesError(" ".join(str(exc).split())) from exc
        if not ids:
            raise LegalEntitiesError("it listed no companies")
        return sorted(set(ids))


def _same_key_value(name: str, actual: Any, wanted: str) -> bool:
    """Exact key match; ``dataAreaId`` compares case-insensitively (F&O stores it in lower case); a date key part as
    a date (``2024-01-01`` is the row's UTC date), a date-time one as an instant."""
    if not isinstance(actual, str):
        return False
    if isinstance(wanted, DateTimeOffsetLiteral):
        mine, theirs = _instant(actual), _instant(wanted.odata())
        if mine is None or theirs is None:
            return False
        return mine.date() == theirs.date() if "T" not in wanted else mine == theirs
    return actual.lower() == wanted.lower() if name == "dataAreaId" else actual == wanted


def _instant(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
