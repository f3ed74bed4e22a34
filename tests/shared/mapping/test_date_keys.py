"""Date key parts (LoyaltyCardTiersV2's ValidFrom/ValidTo) round-trip: F&O key, synced state, range bounds, Dataverse key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.http.urls import filter_equal, key_segment, odata_id
from shared.mapping.catalog import MappingFileError, load_catalog, load_template
from shared.state.checkpoints import key_from_json
from shared.state.store import decode_key, encode_key
from shared.sync.scan.ranges import range_filter
from tests.builders import card_tier_row
from tests.shared.mapping.test_catalog import write_variant

PLAN = load_catalog().plan("loyalty_card_tiers")
ROW = card_tier_row(ValidFrom="2024-01-01T00:00:00Z", ValidTo="2024-12-31T00:00:00Z")


def test_a_date_key_part_is_kept_as_its_utc_date() -> None:
    assert PLAN.key_of(ROW) == ("LC-000123", "CRM", "CRM", "GOLD", "2024-01-01", "2024-12-31")
    assert PLAN.key_of(card_tier_row(ValidTo="1900-01-01T12:00:00Z"))[-1] == "1900-01-01"  # the emulator's empty date
    assert PLAN.key_of(card_tier_row(ValidFrom="2024-01-01T01:00:00+02:00"))[4] == "2023-12-31"


def test_the_f_and_o_key_segment_carries_dates_bare_not_quoted() -> None:
    assert key_segment("LoyaltyCardTiersV2", PLAN.key_as_dict(PLAN.key_of(ROW))) == (
        "LoyaltyCardTiersV2(LoyaltyCardNumber='LC-000123',LoyaltyProgramName='CRM',LoyaltyTierAffiliationName='CRM',"
        "LoyaltyTierId='GOLD',ValidFrom=2024-01-01T00:00:00Z,ValidTo=2024-12-31T00:00:00Z)")
    assert "ValidFrom eq 2024-01-01T00:00:00Z" in filter_equal(PLAN.key_as_dict(PLAN.key_of(ROW)))


def test_a_key_round_trips_through_its_state_row_key() -> None:
    row_key = encode_key(PLAN.key_of(ROW))
    assert row_key == "LC-000123|CRM|CRM|GOLD|2024-01-01|2024-12-31"
    assert PLAN.key_of(PLAN.key_as_dict(decode_key(row_key))) == PLAN.key_of(ROW)


def test_a_range_bound_from_a_checkpoint_renders_dates_exactly_as_f_and_o_sent_them() -> None:
    bound = key_from_json(json.dumps(["LC-000123", "CRM", "CRM", "GOLD", "2024-01-01T00:00:00Z", "1900-01-01T12:00:00Z"]))
    assert bound is not None
    typed = tuple(PLAN.fo_literal(p, v) for p, v in zip(PLAN.key_properties, bound, strict=True))
    where = range_filter(list(PLAN.key_properties), typed, None)
    assert where is not None and "ValidTo gt 1900-01-01T12:00:00Z" in where and "'2024" not in where


def writer_key(row: dict[str, Any]) -> dict[str, Any]:
    record = PLAN.to_dataverse({**row, "@current_tier": True})
    return {c: PLAN.dataverse_literal(c, record.columns[c]) for c in PLAN.alternate_key_columns}


def test_the_dataverse_alternate_key_carries_date_columns_as_bare_dates() -> None:
    key = writer_key(ROW)
    assert key_segment("lsync_loyaltycardtiers", key).endswith("lsync_validfrom=2024-01-01,lsync_validto=2024-12-31)")
    assert odata_id("lsync_loyaltycardtiers", key).endswith("lsync_validfrom=2024-01-01,lsync_validto=2024-12-31)")


def test_a_deletes_dataverse_key_from_the_state_row_key_is_the_same_as_from_the_row() -> None:
    from shared.sync.writer import DataverseWriter

    writer = DataverseWriter(None, PLAN)  # type: ignore[arg-type]  # no request: the key has no company lookup
    assert writer.key_for(decode_key(encode_key(PLAN.key_of(ROW)))) == writer_key(ROW)


def test_date_columns_get_the_date_of_the_f_and_o_value() -> None:
    columns = PLAN.to_dataverse({**card_tier_row(), "@current_tier": False}).columns
    assert (columns["lsync_validfrom"], columns["lsync_validto"], columns["lsync_iscurrent"]) == (
        "2024-01-01", "1900-01-01", False)


def test_a_row_whose_derived_column_was_not_computed_fails_instead_of_writing_null() -> None:
    from shared.mapping.plan import MappingError

    with pytest.raises(MappingError, match="@current_tier"):
        PLAN.to_dataverse(card_tier_row())


def test_a_one_way_template_keys_its_fields_with_the_one_way_map_type(tmp_path: Any) -> None:
    folder = write_variant(tmp_path, "loyalty_card_tiers", lambda d: d["fields"][0].update(map_type="="))
    with pytest.raises(MappingFileError):
        load_template(folder / "loyalty_card_tiers.json")


def test_a_derived_groups_properties_must_lead_the_key(tmp_path: Any) -> None:
    def swap(data: dict[str, Any]) -> None:
        data["derived"]["current_tier"]["group_by"] = ["LoyaltyProgramName", "LoyaltyCardNumber"]

    folder = write_variant(tmp_path, "loyalty_card_tiers", swap)
    with pytest.raises(MappingFileError, match="first parts of commerce.key"):
        load_template(folder / "loyalty_card_tiers.json")
