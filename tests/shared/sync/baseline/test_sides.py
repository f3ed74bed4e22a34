"""Key ranges of an inbound baseline in each service's terms: the Dataverse filter of a range (the company lookup
as the GUIDs of the companies in it), the next range's bound, and the look-up of many Commerce keys at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.mapping.catalog import load_catalog
from shared.sync.baseline.sides import MAX_LOOKUP_FILTER, BaselineSides, _render

G_DEMF, G_USMF, G_USRT = (f"0000000{n}-0000-0000-0000-000000000000" for n in (1, 2, 3))


class FakeCommerce:
    """Answers ``iter_pages`` with the rows given, whatever the filter, and records the filters."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.filters: list[str] = []

    def iter_pages(self, entity_set: str, *, select: list[str], where: str | None = None,
                   **_: Any) -> Iterator[list[dict[str, Any]]]:
        self.filters.append(where or "")
        yield self.rows


def sides(template: str, commerce: Any = None, page_size: int = 10) -> BaselineSides:
    built = BaselineSides(load_catalog().plan(template), commerce, None, page_size, [])  # type: ignore[arg-type]
    built._companies = [("demf", G_DEMF), ("usmf", G_USMF), ("usrt", G_USRT)]
    return built


def dv_filter(template: str, after: tuple[str, ...] | None, through: tuple[str, ...] | None) -> str | None:
    return _render(sides(template).dataverse_filter(after, through))


def test_a_card_range_is_a_range_of_the_card_number_column() -> None:
    assert dv_filter("loyalty_cards", None, None) is None
    assert dv_filter("loyalty_cards", None, ("B",)) == "msdyn_cardnumber le 'B'"
    assert dv_filter("loyalty_cards", ("A'1",), None) == "msdyn_cardnumber gt 'A''1'"
    assert dv_filter("loyalty_cards", ("A",), ("B",)) == "msdyn_cardnumber gt 'A' and msdyn_cardnumber le 'B'"


def terms(text: str | None) -> set[str]:
    """The terms of a filter's top-level ``or`` (in any order)."""
    found, depth, start = set(), 0, 0
    assert text is not None
    for n, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and text.startswith(" or ", n):
            found.add(text[start:n])
            start = n + 4
    return found | {text[start:]}


def test_a_level_range_names_the_companies_it_spans_by_their_lookup_guid() -> None:
    phrase, company = "msdyn_levelphrase", "_msdyn_company_value"
    assert terms(dv_filter("loyalty_levels", ("demf", "Gold"), ("usmf", "Bronze"))) == {
        f"({company} eq {G_DEMF} and {phrase} gt 'Gold')", f"({company} eq {G_USMF} and {phrase} le 'Bronze')"}
    assert terms(dv_filter("loyalty_levels", ("demf", "Z"), ("usrt", "A"))) == {
        f"({company} eq {G_DEMF} and {phrase} gt 'Z')", f"{company} eq {G_USMF}",
        f"({company} eq {G_USRT} and {phrase} le 'A')"}
    assert dv_filter("loyalty_levels", ("USMF", "Gold"), ("usmf", "Silver")) == (  # codes compare case-insensitively
        f"{company} eq {G_USMF} and {phrase} gt 'Gold' and {phrase} le 'Silver'")
    assert dv_filter("loyalty_levels", None, ("demf", "Silver")) == f"{company} eq {G_DEMF} and {phrase} le 'Silver'"
    assert dv_filter("loyalty_levels", ("usrt", "Silver"), None) == f"{company} eq {G_USRT} and {phrase} gt 'Silver'"


def test_a_range_no_dataverse_company_falls_in_holds_no_dataverse_row() -> None:
    assert sides("loyalty_levels").dataverse_filter(("zzzz", "A"), None) == []


def test_the_first_range_also_reads_the_rows_no_range_can_hold() -> None:
    assert sides("loyalty_cards").null_keys_filter() == "msdyn_cardnumber eq null"
    assert sides("loyalty_levels").null_keys_filter() == "msdyn_levelphrase eq null or _msdyn_company_value eq null"


def test_the_next_range_ends_at_the_nearer_side_and_always_moves_on() -> None:
    s = sides("loyalty_cards")
    assert s.smaller(None, ("B",), ("A",)) == ("A",)
    assert s.smaller(None, ("b",), ("A",)) == ("A",)  # compared as both services compare: case-insensitively
    assert s.smaller(None, None, ("A",)) == ("A",)  # Commerce has less than a range left, Dataverse more
    assert s.smaller(None, None, None) is None  # the open-ended last range
    assert s.smaller(("C",), ("B",), ("D",)) == ("D",)  # a bound behind ``after`` (collations disagree) is no bound
    assert s.smaller(("C",), ("B",), None) is None


def test_many_commerce_keys_are_read_in_a_few_or_queries_and_matched_case_insensitively() -> None:
    wanted = [(f"CARD-{n:020d}",) for n in range(100)]
    rows = [{"CardNumber": f"card-{n:020d}"} for n in range(0, 100, 2)] + [{"CardNumber": "CARD-*-WILDCARD-EXTRA"}]
    commerce = FakeCommerce(rows)

    found = sides("loyalty_cards", commerce).commerce_by_keys(wanted)

    assert len(commerce.filters) == 4 and all(len(f) <= MAX_LOOKUP_FILTER for f in commerce.filters)
    assert commerce.filters[0].startswith("CardNumber eq 'CARD-00000000000000000000' or CardNumber eq ")
    assert sorted(found) == sorted(("card-" + k[0][5:],) for k in wanted[::2])  # the extra row is dropped
