"""Provisioning the app-owned tables the templates declare, against the Dataverse emulator (docs/protocol-notes.md
§2.14): the first run creates everything in the solution, a second sends no metadata write, a column added to a
template is added by the next run, keys are waited for until Active."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from emulators.dataverse.server import DataverseServer
from shared.dataverse.metadata import MetadataClient
from shared.http.core import HttpCore, RetryPolicy, Timeouts
from shared.mapping.catalog import load_template
from shared.mapping.model import Template
from shared.provision import Provisioner, ProvisionError
from tests.clock import ManualClock
from tests.scripted_server import StaticCredential

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "app_owned" / "card_snapshots.json"
TABLE = "lsync_cardsnapshot"
POLL_S = 10.0


@pytest.fixture()
def dataverse(fresh_metadata_emulator: DataverseServer) -> DataverseServer:
    return fresh_metadata_emulator


def sample(change: Any = None) -> Template:
    data = json.loads(SAMPLE.read_text())
    if change is not None:
        change(data)
    return Template.model_validate(data)


def provisioner(dataverse: DataverseServer, *templates: Template, clock: ManualClock | None = None,
                solution: str = "LoyaltySync", wait_s: float = 600.0) -> Provisioner:
    core = HttpCore(dataverse.api_url, StaticCredential(), "https://org.crm.dynamics.com/.default", service="dataverse",
                    retry=RetryPolicy(max_attempts=1), timeouts=Timeouts(2, 10), sleep=lambda _: None)
    clock = clock or ManualClock()
    return Provisioner(MetadataClient(core), list(templates) or [sample()], solution, clock=clock,
                       sleep=clock.advance, poll_s=POLL_S, wait_s=wait_s)


def api_requests(dataverse: DataverseServer) -> list[dict[str, Any]]:
    return list(requests.get(f"{dataverse.url}/_emulator/requests", timeout=5).json()["value"])


def by_method(dataverse: DataverseServer) -> Counter[str]:
    return Counter(r["method"] for r in api_requests(dataverse))


def writes(dataverse: DataverseServer) -> list[tuple[str, str]]:
    return [(r["method"], r["path"].removeprefix("/api/data/v9.2/")) for r in api_requests(dataverse)
            if r["method"] != "GET"]


def provision(dataverse: DataverseServer, *templates: Template, clock: ManualClock | None = None) -> None:
    p = provisioner(dataverse, *templates, clock=clock)
    outcome = p.apply(p.plan())
    assert outcome.problems == []


def test_the_first_run_creates_the_table_its_columns_lookup_and_key_in_that_order(dataverse: DataverseServer) -> None:
    p = provisioner(dataverse)
    outcome = p.apply(p.plan())
    entity = f"EntityDefinitions(LogicalName='{TABLE}')"
    assert writes(dataverse) == [("POST", "EntityDefinitions"), *[("POST", f"{entity}/Attributes")] * 7,
                                 ("POST", "RelationshipDefinitions"), ("POST", f"{entity}/Keys")]
    assert [r.body["SchemaName"] for r in outcome.sent] == [
        "lsync_CardSnapshot", "lsync_CardNumber", "lsync_CardTenderType", "lsync_PartyNumber", "lsync_EnrollmentDate",
        "lsync_Available", "lsync_LineCount", "lsync_IsCurrent",
        "lsync_msdyn_loyaltycard_lsync_cardsnapshot_replacement", "lsync_CardNumberKey"]
    assert outcome.tables == [{"template": "card_snapshots", "table": TABLE, "entity_set": "lsync_cardsnapshots",
                               "created": "yes", "added": 9, "keys": "lsync_CardNumberKey Active"}]


def test_every_create_carries_the_solution_header(dataverse: DataverseServer) -> None:
    seen: list[str | None] = []
    p = provisioner(dataverse)
    p.client.core.observers.append(lambda r: seen.append(r.request.headers.get("MSCRM.SolutionUniqueName"))
                                   if r.request.method == "POST" else None)
    p.apply(p.plan())
    assert seen and set(seen) == {"LoyaltySync"}


def test_the_created_table_has_the_templates_columns_types_and_entity_set(dataverse: DataverseServer) -> None:
    provision(dataverse)
    attributes = requests.get(f"{dataverse.api_url}EntityDefinitions(LogicalName='{TABLE}')/Attributes"
                              "?$select=LogicalName,SchemaName,AttributeType",
                              headers={"Authorization": "Bearer t"}, timeout=5).json()["value"]
    declared = {a["SchemaName"]: a["AttributeType"] for a in attributes if a["SchemaName"].startswith("lsync_")}
    assert declared == {"lsync_Name": "String", "lsync_CardNumber": "String", "lsync_CardTenderType": "Picklist",
                        "lsync_PartyNumber": "String", "lsync_EnrollmentDate": "DateTime", "lsync_Available": "Decimal",
                        "lsync_LineCount": "Integer", "lsync_IsCurrent": "Boolean",
                        "lsync_ReplacementCardId": "Lookup", "lsync_CardSnapshotId": "Uniqueidentifier"}
    assert dataverse.store.table("lsync_cardsnapshots") is not None


def test_a_second_run_sends_no_metadata_write(dataverse: DataverseServer) -> None:
    provision(dataverse)
    requests.delete(f"{dataverse.url}/_emulator/requests", timeout=5).raise_for_status()
    p = provisioner(dataverse)
    plan = p.plan()
    outcome = p.apply(plan)
    assert plan.requests == [] and outcome.sent == []
    assert set(by_method(dataverse)) == {"GET"}


def test_a_column_added_to_the_template_is_added_by_the_next_run(dataverse: DataverseServer) -> None:
    provision(dataverse)
    requests.delete(f"{dataverse.url}/_emulator/requests", timeout=5).raise_for_status()
    grown = sample(lambda d: d["dataverse"]["table"]["columns"].append(
        {"schema_name": "lsync_Expiring", "type": "decimal", "precision": 2, "display_name": "Expiring soon"}))
    provision(dataverse, grown)
    assert writes(dataverse) == [("POST", f"EntityDefinitions(LogicalName='{TABLE}')/Attributes")]
    assert "lsync_expiring" in dataverse.store.tables["lsync_cardsnapshots"].columns


def test_a_dry_run_lists_every_request_and_sends_no_write(dataverse: DataverseServer) -> None:
    plan = provisioner(dataverse).plan()
    assert [(r.method, r.path) for r in plan.requests][:2] == [
        ("POST", "EntityDefinitions"), ("POST", f"EntityDefinitions(LogicalName='{TABLE}')/Attributes")]
    assert len(plan.requests) == 10
    assert "EntityMetadata SchemaName=lsync_CardSnapshot" in plan.requests[0].facts()
    assert "primary name lsync_Name" in plan.requests[0].facts()
    assert "KeyAttributes=lsync_cardnumber" in plan.requests[-1].facts()
    assert set(by_method(dataverse)) == {"GET"}


def test_provisioning_waits_for_a_pending_key_on_the_clock_until_it_is_active(dataverse: DataverseServer) -> None:
    clock = ManualClock()
    started = clock.monotonic()
    reports: list[tuple[int, list[str]]] = []
    p = provisioner(dataverse, clock=clock)
    plan = p.plan()
    p.on_progress = lambda report: reports.append((report.active, report.waiting))
    p.apply(plan)
    assert reports == [(0, [f"{TABLE}.lsync_CardNumberKey InProgress"]), (1, [])]
    assert clock.monotonic() - started == POLL_S


def test_a_key_still_pending_when_the_wait_ends_is_an_error_saying_to_run_again(dataverse: DataverseServer) -> None:
    p = provisioner(dataverse, wait_s=POLL_S / 2)
    with pytest.raises(ProvisionError, match=r"not Active yet: lsync_cardsnapshot\.lsync_CardNumberKey InProgress.*"
                                             r"run python -m shared.cli provision again later"):
        p.apply(p.plan())


def test_a_failed_key_index_names_reactivate_entity_key(dataverse: DataverseServer) -> None:
    p = provisioner(dataverse)
    plan = p.plan()
    p.on_progress = lambda report: requests.post(
        f"{dataverse.url}/_emulator/keys", json={"table": TABLE, "status": "Failed"}, timeout=5).raise_for_status()
    with pytest.raises(ProvisionError, match="lsync_CardNumberKey on table lsync_cardsnapshot failed.*"
                                             "ReactivateEntityKey"):
        p.apply(plan)


def test_a_missing_solution_is_created_with_a_publisher_of_the_templates_prefix(dataverse: DataverseServer) -> None:
    p = provisioner(dataverse, solution="LoyaltySyncTest")
    plan = p.plan()
    # The seeded publisher has the prefix already: only the solution is new.
    assert [r.path for r in plan.solution_requests] == ["solutions"]
    p.apply(plan)
    rows = requests.get(f"{dataverse.url}/_emulator/rows/solutions", timeout=5).json()["value"]
    assert "LoyaltySyncTest" in [r["uniquename"] for r in rows]


def test_a_missing_publisher_is_created_before_its_solution(dataverse: DataverseServer) -> None:
    requests.delete(f"{dataverse.url}/_emulator/solutions/LoyaltySync", timeout=5)
    requests.post(f"{dataverse.url}/_emulator/solutions", json={"unique_name": "Other", "prefix": "ctso"}, timeout=5)
    for row in requests.get(f"{dataverse.url}/_emulator/rows/publishers", timeout=5).json()["value"]:
        if row["customizationprefix"] == "lsync":
            dataverse.store.delete("publishers", row["publisherid"])
    p = provisioner(dataverse)
    plan = p.plan()
    assert [r.path for r in plan.solution_requests] == ["publishers", "solutions"]
    assert "customizationprefix=lsync" in plan.solution_requests[0].facts()
    assert p.apply(plan).problems == []
    assert dataverse.store.table("lsync_cardsnapshots") is not None


def test_a_solution_whose_publisher_has_another_prefix_is_a_problem_and_nothing_is_written(
        dataverse: DataverseServer) -> None:
    requests.post(f"{dataverse.url}/_emulator/solutions", json={"unique_name": "Partner", "prefix": "ctso"}, timeout=5)
    p = provisioner(dataverse, solution="Partner")
    plan = p.plan()
    outcome = p.apply(plan)
    assert len(outcome.problems) == 1
    assert "customization prefix is 'ctso'" in outcome.problems[0] and "'lsync_'" in outcome.problems[0]
    assert "SYNC_DATAVERSE_SOLUTION" in outcome.problems[0]
    assert set(by_method(dataverse)) == {"GET"}


def test_a_column_that_exists_with_another_type_is_a_problem(dataverse: DataverseServer) -> None:
    provision(dataverse)

    def retype(d: dict[str, Any]) -> None:
        column = next(c for c in d["dataverse"]["table"]["columns"] if c["schema_name"] == "lsync_LineCount")
        column.update(type="decimal", precision=2)

    p = provisioner(dataverse, sample(retype))
    outcome = p.apply(p.plan())
    assert outcome.sent == []
    assert "column lsync_cardsnapshot.lsync_linecount exists as Integer, the template declares Decimal" in \
        outcome.problems[0]


def test_an_entity_set_other_than_the_templates_is_a_problem(dataverse: DataverseServer) -> None:
    renamed = sample(lambda d: d["dataverse"].update(entity_set="lsync_snapshots"))
    p = provisioner(dataverse, renamed)
    outcome = p.apply(p.plan())
    assert "entity set 'lsync_cardsnapshots'; set dataverse.entity_set to it" in outcome.problems[0]


def test_rows_written_through_the_provisioned_key_and_lookup(dataverse: DataverseServer) -> None:
    provision(dataverse)
    headers = {"Authorization": "Bearer t"}
    requests.post(f"{dataverse.api_url}msdyn_loyaltycards", json={"msdyn_cardnumber": "C-2"}, headers=headers,
                  timeout=5).raise_for_status()
    response = requests.patch(f"{dataverse.api_url}lsync_cardsnapshots(lsync_cardnumber='C-1')", headers=headers, json={
        "lsync_name": "C-1", "lsync_available": 12.5, "lsync_enrollmentdate": "2026-01-31",
        "lsync_ReplacementCardId@odata.bind": "/msdyn_loyaltycards(msdyn_cardnumber='C-2')"}, timeout=5)
    assert response.status_code == 204


def test_the_sample_file_is_what_the_tests_provision() -> None:
    assert load_template(SAMPLE) == sample()
