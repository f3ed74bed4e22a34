"""Writes mapped records into Dataverse: alternate-key upserts with lookups bound by ``@odata.bind``."""

from __future__ import annotations

from typing import Any

from shared.dataverse.client import RECORD_NOT_FOUND_BY_KEY, DataverseClient, LookupMissingError
from shared.http.errors import NotFoundError
from shared.mapping.plan import DataverseRecord, LookupValue, Plan


class DataverseWriter:
    """Turns a ``DataverseRecord`` into ``PATCH set(alternate key)`` with the mapped columns."""

    def __init__(self, client: DataverseClient, plan: Plan) -> None:
        self.client = client
        self.plan = plan
        dv = plan.template.dataverse
        self.entity_set = dv.entity_set
        self.company = dv.company
        # A key part that is a lookup is addressed as _<nav>_value=<guid> (protocols.md §2.5).
        self.company_key = f"_{self.company.navigation_property}_value" if self.company else None
        self.guid_columns = frozenset({self.company_key} if self.company_key else set())

    def company_guid(self, company: str) -> str:
        assert self.company is not None
        return self.client.resolve(self.company.entity_set, self.company.primary_id, self.company.match_column,
                                   company.upper())

    def dataverse_key(self, record_columns: dict[str, Any], company: str | None) -> dict[str, Any]:
        key: dict[str, Any] = {}
        for column in self.plan.alternate_key_columns:
            if self.company is not None and column == self.company.navigation_property:
                assert company is not None and self.company_key is not None
                key[self.company_key] = self.company_guid(company)
            else:
                key[column] = record_columns[column]
        return key

    def key_for(self, key: tuple[str, ...]) -> dict[str, Any]:
        """The Dataverse alternate key for an F&O key (for deletes, where no row is at hand)."""
        fo = self.plan.key_as_dict(key)
        columns = {dv: fo[prop] for dv, prop in self.plan._dataverse_key_from_fo.items()}
        return self.dataverse_key(columns, self.plan.company_of(key))

    def body(self, record: DataverseRecord) -> dict[str, Any]:
        body: dict[str, Any] = {}
        key_columns = set(self.plan.alternate_key_columns)
        for column, value in record.columns.items():
            if column in key_columns:
                continue  # key columns never go in the body (protocols.md §2.5, §2.10)
            if isinstance(value, LookupValue):
                spec = value.spec
                guid = self.client.resolve(spec.entity_set, spec.primary_id, spec.match_column, value.match_value)
                body[f"{spec.navigation_property}@odata.bind"] = f"/{spec.entity_set}({guid})"
            elif value is None and self._is_lookup(column):
                body[f"{column}@odata.bind"] = None  # clears the lookup (inferred)
            else:
                body[column] = value
        if self.company is not None and record.company is not None:
            body[f"{self.company.navigation_property}@odata.bind"] = (
                f"/{self.company.entity_set}({self.company_guid(record.company)})"
            )
        return body

    def _is_lookup(self, column: str) -> bool:
        return any(row.lookup is not None and row.lookup.navigation_property == column for row in self.plan.template.fields)

    def upsert(self, record: DataverseRecord) -> None:
        body = self.body(record)
        key = self.dataverse_key(record.columns, record.company)
        try:
            self.client.upsert(self.entity_set, key, body, guid_columns=self.guid_columns)
        except NotFoundError as exc:
            if exc.code == RECORD_NOT_FOUND_BY_KEY:
                # A cached lookup GUID whose row was deleted: forget the cache so the next try re-resolves.
                self.client.forget_lookups()
                raise LookupMissingError(exc.reason, status=404, code=exc.code, method=exc.method, url=exc.url) from exc
            raise

    def delete(self, key: tuple[str, ...]) -> bool:
        return self.client.delete(self.entity_set, self.key_for(key), guid_columns=self.guid_columns)
