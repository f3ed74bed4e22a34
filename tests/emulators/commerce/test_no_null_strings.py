"""F&O has no null strings (docs/protocol-notes.md §3.3): the Commerce emulator answers "" for an empty string property, in
reads and in the POST response, and refuses a write that sends null for a string property (400, ODataLib's
null-value text; inferred), so a client that sends null fails where a tenant could refuse it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.commerce.entities import ENTITY_SETS
from emulators.commerce.server import CommerceEmulator, start_commerce

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture()
def emu() -> Iterator[CommerceEmulator]:
    server = start_commerce(cards=30, reward_points=20, levels_per_company=2, seed=7)
    yield server
    server.stop()


def read(emu: CommerceEmulator, path: str) -> Any:
    response = requests.get(f"{emu.url}/data/{path}", params={"cross-company": "true"}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def string_properties(entity_set: str) -> list[str]:
    [eset] = [s for s in ENTITY_SETS if s.name == entity_set]
    return [p.name for p in eset.properties if p.edm_type == "Edm.String"]


@pytest.mark.parametrize("entity_set", [s.name for s in ENTITY_SETS])
def test_no_string_property_reads_as_null(emu: CommerceEmulator, entity_set: str) -> None:
    rows = read(emu, entity_set)["value"]
    nulls = [(name, row) for row in rows for name in string_properties(entity_set) if row.get(name) is None]
    assert rows and nulls == []


def test_an_unset_optional_string_reads_as_empty_string(emu: CommerceEmulator) -> None:
    cards = read(emu, "RetailLoyaltyCards")["value"]
    assert "" in {card["ReplacementCardNumber"] for card in cards}  # the seed links only a few replacements


def test_the_post_response_carries_empty_strings_for_omitted_string_properties(emu: CommerceEmulator) -> None:
    response = requests.post(f"{emu.url}/data/RetailLoyaltyCards", json={"CardNumber": "NULL-1"}, headers=AUTH,
                             timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [body[name] for name in ("PartyNumber", "ReplacementCardNumber", "OmOperatingUnitNumber")] == ["", "", ""]


def null_refused(response: requests.Response, prop: str) -> bool:
    error = response.json()["error"]
    return (response.status_code == 400 and f"A null value was found for the property named '{prop}'"
            in error["message"] and error["innererror"]["type"] == "Microsoft.OData.ODataException")


def test_a_null_string_sent_on_create_is_refused(emu: CommerceEmulator) -> None:
    created = requests.post(f"{emu.url}/data/RetailLoyaltyCards", json={"CardNumber": "NULL-2", "PartyNumber": None},
                            headers=AUTH, timeout=10)
    assert null_refused(created, "PartyNumber")
    missing = requests.get(f"{emu.url}/data/RetailLoyaltyCards('NULL-2')", params={"cross-company": "true"},
                           headers=AUTH, timeout=10)
    assert missing.status_code == 404


def test_a_null_string_sent_on_update_is_refused_and_the_row_kept(emu: CommerceEmulator) -> None:
    card = next(c for c in read(emu, "RetailLoyaltyCards")["value"] if c["OmOperatingUnitNumber"])
    path = f"RetailLoyaltyCards('{card['CardNumber']}')"
    response = requests.patch(f"{emu.url}/data/{path}", json={"OmOperatingUnitNumber": None},
                              headers={**AUTH, "If-Match": "*"}, timeout=10)
    assert null_refused(response, "OmOperatingUnitNumber")
    assert read(emu, path)["OmOperatingUnitNumber"] == card["OmOperatingUnitNumber"]


def test_an_empty_string_clears_a_string_property(emu: CommerceEmulator) -> None:
    card = next(c for c in read(emu, "RetailLoyaltyCards")["value"] if c["PartyNumber"])
    path = f"RetailLoyaltyCards('{card['CardNumber']}')"
    response = requests.patch(f"{emu.url}/data/{path}", json={"PartyNumber": ""},
                              headers={**AUTH, "If-Match": "*"}, timeout=10)
    assert response.status_code == 204, response.text
    assert read(emu, path)["PartyNumber"] == ""


def test_a_null_for_a_key_string_is_still_refused(emu: CommerceEmulator) -> None:
    response = requests.post(f"{emu.url}/data/RetailLoyaltyCards", json={"CardNumber": None}, headers=AUTH, timeout=10)
    assert response.status_code == 400
    assert "CardNumber" in response.text


def test_legal_entities_are_served_as_the_client_reads_them(emu: CommerceEmulator) -> None:
    response = requests.get(f"{emu.url}/data/LegalEntities", params={"$select": "LegalEntityId"}, headers=AUTH,
                            timeout=10)
    assert response.status_code == 200
    assert sorted(row["LegalEntityId"] for row in response.json()["value"]) == ["demf", "usmf", "usrt"]
