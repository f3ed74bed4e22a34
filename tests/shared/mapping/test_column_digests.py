"""Per-column digests: which columns a later write must send."""

from __future__ import annotations

from shared.mapping.plan import COMPANY_COLUMN, changed_columns, column_digests

COLUMNS = {"msdyn_cardnumber": "C1", "msdyn_partynumber": "P1", "msdyn_cardtendertype": 806380000}


def test_unchanged_columns_are_not_named() -> None:
    assert changed_columns(COLUMNS, None, column_digests(COLUMNS, None)) == frozenset()


def test_each_changed_column_is_named() -> None:
    before = column_digests(COLUMNS, None)
    assert changed_columns({**COLUMNS, "msdyn_partynumber": "P2"}, None, before) == {"msdyn_partynumber"}


def test_a_value_changing_type_is_a_change() -> None:
    before = column_digests(COLUMNS, None)
    assert changed_columns({**COLUMNS, "msdyn_cardtendertype": "806380000"}, None, before) == {"msdyn_cardtendertype"}


def test_a_new_company_names_the_company_binding() -> None:
    assert changed_columns(COLUMNS, "usrt", column_digests(COLUMNS, "usmf")) == {COMPANY_COLUMN}


def test_digests_of_another_column_set_cannot_tell_so_everything_is_sent() -> None:
    assert changed_columns(COLUMNS, None, column_digests({"msdyn_cardnumber": "C1"}, None)) is None
    assert changed_columns(COLUMNS, None, "") is None
