"""The metadata Web API of docs/protocol-notes.md §2.14, as strict as documented: tables, columns, lookups and keys
are created in a named solution; a new table is a real table; a new key is Pending until its index is built."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.dataverse.server import DataverseServer
from tests.emulators.dataverse.support import Api, batch_body, http_part, read_batch

SOLUTION = {"MSCRM.SolutionUniqueName": "LoyaltySync"}
TABLE = "lsync_cardsnapshot"
SET = "lsync_cardsnapshots"


@pytest.fixture()
def emulator(fresh_metadata_emulator: DataverseServer) -> DataverseServer:
    return fresh_metadata_emulator


@pytest.fixture()
def api(emulator: DataverseServer) -> Iterator[Api]:
    client = Api(emulator)
    yield client
    client.session.close()


def label(text: str) -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.Label",
            "LocalizedLabels": [{"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text,
                                 "LanguageCode": 1033}]}


def string_attribute(schema_name: str, *, primary: bool = False, max_length: int = 100) -> dict[str, Any]:
    body = {"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": schema_name,
            "DisplayName": label(schema_name), "MaxLength": max_length, "FormatName": {"Value": "Text"},
            "RequiredLevel": {"Value": "None"}}
    return {**body, "IsPrimaryName": True} if primary else body


def table_body(*attributes: dict[str, Any], schema_name: str = "lsync_CardSnapshot") -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata", "SchemaName": schema_name,
            "DisplayName": label("Card snapshot"), "DisplayCollectionName": label("Card snapshots"),
            "OwnershipType": "OrganizationOwned", "IsActivity": False, "HasActivities": False, "HasNotes": False,
            "Attributes": list(attributes)}


def lookup_body(schema_name: str = "lsync_LoyaltyCardId", referenced: str = "msdyn_loyaltycard") -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
            "SchemaName": "lsync_msdyn_loyaltycard_lsync_cardsnapshot", "ReferencedEntity": referenced,
            "ReferencedAttribute": f"{referenced}id", "ReferencingEntity": TABLE,
            "CascadeConfiguration": {"Delete": "RemoveLink"},
            "Lookup": {"@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata", "SchemaName": schema_name,
                       "DisplayName": label("Loyalty card")}}


def key_body(*columns: str, schema_name: str = "lsync_CardNumberKey") -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.EntityKeyMetadata", "SchemaName": schema_name,
            "DisplayName": label("Card number"), "KeyAttributes": list(columns)}


def create_table(api: Api) -> None:
    assert api.post("EntityDefinitions", table_body(string_attribute("lsync_Name", primary=True)),
                    **SOLUTION).status_code == 204
    assert api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", string_attribute("lsync_CardNumber"),
                    **SOLUTION).status_code == 204


def error_of(response: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def key_status(api: Api) -> list[str]:
    keys = api.get(f"EntityDefinitions(LogicalName='{TABLE}')/Keys?$select=SchemaName,EntityKeyIndexStatus").json()
    return [k["EntityKeyIndexStatus"] for k in keys["value"]]


# -- tables ---------------------------------------------------------------------------------------------------------


def test_a_new_table_answers_204_with_its_metadata_id_and_derives_a_plural_entity_set(api: Api) -> None:
    response = api.post("EntityDefinitions", table_body(string_attribute("lsync_Name", primary=True)), **SOLUTION)
    assert response.status_code == 204
    assert "/api/data/v9.2/EntityDefinitions(" in response.headers["OData-EntityId"]
    body = api.get(f"EntityDefinitions(LogicalName='{TABLE}')?$select=LogicalName,EntitySetName,PrimaryIdAttribute,"
                   "PrimaryNameAttribute").json()
    assert (body["LogicalName"], body["EntitySetName"], body["PrimaryIdAttribute"], body["PrimaryNameAttribute"]) == (
        TABLE, SET, "lsync_cardsnapshotid", "lsync_name")


def test_a_table_without_a_primary_name_attribute_is_refused(api: Api) -> None:
    response = api.post("EntityDefinitions", table_body(), **SOLUTION)
    assert response.status_code == 400
    assert error_of(response)["code"] == "0x80040203"
    assert "must include the definition for the primary name attribute" in error_of(response)["message"]


def test_a_table_with_two_primary_name_attributes_is_refused(api: Api) -> None:
    response = api.post("EntityDefinitions", table_body(string_attribute("lsync_Name", primary=True),
                                                        string_attribute("lsync_Other", primary=True)), **SOLUTION)
    assert response.status_code == 400
    assert "exactly one primary name attribute" in error_of(response)["message"]


def test_a_primary_name_that_is_not_a_string_is_refused(api: Api) -> None:
    primary = {**string_attribute("lsync_Name", primary=True), "@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata"}
    response = api.post("EntityDefinitions", table_body(primary), **SOLUTION)
    assert response.status_code == 400
    assert "StringAttributeMetadata" in error_of(response)["message"]


def test_a_create_without_the_solution_header_is_refused(api: Api) -> None:
    response = api.post("EntityDefinitions", table_body(string_attribute("lsync_Name", primary=True)))
    assert response.status_code == 400
    assert "Send the header MSCRM.SolutionUniqueName" in error_of(response)["message"]
    assert api.get(f"EntityDefinitions(LogicalName='{TABLE}')").status_code == 404


def test_a_create_naming_an_unknown_solution_is_refused(api: Api) -> None:
    response = api.post("EntityDefinitions", table_body(string_attribute("lsync_Name", primary=True)),
                        **{"MSCRM.SolutionUniqueName": "NoSuchSolution"})
    assert response.status_code == 400
    assert "The solution 'NoSuchSolution'" in error_of(response)["message"]


def test_a_column_create_without_the_solution_header_is_refused(api: Api) -> None:
    create_table(api)
    response = api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", string_attribute("lsync_Party"))
    assert response.status_code == 400
    assert "Send the header MSCRM.SolutionUniqueName" in error_of(response)["message"]


def test_a_solution_made_by_the_admin_route_is_accepted(api: Api, emulator: DataverseServer) -> None:
    requests.post(f"{emulator.url}/_emulator/solutions", json={"unique_name": "Partner", "prefix": "ctso"},
                  timeout=5).raise_for_status()
    response = api.post("EntityDefinitions", table_body(string_attribute("ctso_Name", primary=True),
                                                        schema_name="ctso_Thing"),
                        **{"MSCRM.SolutionUniqueName": "Partner"})
    assert response.status_code == 204
    publisher = api.get("publishers?$select=customizationprefix&$filter=uniquename eq 'ctsopublisher'").json()
    assert publisher["value"][0]["customizationprefix"] == "ctso"


def test_a_second_table_with_the_same_schema_name_is_refused_as_existing(api: Api) -> None:
    create_table(api)
    response = api.post("EntityDefinitions", table_body(string_attribute("lsync_Name", primary=True)), **SOLUTION)
    assert response.status_code == 400
    assert "already exists" in error_of(response)["message"]


def test_an_unknown_table_definition_is_404(api: Api) -> None:
    response = api.get("EntityDefinitions(LogicalName='lsync_nothing')?$select=EntitySetName")
    assert response.status_code == 404
    assert error_of(response)["code"] == "0x80040217"


# -- columns --------------------------------------------------------------------------------------------------------


def test_a_new_column_is_listed_with_its_schema_name_and_type(api: Api) -> None:
    create_table(api)
    decimal = {"@odata.type": "Microsoft.Dynamics.CRM.DecimalAttributeMetadata", "SchemaName": "lsync_Available",
               "DisplayName": label("Available"), "Precision": 2, "MinValue": 0, "MaxValue": 1_000_000}
    assert api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", decimal, **SOLUTION).status_code == 204
    attributes = api.get(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes?$select=LogicalName,SchemaName,"
                         "AttributeType").json()["value"]
    assert {"LogicalName": "lsync_available", "SchemaName": "lsync_Available", "AttributeType": "Decimal"} in [
        {k: a[k] for k in ("LogicalName", "SchemaName", "AttributeType")} for a in attributes]


def test_a_string_column_without_max_length_is_refused(api: Api) -> None:
    create_table(api)
    body = string_attribute("lsync_Party")
    del body["MaxLength"]
    response = api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", body, **SOLUTION)
    assert response.status_code == 400
    assert "MaxLength" in error_of(response)["message"]


def test_a_second_column_with_the_same_logical_name_is_refused(api: Api) -> None:
    create_table(api)
    response = api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", string_attribute("lsync_CARDNUMBER"),
                        **SOLUTION)
    assert response.status_code == 400
    assert "already exists" in error_of(response)["message"]


def test_a_lookup_column_through_attributes_is_refused(api: Api) -> None:
    create_table(api)
    body = {"@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata", "SchemaName": "lsync_CardId",
            "DisplayName": label("Card")}
    response = api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", body, **SOLUTION)
    assert response.status_code == 400
    assert "RelationshipDefinitions" in error_of(response)["message"]


def test_rows_of_a_new_table_take_its_columns(api: Api) -> None:
    create_table(api)
    assert api.post(SET, {"lsync_name": "one", "lsync_cardnumber": "C-1"}).status_code == 204
    assert [r["lsync_cardnumber"] for r in api.get(f"{SET}?$select=lsync_cardnumber").json()["value"]] == ["C-1"]


def test_a_write_to_an_undefined_column_is_refused(api: Api) -> None:
    create_table(api)
    response = api.post(SET, {"lsync_name": "one", "lsync_partynumber": "P-1"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "0x80048d19"
    assert "lsync_partynumber" in error_of(response)["message"]


def test_a_write_to_a_table_not_created_yet_is_refused(api: Api) -> None:
    response = api.post(SET, {"lsync_name": "one"})
    assert response.status_code == 404
    assert f"'{SET}'" in error_of(response)["message"]


def test_a_value_outside_a_decimal_columns_range_is_refused(api: Api) -> None:
    create_table(api)
    decimal = {"@odata.type": "Microsoft.Dynamics.CRM.DecimalAttributeMetadata", "SchemaName": "lsync_Available",
               "DisplayName": label("Available"), "Precision": 2, "MinValue": 0, "MaxValue": 100}
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", decimal, **SOLUTION).raise_for_status()
    response = api.post(SET, {"lsync_name": "one", "lsync_available": 100.5})
    assert response.status_code == 400
    assert "outside the valid range" in error_of(response)["message"]


def test_a_date_only_column_keeps_the_date(api: Api) -> None:
    create_table(api)
    date = {"@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata", "SchemaName": "lsync_ValidFrom",
            "DisplayName": label("Valid from"), "Format": "DateOnly"}
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Attributes", date, **SOLUTION).raise_for_status()
    api.post(SET, {"lsync_name": "one", "lsync_validfrom": "2026-03-01"}).raise_for_status()
    assert api.get(f"{SET}?$select=lsync_validfrom").json()["value"][0]["lsync_validfrom"] == "2026-03-01"


# -- lookups --------------------------------------------------------------------------------------------------------


def test_a_lookup_binds_by_its_schema_name_case_sensitively(api: Api) -> None:
    create_table(api)
    assert api.post("RelationshipDefinitions", lookup_body(), **SOLUTION).status_code == 204
    api.post("msdyn_loyaltycards", {"msdyn_cardnumber": "C-1"}).raise_for_status()
    bound = api.post(SET, {"lsync_name": "one", "lsync_LoyaltyCardId@odata.bind": "/msdyn_loyaltycards(msdyn_cardnumber='C-1')"})
    assert bound.status_code == 204
    lower = api.post(SET, {"lsync_name": "two", "lsync_loyaltycardid@odata.bind": "/msdyn_loyaltycards(msdyn_cardnumber='C-1')"})
    assert lower.status_code == 400
    assert "An undeclared property 'lsync_loyaltycardid'" in error_of(lower)["message"]
    rows = api.get(f"{SET}?$select=_lsync_loyaltycardid_value&$filter=lsync_name eq 'one'").json()["value"]
    assert rows[0]["_lsync_loyaltycardid_value"]


def test_a_lookup_to_a_table_that_does_not_exist_is_refused(api: Api) -> None:
    create_table(api)
    response = api.post("RelationshipDefinitions", lookup_body(referenced="msdyn_nothing"), **SOLUTION)
    assert response.status_code == 404
    assert "msdyn_nothing" in error_of(response)["message"]


def test_a_relationship_without_the_solution_header_is_refused(api: Api) -> None:
    create_table(api)
    response = api.post("RelationshipDefinitions", lookup_body())
    assert response.status_code == 400
    assert "Send the header MSCRM.SolutionUniqueName" in error_of(response)["message"]


# -- keys -----------------------------------------------------------------------------------------------------------


def test_a_new_key_is_pending_then_in_progress_then_active_as_it_is_polled(api: Api) -> None:
    create_table(api)
    assert api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_cardnumber"),
                    **SOLUTION).status_code == 204
    assert [key_status(api), key_status(api), key_status(api)] == [["InProgress"], ["Active"], ["Active"]]


def test_an_upsert_by_a_pending_key_is_refused_until_the_key_is_active(api: Api) -> None:
    create_table(api)
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_cardnumber"), **SOLUTION).raise_for_status()
    refused = api.patch(f"{SET}(lsync_cardnumber='C-1')", {"lsync_name": "one"})
    assert refused.status_code == 400
    assert "The key in the request URI is not valid" in error_of(refused)["message"]
    key_status(api), key_status(api)
    assert api.patch(f"{SET}(lsync_cardnumber='C-1')", {"lsync_name": "one"}).status_code == 204
    assert api.get(f"{SET}(lsync_cardnumber='C-1')?$select=lsync_name").json()["lsync_name"] == "one"


def test_upsert_multiple_by_a_pending_key_is_refused(api: Api) -> None:
    create_table(api)
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_cardnumber"), **SOLUTION).raise_for_status()
    targets = [{"@odata.type": f"Microsoft.Dynamics.CRM.{TABLE}", "@odata.id": f"{SET}(lsync_cardnumber='C-1')",
                "lsync_name": "one"}]
    assert api.bulk("UpsertMultiple", targets, entity_set=SET).status_code == 400
    key_status(api), key_status(api)
    assert api.bulk("UpsertMultiple", targets, entity_set=SET).status_code == 204


def test_the_admin_route_activates_a_key_at_once(api: Api, emulator: DataverseServer) -> None:
    create_table(api)
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_cardnumber"), **SOLUTION).raise_for_status()
    requests.post(f"{emulator.url}/_emulator/keys", json={"table": TABLE, "status": "Active"}, timeout=5).raise_for_status()
    assert api.patch(f"{SET}(lsync_cardnumber='C-1')", {"lsync_name": "one"}).status_code == 204


def test_a_key_over_rows_that_share_its_values_fails(api: Api) -> None:
    create_table(api)
    api.post(SET, {"lsync_name": "one", "lsync_cardnumber": "C-1"}).raise_for_status()
    api.post(SET, {"lsync_name": "two", "lsync_cardnumber": "c-1"}).raise_for_status()
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_cardnumber"), **SOLUTION).raise_for_status()
    key_status(api)
    assert key_status(api) == ["Failed"]


def test_a_key_naming_a_column_the_table_lacks_is_refused(api: Api) -> None:
    create_table(api)
    response = api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_partynumber"), **SOLUTION)
    assert response.status_code == 400
    assert "'lsync_partynumber' is not an attribute" in error_of(response)["message"]


def test_a_key_on_a_lookup_is_addressed_by_its_value_property(api: Api) -> None:
    create_table(api)
    api.post("RelationshipDefinitions", lookup_body(), **SOLUTION).raise_for_status()
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_loyaltycardid", "lsync_cardnumber"),
             **SOLUTION).raise_for_status()
    key_status(api), key_status(api)
    api.post("msdyn_loyaltycards", {"msdyn_cardnumber": "C-1"}).raise_for_status()
    card = api.get("msdyn_loyaltycards(msdyn_cardnumber='C-1')").json()["msdyn_loyaltycardid"]
    response = api.patch(f"{SET}(_lsync_loyaltycardid_value={card},lsync_cardnumber='C-1')", {"lsync_name": "one"})
    assert response.status_code == 204


def test_a_new_table_is_change_tracked(api: Api) -> None:
    create_table(api)
    first = api.get(f"{SET}?$select=lsync_name", Prefer="odata.track-changes")
    assert first.status_code == 200
    api.post(SET, {"lsync_name": "one"}).raise_for_status()
    delta = api.get(first.json()["@odata.deltaLink"], Prefer="odata.track-changes").json()
    assert [r["lsync_name"] for r in delta["value"]] == ["one"]


def test_a_new_tables_rows_are_upserted_by_its_active_key_inside_a_batch(api: Api, emulator: DataverseServer) -> None:
    create_table(api)
    api.post(f"EntityDefinitions(LogicalName='{TABLE}')/Keys", key_body("lsync_cardnumber"), **SOLUTION).raise_for_status()
    requests.post(f"{emulator.url}/_emulator/keys", json={"table": TABLE, "status": "Active"}, timeout=5).raise_for_status()
    root = "/api/data/v9.2/"
    body = batch_body(http_part("PATCH", f"{root}{SET}(lsync_cardnumber='C-1')", {"lsync_name": "one"}),
                      http_part("PATCH", f"{root}{SET}(lsync_cardnumber='C-2')", {"lsync_name": "two"}))
    assert [r.status for r in read_batch(api.batch(body))] == [204, 204]
    assert sorted(r["lsync_name"] for r in api.get(f"{SET}?$select=lsync_name").json()["value"]) == ["one", "two"]
