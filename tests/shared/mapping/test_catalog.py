"""The template files in mappings/ load, and a broken file fails naming file, row and problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.mapping.catalog import DEFAULT_MAPPINGS_DIR, MappingFileError, load_catalog

# The documented rows of the three dual-write maps, kept in the repo (the file says where they come from).
DOCUMENTED_ROWS = Path(__file__).resolve().parents[2] / "data" / "dual_write_map_rows.json"


def write_variant(tmp_path: Path, name: str, change: Any) -> Path:
    folder = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, folder)
    path = folder / f"{name}.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return folder


def test_the_loyalty_templates_load() -> None:
    assert sorted(t.name for t in load_catalog()) == ["loyalty_card_balances", "loyalty_card_tiers", "loyalty_cards",
                                                      "loyalty_levels",
                                                      "loyalty_reward_points"]


def test_every_documented_row_is_in_its_template_with_the_same_map_type() -> None:
    reference = json.loads(DOCUMENTED_ROWS.read_text())["maps"]
    names = {"loyalty_card": "loyalty_cards", "loyalty_levels": "loyalty_levels",
             "loyalty_reward_points": "loyalty_reward_points"}
    catalog = load_catalog()
    for ref_name, template_name in names.items():
        rows = {(r.fo_field, r.dataverse_column, r.map_type.value) for r in catalog.templates[template_name].fields}
        expected = {(f["fo_field"], f["dataverse_column"], f["map_type"]) for f in reference[ref_name]}
        assert rows == expected, template_name


def test_value_map_pairs_match_the_reference() -> None:
    catalog = load_catalog()
    tender = catalog.templates["loyalty_cards"].value_maps["RetailLoyaltyTenderTypeBase"]
    assert {(e.member, e.dataverse) for e in tender.entries} == {
        ("AsCardTender", 806380000), ("AsContactTender", 806380001), ("NoTender", 806380002), ("Blocked", 806380003)}


def test_an_undefined_value_map_names_file_row_and_problem(tmp_path: Path) -> None:
    def break_it(data: dict[str, Any]) -> None:
        data["fields"][1]["value_map"] = "NoSuchEnum"

    folder = write_variant(tmp_path, "loyalty_cards", break_it)
    with pytest.raises(MappingFileError, match=r"loyalty_cards\.json: .*CARDTENDERTYPE.*NoSuchEnum"):
        load_catalog(folder)


def test_an_unknown_map_type_names_the_row(tmp_path: Path) -> None:
    def break_it(data: dict[str, Any]) -> None:
        data["fields"][2]["map_type"] = "<>"

    folder = write_variant(tmp_path, "loyalty_cards", break_it)
    with pytest.raises(MappingFileError, match=r"fields\[2\] \(PARTYNUMBER\)\.map_type"):
        load_catalog(folder)


def test_a_one_way_key_field_is_rejected(tmp_path: Path) -> None:
    def break_it(data: dict[str, Any]) -> None:
        data["fields"][0]["map_type"] = ">"

    folder = write_variant(tmp_path, "loyalty_cards", break_it)
    with pytest.raises(MappingFileError, match="key field 'CardNumber' must be mapped '='"):
        load_catalog(folder)


def test_a_lookup_without_dot_notation_is_rejected(tmp_path: Path) -> None:
    def break_it(data: dict[str, Any]) -> None:
        row = next(r for r in data["fields"] if r["fo_field"] == "REWARDPOINTCURRENCY")
        row["dataverse_column"] = "msdyn_rewardpointcurrency"

    folder = write_variant(tmp_path, "loyalty_reward_points", break_it)
    with pytest.raises(MappingFileError, match="REWARDPOINTCURRENCY.*dot notation"):
        load_catalog(folder)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "broken.json").write_text("{ not json")
    with pytest.raises(MappingFileError, match=r"broken\.json: not valid JSON"):
        load_catalog(folder)


def test_a_fourth_template_needs_no_code(tmp_path: Path) -> None:
    def rename(data: dict[str, Any]) -> None:
        data["name"] = "loyalty_cards_copy"

    folder = write_variant(tmp_path, "loyalty_cards", rename)
    (folder / "loyalty_cards.json").rename(folder / "loyalty_cards_copy.json")
    shutil.copy(DEFAULT_MAPPINGS_DIR / "loyalty_cards.json", folder / "loyalty_cards.json")
    assert "loyalty_cards_copy" in load_catalog(folder).templates


def test_a_template_comes_after_the_templates_its_lookups_point_at() -> None:
    names = [t.name for t in load_catalog()]
    assert names.index("loyalty_cards") < names.index("loyalty_card_tiers")
