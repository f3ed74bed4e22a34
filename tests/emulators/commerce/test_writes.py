"""Commerce emulator writes over real HTTP: company scoping, If-Match, configured validation failures
(docs/protocol-notes.md §3.1, §3.3, §3.4, §5.2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.commerce.server import CommerceEmulator, start_commerce
from tests.builders import card_row, level_row

AUTH = {"Authorization": "Bearer test-token"}
GOLD = "LoyaltyLevels(dataAreaId='{company}',LevelPhrase='Gold')"


@pytest.fixture(scope="module")
def server() -> Iterator[CommerceEmulator]:
    emulator = start_commerce(cards=5, reward_points=3, levels_per_company=4, seed=11)
    yield emulator
    emulator.stop()


@pytest.fixture()
def emu(server: CommerceEmulator) -> Iterator[CommerceEmulator]:
    requests.post(f"{server.url}/_emulator/reset", timeout=10).raise_for_status()
    yield server
    server.set_validation_failures({})


def get(emu: CommerceEmulator, path: str) -> requests.Response:
    return requests.get(f"{emu.url}/data/{path}", headers=AUTH, timeout=10)


def post(emu: CommerceEmulator, entity_set: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{emu.url}/data/{entity_set}", json=body, headers=AUTH, timeout=10)


def patch(emu: CommerceEmulator, path: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.patch(f"{emu.url}/data/{path}", json=body, headers={**AUTH, **headers}, timeout=10)


def delete(emu: CommerceEmulator, path: str, **headers: str) -> requests.Response:
    return requests.delete(f"{emu.url}/data/{path}", headers={**AUTH, **headers}, timeout=10)


def configure(emu: CommerceEmulator, failures: Any) -> requests.Response:
    return requests.post(f"{emu.url}/_emulator/config", json={"validation_failures": failures}, timeout=10)


def innererror(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] == "An error has occurred."
    return str(error["innererror"]["message"])


def descriptions(emu: CommerceEmulator) -> dict[str, str]:
    return {company: get(emu, GOLD.format(company=company)).json()["LevelDescription"] for company in emu.companies}


# -- company scoping ---------------------------------------------------------------------------


def test_patch_of_a_level_by_composite_key_changes_only_that_company(emu: CommerceEmulator) -> None:
    before = descriptions(emu)
    response = patch(emu, GOLD.format(company="usrt"), {"LevelDescription": "Retail gold"})
    assert response.status_code == 204
    assert descriptions(emu) == {**before, "usrt": "Retail gold"}


def test_delete_of_a_level_by_composite_key_removes_only_that_company(emu: CommerceEmulator) -> None:
    assert delete(emu, GOLD.format(company="usrt")).status_code == 204
    statuses = {company: get(emu, GOLD.format(company=company)).status_code for company in emu.companies}
    assert statuses == {"usmf": 200, "usrt": 404, "demf": 200}


def test_post_of_a_level_creates_it_in_the_named_company_only(emu: CommerceEmulator) -> None:
    response = post(emu, "LoyaltyLevels", level_row(dataAreaId="usrt", LevelPhrase="Jade"))
    assert response.status_code == 201
    assert get(emu, "LoyaltyLevels(dataAreaId='usrt',LevelPhrase='Jade')").status_code == 200
    assert get(emu, "LoyaltyLevels(dataAreaId='usmf',LevelPhrase='Jade')").status_code == 404


def test_same_level_phrase_can_be_created_in_two_companies(emu: CommerceEmulator) -> None:
    assert post(emu, "LoyaltyLevels", level_row(dataAreaId="usrt", LevelPhrase="Jade")).status_code == 201
    assert post(emu, "LoyaltyLevels", level_row(dataAreaId="demf", LevelPhrase="Jade")).status_code == 201


# -- If-Match ----------------------------------------------------------------------------------


def test_patch_with_if_match_star_updates_the_row(emu: CommerceEmulator) -> None:
    response = patch(emu, GOLD.format(company="usmf"), {"LevelDescription": "Any version"}, **{"If-Match": "*"})
    assert response.status_code == 204
    assert descriptions(emu)["usmf"] == "Any version"


def test_patch_of_a_level_with_a_stale_etag_is_412_and_changes_nothing(emu: CommerceEmulator) -> None:
    stale = get(emu, GOLD.format(company="usmf")).headers["ETag"]
    patch(emu, GOLD.format(company="usmf"), {"LevelDescription": "First"}).raise_for_status()
    response = patch(emu, GOLD.format(company="usmf"), {"LevelDescription": "Second"}, **{"If-Match": stale})
    assert response.status_code == 412
    assert "An update conflict occurred" in response.json()["error"]["innererror"]["message"]
    assert descriptions(emu)["usmf"] == "First"


def test_delete_with_a_stale_etag_is_412_and_keeps_the_row(emu: CommerceEmulator) -> None:
    stale = get(emu, GOLD.format(company="usmf")).headers["ETag"]
    patch(emu, GOLD.format(company="usmf"), {"LevelDescription": "Changed"}).raise_for_status()
    assert delete(emu, GOLD.format(company="usmf"), **{"If-Match": stale}).status_code == 412
    assert get(emu, GOLD.format(company="usmf")).status_code == 200


# -- configured validation failures ------------------------------------------------------------


def test_configured_failure_rejects_a_patch_with_an_infolog_validation_error(emu: CommerceEmulator) -> None:
    post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-BAD", ReplacementCardNumber="")).raise_for_status()
    assert configure(emu, {"RetailLoyaltyCards": ["LC-BAD"]}).status_code == 200
    response = patch(emu, "RetailLoyaltyCards('LC-BAD')", {"PartyNumber": "1"})
    assert innererror(response) == (
        "Write failed for table row of type 'RetailLoyaltyCardEntity'. Infolog: Error: Card LC-BAD is "
        "blocked for updates.; Warning: validateWrite failed on data source 'RetailLoyaltyCard (RetailLoyaltyCard)'."
    )


def test_configured_failure_leaves_the_row_unchanged(emu: CommerceEmulator) -> None:
    post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-BAD", PartyNumber="0", ReplacementCardNumber=""))
    emu.set_validation_failures({"RetailLoyaltyCards": ["LC-BAD"]})
    patch(emu, "RetailLoyaltyCards('LC-BAD')", {"PartyNumber": "1"})
    assert get(emu, "RetailLoyaltyCards('LC-BAD')").json()["PartyNumber"] == "0"


def test_configured_failure_rejects_a_post_of_that_key(emu: CommerceEmulator) -> None:
    emu.set_validation_failures({"RetailLoyaltyCards": ["LC-BAD"]})
    response = post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-BAD", ReplacementCardNumber=""))
    assert "Infolog: Error: Card LC-BAD is blocked for updates.;" in innererror(response)
    assert get(emu, "RetailLoyaltyCards('LC-BAD')").status_code == 404


def test_configured_failure_matches_keys_case_insensitively(emu: CommerceEmulator) -> None:
    emu.set_validation_failures({"RetailLoyaltyCards": ["lc-bad"]})
    response = post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-BAD", ReplacementCardNumber=""))
    assert response.status_code == 400


def test_configured_failure_leaves_other_keys_writable(emu: CommerceEmulator) -> None:
    emu.set_validation_failures({"RetailLoyaltyCards": ["LC-BAD"]})
    response = post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-GOOD", ReplacementCardNumber=""))
    assert response.status_code == 201


def test_configured_failure_on_a_composite_key_hits_only_that_company(emu: CommerceEmulator) -> None:
    emu.set_validation_failures({"LoyaltyLevels": [{"dataAreaId": "USRT", "LevelPhrase": "Gold"}]})
    rejected = patch(emu, GOLD.format(company="usrt"), {"LevelDescription": "x"})
    assert "Infolog: Error: Loyalty level Gold is blocked for updates." in innererror(rejected)
    assert patch(emu, GOLD.format(company="usmf"), {"LevelDescription": "x"}).status_code == 204


def test_configured_failure_uses_a_custom_message(emu: CommerceEmulator) -> None:
    emu.set_validation_failures({"RetailLoyaltyCards": [{"CardNumber": "LC-BAD", "message": "Card is frozen."}]})
    response = post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-BAD", ReplacementCardNumber=""))
    assert "Infolog: Error: Card is frozen.;" in innererror(response)


def test_config_route_echoes_and_clears_validation_failures(emu: CommerceEmulator) -> None:
    failures = {"RetailLoyaltyCards": ["LC-BAD"]}
    assert configure(emu, failures).json()["validation_failures"] == failures
    assert configure(emu, {}).json()["validation_failures"] == {}
    response = post(emu, "RetailLoyaltyCards", card_row(CardNumber="LC-BAD", ReplacementCardNumber=""))
    assert response.status_code == 201


@pytest.mark.parametrize(
    "failures",
    [
        {"NoSuchSet": ["X"]},
        {"LoyaltyLevels": ["Gold"]},  # composite key given as a string
        {"LoyaltyLevels": [{"LevelPhrase": "Gold"}]},  # key field missing
        {"RetailLoyaltyCards": "LC-BAD"},  # not a list
    ],
)
def test_invalid_validation_failures_config_is_400(emu: CommerceEmulator, failures: Any) -> None:
    assert configure(emu, failures).status_code == 400


def test_the_write_log_holds_each_write_request_as_received_and_no_reads(emu: CommerceEmulator) -> None:
    path = GOLD.format(company="usmf")
    patch(emu, path, {"LevelDescription": "Logged"}, **{"If-Match": "*"})
    get(emu, path)
    delete(emu, path)
    log = requests.get(f"{emu.url}/_emulator/writes", timeout=10).json()["value"]
    assert log == [
        {"method": "PATCH", "path": f"/data/{path}", "if_match": "*", "body": {"LevelDescription": "Logged"}},
        {"method": "DELETE", "path": f"/data/{path}", "if_match": None, "body": None},
    ]
    requests.delete(f"{emu.url}/_emulator/writes", timeout=10).raise_for_status()
    assert requests.get(f"{emu.url}/_emulator/writes", timeout=10).json()["value"] == []
