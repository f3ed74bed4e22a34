"""Both stores seen side by side, for record-by-record comparisons in end-to-end tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from shared.mapping.plan import LookupValue
from shared.runtime import Runtime


@dataclass
class Stores:
    runtime: Runtime
    dataverse_url: str
    commerce_url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "OData-Version": "4.0"}

    # -- Commerce (through the emulator's OData API, as a user in F&O would change data) -----------

    def commerce_rows(self, template: str, *, filtered: bool = False) -> list[dict[str, Any]]:
        """The entity's rows (``filtered``: only those the template's ``commerce.filter`` keeps)."""
        plan = self.runtime.catalog.plan(template)
        entity_set = plan.template.commerce.entity_set
        where = plan.template.commerce.filter if filtered else None
        return [row for page in self.runtime.commerce.iter_pages(entity_set, select=list(plan.select_properties),
                                                                 where=where) for row in page]

    def change_in_commerce(self, path: str, body: dict[str, Any]) -> None:
        requests.patch(f"{self.commerce_url}/data/{path}", json=body, headers=self.headers, timeout=10).raise_for_status()

    def create_in_commerce(self, entity_set: str, body: dict[str, Any]) -> None:
        requests.post(f"{self.commerce_url}/data/{entity_set}", json=body, headers=self.headers,
                      timeout=10).raise_for_status()

    def edit_in_hq(self, entity_set: str, key: dict[str, str], changes: dict[str, Any] | None = None, *,
                   delete: bool = False) -> None:
        """A user's edit in the HQ client (no OData route needed: works for keys holding '/')."""
        requests.post(f"{self.commerce_url}/_emulator/rows/{entity_set}", timeout=10,
                      json={"key": key, "changes": changes or {}, "delete": delete}).raise_for_status()

    def delete_in_commerce(self, path: str) -> None:
        requests.delete(f"{self.commerce_url}/data/{path}", headers=self.headers, timeout=10).raise_for_status()

    # -- Dataverse -------------------------------------------------------------------------------

    def dataverse_rows(self, entity_set: str) -> list[dict[str, Any]]:
        return list(self.runtime.dataverse.iter_rows(entity_set))

    def commerce_row(self, path: str) -> dict[str, Any]:
        response = requests.get(f"{self.commerce_url}/data/{path}?cross-company=true", headers=self.headers, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def commerce_writes(self) -> int:
        stats = requests.get(f"{self.commerce_url}/_emulator/stats", timeout=10).json()
        return sum(n for method, n in stats["by_method"].items() if method in ("POST", "PATCH", "PUT", "DELETE"))

    def commerce_write_log(self) -> list[dict[str, Any]]:
        """The write requests Commerce received (method, path as sent, If-Match, JSON body), oldest first."""
        log: list[dict[str, Any]] = requests.get(f"{self.commerce_url}/_emulator/writes", timeout=10).json()["value"]
        return log

    def clear_commerce_write_log(self) -> None:
        requests.delete(f"{self.commerce_url}/_emulator/writes", timeout=10).raise_for_status()

    def change_in_dataverse(self, path: str, body: dict[str, Any]) -> None:
        """An agent's edit in Dataverse (update only)."""
        requests.patch(f"{self.dataverse_url}/api/data/v9.2/{path}", json=body,
                       headers={**self.headers, "If-Match": "*"}, timeout=10).raise_for_status()

    def create_in_dataverse(self, entity_set: str, body: dict[str, Any]) -> None:
        requests.post(f"{self.dataverse_url}/api/data/v9.2/{entity_set}", json=body, headers=self.headers,
                      timeout=10).raise_for_status()

    def delete_in_dataverse(self, path: str) -> None:
        requests.delete(f"{self.dataverse_url}/api/data/v9.2/{path}", headers=self.headers, timeout=10).raise_for_status()

    def company_id(self, code: str) -> str:
        return next(guid for guid, c in self.codes("cdm_companies", "cdm_companyid", "cdm_companycode").items()
                    if c.upper() == code.upper())

    def dataverse_writes(self) -> int:
        stats = requests.get(f"{self.dataverse_url}/_emulator/stats", timeout=10).json()
        return sum(n for method, n in stats["by_method"].items() if method in ("POST", "PATCH", "PUT", "DELETE"))

    def codes(self, entity_set: str, primary_id: str, match_column: str) -> dict[str, str]:
        return {row[primary_id]: row[match_column] for row in self.dataverse_rows(entity_set)}

    # -- a template's prerequisites ----------------------------------------------------------------

    def provision_app_owned(self) -> None:
        """Every app-owned table the templates declare, provisioned in one run (as ``python -m shared.cli provision``
        does; keys waited for on a test clock). A table that exists already costs reads only."""
        from shared.dataverse.metadata import MetadataClient
        from shared.provision import Provisioner, app_owned
        from tests.clock import ManualClock

        clock = ManualClock()
        provisioner = Provisioner(MetadataClient(self.runtime.dataverse.core), app_owned(self.runtime.catalog),
                                  "LoyaltySync", clock=clock, sleep=clock.advance, poll_s=1.0)
        outcome = provisioner.apply(provisioner.plan())
        assert outcome.problems == [], outcome.problems

    def prepare(self, template: str) -> None:
        """What a template needs before it can sync, beyond its table (the ``runtime`` fixture provisions the
        app-owned ones): the templates its lookups point at synced (cards before their tier rows)."""
        plan = self.runtime.catalog.plan(template)
        targets = {row.lookup.entity_set for row in plan.template.fields if row.lookup is not None}
        for other in self.runtime.catalog:
            if other.name != template and other.dataverse.entity_set in targets:
                self.runtime.scan(other.name).run()

    # -- the comparison --------------------------------------------------------------------------

    def expected(self, template: str) -> dict[tuple[str, ...], dict[str, Any]]:
        """What Dataverse should hold: every Commerce row the template's source filter keeps, through its plan (with
        its derived columns, as the engine computes them)."""
        plan = self.runtime.catalog.plan(template)
        engine = self.runtime.outbound(template)
        rows = self.commerce_rows(template, filtered=True)
        result = {}
        for row in engine.deriver.augment(rows, whole=True) if engine.deriver else rows:
            record = plan.to_dataverse(row)
            columns = {k: (v.match_value if isinstance(v, LookupValue) else v) for k, v in record.columns.items()}
            result[record.key] = columns
        return result

    def actual(self, template: str) -> dict[tuple[str, ...], dict[str, Any]]:
        """What Dataverse holds, lookups turned back into their codes, keyed like Commerce."""
        plan = self.runtime.catalog.plan(template)
        dv = plan.template.dataverse
        lookups = {row.lookup.navigation_property: row.lookup for row in plan.template.fields if row.lookup}
        codes = {nav: self.codes(spec.entity_set, spec.primary_id, spec.match_column) for nav, spec in lookups.items()}
        companies = self.codes(dv.company.entity_set, dv.company.primary_id, dv.company.match_column) if dv.company else {}
        result: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in self.dataverse_rows(dv.entity_set):
            columns = {}
            for column in plan.dataverse_columns:
                if column in lookups:
                    guid = row.get(f"_{column.lower()}_value")
                    columns[column] = codes[column].get(guid) if guid else None
                else:
                    columns[column] = row.get(column)
            fo: dict[str, Any] = {p: columns[c] for c, p in plan.dataverse_key_properties.items()}
            if dv.company:
                fo["dataAreaId"] = companies[row[f"_{dv.company.navigation_property}_value"]].lower()
            key = tuple(fo[p] for p in plan.key_properties)
            assert key not in result, f"duplicate Dataverse row for {key}"
            result[key] = columns
        return result

    def duplicates(self, template: str) -> dict[tuple[Any, ...], int]:
        """Natural keys Dataverse holds more than one row for, and how many: counted over the emulator's raw rows
        (``/_emulator/rows``, nothing merged), key columns and company GUID compared case-insensitively, as
        Dataverse compares alternate keys."""
        plan = self.runtime.catalog.plan(template)
        dv = plan.template.dataverse
        columns = [*plan.dataverse_key_properties, *([f"_{dv.company.navigation_property}_value"] if dv.company else [])]
        rows = requests.get(f"{self.dataverse_url}/_emulator/rows/{dv.entity_set}", timeout=60).json()["value"]
        keys = Counter(tuple(v.casefold() if isinstance(v, str) else v for v in (row.get(c) for c in columns))
                       for row in rows)
        return {key: n for key, n in keys.items() if n > 1}

    def differences(self, template: str) -> list[str]:
        expected, actual = self.expected(template), self.actual(template)
        problems = [f"missing in Dataverse: {k}" for k in expected.keys() - actual.keys()]
        problems += [f"not in Commerce: {k}" for k in actual.keys() - expected.keys()]
        for key in expected.keys() & actual.keys():
            for column, value in expected[key].items():
                if actual[key][column] != value:
                    problems.append(f"{key} {column}: Commerce says {value!r}, Dataverse has {actual[key][column]!r}")
        return problems
