"""The ``dataverse.table`` block of a template: an app-owned table declared as data, checked at load time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.mapping.catalog import MappingFileError, load_template

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "app_owned" / "card_snapshots.json"


def variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads(SAMPLE.read_text())
    change(data)
    path = tmp_path / SAMPLE.name
    path.write_text(json.dumps(data))
    return path


def table_of(data: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = data["dataverse"]["table"]
    return table


def column(data: dict[str, Any], schema_name: str) -> dict[str, Any]:
    return next(c for c in table_of(data)["columns"] if c["schema_name"] == schema_name)


def test_the_sample_table_loads_with_logical_names_in_lower_case() -> None:
    table = load_template(SAMPLE).dataverse.table
    assert table is not None
    assert (table.logical_name, table.primary_id, table.prefix) == ("lsync_cardsnapshot", "lsync_cardsnapshotid", "lsync")
    assert table.column_types()["lsync_enrollmentdate"] == "date"
    assert table.column_types()["lsync_replacementcardid"] == "lookup"


def test_a_key_naming_a_column_the_table_lacks_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: table_of(d)["keys"][0].update(columns=["lsync_cardnumber", "lsync_nope"]))
    with pytest.raises(MappingFileError, match="key lsync_CardNumberKey: 'lsync_nope' is no column"):
        load_template(path)


def test_a_key_naming_a_column_by_schema_name_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: table_of(d)["keys"][0].update(columns=["lsync_CardNumber"]))
    with pytest.raises(MappingFileError, match="name columns by logical name"):
        load_template(path)


def test_eleven_keys_are_refused(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        table_of(d)["keys"] = [{"schema_name": f"lsync_Key{i}", "display_name": "k", "columns": ["lsync_cardnumber"]}
                               for i in range(11)]

    with pytest.raises(MappingFileError, match=r"keys: List should have at most 10 items"):
        load_template(variant(tmp_path, change))


def test_a_key_of_seventeen_columns_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: table_of(d)["keys"][0].update(columns=[f"c{i}" for i in range(17)]))
    with pytest.raises(MappingFileError, match="at most 16 items"):
        load_template(path)


def test_a_key_over_900_bytes_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_CardNumber").update(max_length=500))
    with pytest.raises(MappingFileError, match="take 1000 bytes, above the 900"):
        load_template(path)


def test_a_boolean_key_column_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: table_of(d)["keys"][0].update(columns=["lsync_cardnumber", "lsync_iscurrent"]))
    with pytest.raises(MappingFileError, match="lsync_iscurrent is a boolean"):
        load_template(path)


def test_a_schema_name_with_another_prefix_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_PartyNumber").update(schema_name="new_PartyNumber"))
    with pytest.raises(MappingFileError, match="column new_PartyNumber: schema names start with the table's publisher "
                                               "prefix 'lsync_'"):
        load_template(path)


def test_two_columns_with_the_same_logical_name_are_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_PartyNumber").update(schema_name="lsync_CARDNUMBER"))
    with pytest.raises(MappingFileError, match="the logical name 'lsync_cardnumber' is taken"):
        load_template(path)


def test_a_string_column_without_max_length_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_PartyNumber").pop("max_length"))
    with pytest.raises(MappingFileError, match="a string column needs max_length"):
        load_template(path)


def test_a_decimal_precision_above_ten_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_Available").update(precision=11))
    with pytest.raises(MappingFileError, match="precision 11 is above 10"):
        load_template(path)


def test_a_field_writing_an_undeclared_column_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: table_of(d)["columns"].remove(column(d, "lsync_PartyNumber")))
    with pytest.raises(MappingFileError, match=r"fields\[2\] \(PARTYNUMBER\): column 'lsync_partynumber' is not "
                                               "declared in dataverse.table"):
        load_template(path)


def test_a_field_whose_type_the_column_cannot_take_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_PartyNumber").update(type="integer", max_length=None))
    with pytest.raises(MappingFileError, match="dataverse_type 'string' cannot be written to the table's integer column"):
        load_template(path)


def test_a_value_map_value_missing_from_the_choice_options_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: column(d, "lsync_CardTenderType")["options"].pop())
    with pytest.raises(MappingFileError, match=r"writes \[806380003\], not among the options"):
        load_template(path)


def test_a_lookup_field_whose_navigation_property_differs_in_case_is_refused(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        row = d["fields"][3]
        row["dataverse_column"] = "lsync_replacementcardid.msdyn_cardnumber"
        row["lookup"]["navigation_property"] = "lsync_replacementcardid"

    with pytest.raises(MappingFileError, match="the case differs: 'lsync_ReplacementCardId'"):
        load_template(variant(tmp_path, change))


def test_an_alternate_key_that_is_no_table_key_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: d["dataverse"].update(alternate_key=["lsync_partynumber"]))
    with pytest.raises(MappingFileError, match="is none of the keys of dataverse.table"):
        load_template(path)


def test_a_logical_name_other_than_the_lower_cased_schema_name_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: d["dataverse"].update(logical_name="lsync_snapshot"))
    with pytest.raises(MappingFileError, match="must be the table's logical name 'lsync_cardsnapshot'"):
        load_template(path)


def test_an_unknown_property_in_the_table_block_is_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: table_of(d).update(colums=[]))
    with pytest.raises(MappingFileError, match="colums: Extra inputs are not permitted"):
        load_template(path)
