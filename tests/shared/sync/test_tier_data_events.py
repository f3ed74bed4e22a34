"""A card-tier data event names its row by six key columns, two of them dates (docs/protocol-notes.md §4.4)."""

from __future__ import annotations

from shared.mapping.catalog import load_catalog
from shared.messages.data_events import parse_data_event
from shared.sync.callbacks import key_from_data_event
from tests.data_events import data_event

PLAN = load_catalog().plan("loyalty_card_tiers")
TABLE = "mserp_retailloyaltycardtierv2entity"
NAMED = {"mserp_loyaltycardnumber": "LC-000123", "mserp_loyaltyprogramname": "CRM",
         "mserp_loyaltytieraffiliationname": "CRM", "mserp_loyaltytierid": "GOLD"}


def test_wcf_dates_in_the_key_columns_become_the_rows_dates() -> None:
    event = parse_data_event(data_event(table=TABLE, attributes={
        **NAMED, "mserp_validfrom": "/Date(1704067200000)/", "mserp_validto": "/Date(1735603200000)/"}))
    key = key_from_data_event(PLAN, event)
    assert isinstance(key, dict)
    assert PLAN.key_of(key) == ("LC-000123", "CRM", "CRM", "GOLD", "2024-01-01", "2024-12-31")


def test_an_open_valid_to_dropped_as_a_null_date_is_the_empty_date() -> None:
    event = parse_data_event(data_event(table=TABLE, attributes={**NAMED, "mserp_validfrom": "/Date(1704067200000)/"}))
    key = key_from_data_event(PLAN, event)
    assert isinstance(key, dict) and PLAN.key_of(key)[-1] == "1900-01-01"


def test_an_update_that_names_only_some_key_columns_leaves_the_missing_dates_unknown() -> None:
    from shared.sync.callbacks import PartialKey

    event = parse_data_event(data_event("OnExternalUpdated", table=TABLE,
                                        attributes={"mserp_loyaltycardnumber": "LC-000123"}))
    key = key_from_data_event(PLAN, event)
    assert isinstance(key, PartialKey) and not any(p in key.fields for p in ("ValidFrom", "ValidTo"))
