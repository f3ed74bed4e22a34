"""``EntityDefinitions(LogicalName='<table>')/Attributes``: a table's columns, as the app's preflight reads them
(the response shape is inferred; see emulators/dataverse/metadata.py)."""

from __future__ import annotations

import requests

from emulators.dataverse.server import DataverseServer
from tests.emulators.dataverse.support import Api


def attributes_of(api: Api, table: str, select: str = "LogicalName") -> requests.Response:
    return api.get(f"EntityDefinitions(LogicalName='{table}')/Attributes?$select={select}")


def test_attributes_list_the_tables_columns_lookups_and_primary_id(api: Api) -> None:
    response = attributes_of(api, "msdyn_loyaltyrewardpoint")
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"] == (api.root + "$metadata#EntityDefinitions('msdyn_loyaltyrewardpoint')"
                                      "/Attributes(LogicalName)")
    names = {a["LogicalName"] for a in body["value"]}
    assert {"msdyn_loyaltyrewardpointid", "msdyn_rewardpointid", "msdyn_maximumloyaltyrewardpoints",
            "msdyn_rewardpointcurrency", "createdon"} <= names
    assert "msdyn_cardnumber" not in names
    assert all(set(a) == {"@odata.type", "LogicalName", "MetadataId"} for a in body["value"])
    lookup = next(a for a in body["value"] if a["LogicalName"] == "msdyn_rewardpointcurrency")
    assert lookup["@odata.type"] == "#Microsoft.Dynamics.CRM.LookupAttributeMetadata"


def test_attribute_type_can_be_selected(api: Api) -> None:
    body = attributes_of(api, "msdyn_loyaltycard", "LogicalName,AttributeType").json()
    types = {a["LogicalName"]: a["AttributeType"] for a in body["value"]}
    assert (types["msdyn_cardtendertype"], types["msdyn_cardnumber"]) == ("Picklist", "String")


def test_an_unknown_table_is_404_object_does_not_exist(api: Api) -> None:
    response = attributes_of(api, "msdyn_loyaltycardz")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "0x80040217"
    assert "msdyn_loyaltycardz" in response.json()["error"]["message"]


def test_an_unknown_attribute_property_is_400(api: Api) -> None:
    response = attributes_of(api, "msdyn_loyaltycard", "LogicalNam")
    assert response.status_code == 400
    assert "Could not find a property named 'LogicalNam'" in response.json()["error"]["message"]


def test_metadata_needs_a_bearer_token(emulator: DataverseServer) -> None:
    response = requests.get(f"{emulator.api_url}EntityDefinitions(LogicalName='msdyn_loyaltycard')/Attributes",
                            timeout=10)
    assert response.status_code == 401
