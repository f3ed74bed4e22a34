"""Parsing of $filter, $orderby and key segments (emulators.common.odata)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from emulators.common.odata import (
    FilterPredicate,
    ODataQueryError,
    format_key,
    format_key_literal,
    parse_filter,
    parse_key_segment,
    parse_orderby,
    sort_rows,
)

GUID = "7EB682F1-CA75-E511-80D4-00155D2A68D1"


def matches(expression: str, row: dict[str, Any], **options: bool) -> bool:
    return parse_filter(expression, **options)(row)


# -- $filter: operators -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("n eq 5", True),
        ("n ne 5", False),
        ("n gt 4", True),
        ("n ge 5", True),
        ("n lt 5", False),
        ("n le 5", True),
        ("n gt 4.5", True),
    ],
)
def test_comparison_operators_compare_numbers(expression: str, expected: bool) -> None:
    assert matches(expression, {"n": 5}) is expected


def test_string_comparison_is_case_insensitive() -> None:
    assert matches("name eq 'GOLD'", {"name": "gold"})


def test_doubled_quote_is_an_escaped_quote() -> None:
    assert matches("lastname eq 'O''Bryan'", {"lastname": "O'Bryan"})


def test_and_binds_tighter_than_or() -> None:
    row = {"a": 1, "b": 2, "c": 3}
    assert matches("a eq 9 and b eq 9 or c eq 3", row)
    assert not matches("a eq 9 and (b eq 9 or c eq 3)", row)


def test_not_negates_the_following_expression() -> None:
    assert matches("not (a eq 1)", {"a": 2})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("contains(city,'ATT')", True),
        ("startswith(city,'sea')", True),
        ("endswith(city,'TLE')", True),
        ("contains(city,'x')", False),
    ],
)
def test_string_functions_are_case_insensitive(expression: str, expected: bool) -> None:
    assert matches(expression, {"city": "Seattle"}) is expected


def test_null_only_equals_null() -> None:
    assert matches("a eq null", {"a": None})
    assert matches("a ne null", {"a": "x"})
    assert not matches("a gt 1", {"a": None})


def test_boolean_literals_compare_with_booleans() -> None:
    assert matches("flag eq true", {"flag": True})
    assert not matches("flag eq true", {"flag": False})


def test_guid_literal_matches_regardless_of_case() -> None:
    assert matches(f"_company_value eq {GUID}", {"_company_value": GUID.lower()})


def test_datetime_literal_compares_with_iso_strings() -> None:
    row = {"createdon": "2024-03-01T10:00:00Z"}
    assert matches("createdon ge 2024-01-01T00:00:00Z", row)
    assert not matches("createdon lt 2024-03-01T09:59:59Z", row)


def test_crm_in_function_matches_any_listed_value() -> None:
    expression = "Microsoft.Dynamics.CRM.In(PropertyName='code',PropertyValues=['USD','eur'])"
    assert matches(expression, {"code": "EUR"})
    assert not matches(expression, {"code": "GBP"})


def test_crm_not_in_function_excludes_listed_values() -> None:
    assert matches("Microsoft.Dynamics.CRM.NotIn(PropertyName='code',PropertyValues=[\"USD\"])", {"code": "EUR"})


def test_in_operator_is_accepted_by_default() -> None:
    assert matches("code in ('USD','EUR')", {"code": "usd"})


def test_in_operator_is_rejected_when_not_allowed() -> None:
    with pytest.raises(ODataQueryError, match="'in' operator"):
        parse_filter("code in ('USD','EUR')", allow_in=False)


def test_crm_in_function_is_rejected_when_in_not_allowed() -> None:
    with pytest.raises(ODataQueryError, match="unknown function"):
        parse_filter("Microsoft.Dynamics.CRM.In(PropertyName='a',PropertyValues=['b'])", allow_in=False)


def test_has_operator_is_rejected() -> None:
    with pytest.raises(ODataQueryError, match="'has'"):
        parse_filter("flags has Microsoft.Dynamics.DataEntities.Flags'A'")


# -- $filter: F&O flavour ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("'*retail*'", True), ("'USRET*'", True), ("'*store'", False), ("'usretail'", True)],
)
def test_wildcard_eq_matches_star_patterns(pattern: str, expected: bool) -> None:
    assert matches(f"Name eq {pattern}", {"Name": "USRetail"}, wildcard_eq=True) is expected


def test_star_is_literal_without_wildcard_eq() -> None:
    assert not matches("Name eq '*retail*'", {"Name": "USRetail"})


def test_enum_literal_compares_member_name() -> None:
    assert matches("Redeemable eq Microsoft.Dynamics.DataEntities.NoYes'Yes'", {"Redeemable": "Yes"})
    assert not matches("Redeemable eq Microsoft.Dynamics.DataEntities.NoYes'Yes'", {"Redeemable": "No"})


# -- $filter: errors and metadata --------------------------------------------------------


def test_unterminated_literal_message_matches_the_documented_one() -> None:
    with pytest.raises(ODataQueryError) as raised:
        parse_filter("lastname eq 'O'Bryan'")
    assert str(raised.value) == "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''."


@pytest.mark.parametrize("expression", ["", "a eq", "a eq 1 b", "(a eq 1", "a eq 1 and", "eq 1"])
def test_malformed_filters_raise(expression: str) -> None:
    with pytest.raises(ODataQueryError):
        parse_filter(expression)


def test_unknown_function_raises() -> None:
    with pytest.raises(ODataQueryError, match="unknown function with name 'foo'"):
        parse_filter("foo(a) eq 1")


def test_compiled_filter_lists_referenced_properties() -> None:
    predicate = parse_filter("a eq 1 and (contains(b,'x') or not c eq null)")
    assert isinstance(predicate, FilterPredicate)
    assert predicate.properties == {"a", "b", "c"}


# -- $orderby ---------------------------------------------------------------------------


def test_orderby_parses_properties_and_directions() -> None:
    assert parse_orderby("a, b desc,c asc") == [("a", False), ("b", True), ("c", False)]


@pytest.mark.parametrize("text", ["", "a,", "a sideways", "a desc extra"])
def test_malformed_orderby_raises(text: str) -> None:
    with pytest.raises(ODataQueryError):
        parse_orderby(text)


def test_sort_puts_none_first_ascending_and_last_descending() -> None:
    rows: list[dict[str, Any]] = [{"v": "b"}, {"v": None}, {"v": "A"}]
    assert [r["v"] for r in sort_rows(rows, [("v", False)])] == [None, "A", "b"]
    assert [r["v"] for r in sort_rows(rows, [("v", True)])] == ["b", "A", None]


def test_sort_applies_keys_in_order() -> None:
    rows = [{"a": 1, "b": 1}, {"a": 0, "b": 2}, {"a": 1, "b": 0}]
    assert sort_rows(rows, [("a", True), ("b", False)]) == [{"a": 1, "b": 0}, {"a": 1, "b": 1}, {"a": 0, "b": 2}]


# -- key segments ----------------------------------------------------------------------


def test_key_single_quoted_string() -> None:
    assert parse_key_segment("'ABC'") == [(None, "ABC")]


def test_key_bare_guid_is_normalised_lower_case() -> None:
    assert parse_key_segment(GUID) == [(None, GUID.lower())]


def test_key_composite_with_lookup_value() -> None:
    assert parse_key_segment(f"msdyn_levelphrase='Gold',_msdyn_company_value={GUID}") == [
        ("msdyn_levelphrase", "Gold"),
        ("_msdyn_company_value", GUID.lower()),
    ]


def test_key_quotes_protect_commas_equals_and_doubled_quotes() -> None:
    assert parse_key_segment("a='x,=''y',b=2") == [("a", "x,='y"), ("b", 2)]


@pytest.mark.parametrize("text", ["", "ABC", "'a','b'", "a='x',a='y'", "a='x", "a='x' b='y'", "'a',b='c'"])
def test_malformed_key_segments_raise(text: str) -> None:
    with pytest.raises(ODataQueryError):
        parse_key_segment(text)


def test_format_key_literal_quotes_strings_and_leaves_numbers_and_guids_bare() -> None:
    assert format_key_literal("O'Bryan") == "'O''Bryan'"
    assert format_key_literal(42) == "42"
    assert format_key_literal(uuid.UUID(GUID)) == GUID.lower()
    assert format_key_literal(GUID) == GUID.lower()
    assert format_key_literal(True) == "true"


def test_format_key_round_trips_through_parse() -> None:
    pairs: list[tuple[str | None, Any]] = [("a", "x,'y"), ("b", 2), ("_c_value", GUID.lower())]
    assert parse_key_segment(format_key(pairs)) == pairs
