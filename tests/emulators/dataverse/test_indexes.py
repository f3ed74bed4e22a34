"""The emulator's sorted indexes are only a speed-up: queries answered through them return exactly what a scan of
the whole table returns (rows, order, pages), also after writes; and the request log lists what was asked."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import requests

from emulators.common.odata import parse_filter, sort_key
from emulators.dataverse.indexes import column_bounds
from emulators.dataverse.query import order_rows, parse_collection_query, select_rows, sort_spec
from emulators.dataverse.schema import TABLES
from emulators.dataverse.server import DataverseServer
from emulators.dataverse.store import Store
from tests.emulators.dataverse.support import Api

CARDS = "msdyn_loyaltycards"
TABLE = TABLES[CARDS]
ALPHABET = "aAbBcC-_0'é"


def word(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def random_filter(rng: random.Random, depth: int = 0) -> str:
    """Comparisons of the card number (the indexed column) and the party number, and/or/not, parentheses."""
    roll = rng.random()
    if depth < 3 and roll < 0.25:
        return f"({random_filter(rng, depth + 1)}) {rng.choice(['and', 'or'])} ({random_filter(rng, depth + 1)})"
    if depth < 3 and roll < 0.35:
        return f"{random_filter(rng, depth + 1)} and {random_filter(rng, depth + 1)}"
    if depth < 3 and roll < 0.4:
        return f"not ({random_filter(rng, depth + 1)})"
    column = rng.choice(["msdyn_cardnumber", "msdyn_cardnumber", "msdyn_partynumber"])
    op = rng.choice(["eq", "ne", "gt", "ge", "lt", "le"])
    if rng.random() < 0.1:
        return f"{column} {op} null"
    if rng.random() < 0.2:
        return f"{literal(word(rng))} {op} {column}"
    return f"{column} {op} {literal(word(rng))}"


def store_with(rows: int, seed: int) -> tuple[Store, random.Random]:
    rng = random.Random(seed)
    store = Store(TABLES)
    seen: set[str] = set()
    for _ in range(rows):
        card = word(rng) + word(rng)
        if card.casefold() in seen:
            continue  # the alternate key is unique, case-insensitively
        seen.add(card.casefold())
        store.insert(CARDS, {"msdyn_cardnumber": card, "msdyn_partynumber": rng.choice([None, word(rng)])})
    return store, rng


def test_a_filter_bounds_its_column_soundly() -> None:
    store, rng = store_with(300, seed=1)
    rows = store.rows(CARDS)
    for _ in range(400):
        text = random_filter(rng)
        predicate = parse_filter(text)
        bounds = column_bounds(text, "msdyn_cardnumber")
        if bounds is None:
            continue
        for row in rows:
            if predicate(row):
                key = sort_key(row["msdyn_cardnumber"])
                assert bounds.low is None or key > bounds.low or (key == bounds.low and bounds.low_inclusive), text
                assert bounds.high is None or key < bounds.high or (key == bounds.high and bounds.high_inclusive), text


def test_a_key_range_filter_is_bounded_on_both_sides() -> None:
    bounds = column_bounds("msdyn_cardnumber gt 'A' and msdyn_cardnumber le 'M'", "msdyn_cardnumber")
    assert bounds is not None and (bounds.low, bounds.low_inclusive, bounds.high, bounds.high_inclusive) == (
        sort_key("A"), False, sort_key("M"), True)
    assert column_bounds("msdyn_cardnumber gt 'A' or msdyn_partynumber eq 'x'", "msdyn_cardnumber") is None
    assert column_bounds("contains(msdyn_cardnumber,'A')", "msdyn_cardnumber") is None


def brute(store: Store, text: str | None, orderby: str, last: dict[str, Any] | None) -> list[str]:
    items = [("$filter", text)] if text else []
    query = parse_collection_query(TABLE, [*items, ("$orderby", orderby)])
    spec = sort_spec(TABLE, query.orderby)
    rows = [r for r in store.rows(CARDS) if query.predicate is None or query.predicate(r)]
    ordered = order_rows(rows, spec)
    if last is not None:
        last_key = [sort_key(last.get(n)) for n, _ in spec]

        def after(row: dict[str, Any]) -> bool:
            for (name, descending), theirs in zip(spec, last_key, strict=True):
                mine = sort_key(row.get(name))
                if mine != theirs:
                    return (mine > theirs) != descending
            return False

        ordered = [r for r in ordered if after(r)]
    return [r["msdyn_loyaltycardid"] for r in ordered]


@pytest.mark.parametrize("seed", range(3))
def test_an_indexed_query_returns_what_a_scan_returns(seed: int) -> None:
    store, rng = store_with(400, seed=seed)
    for _ in range(150):
        text = random_filter(rng) if rng.random() < 0.9 else None
        orderby = rng.choice(["msdyn_cardnumber", "msdyn_cardnumber desc", "msdyn_cardnumber,msdyn_partynumber desc",
                              "msdyn_loyaltycardid"])
        items = [("$filter", text)] if text else []
        query = parse_collection_query(TABLE, [*items, ("$orderby", orderby)])
        spec = sort_spec(TABLE, query.orderby)
        rows = store.rows(CARDS)
        last = rng.choice(rows) if rng.random() < 0.5 else None
        want = rng.randint(1, 50)
        expected = brute(store, text, orderby, last)
        got = [r["msdyn_loyaltycardid"] for r in select_rows(store, TABLE, query, spec, last, want=want)[0]]
        assert got[:want] == expected[:want], (text, orderby)
        assert len(got) >= min(want, len(expected))
        if rng.random() < 0.3:  # the table changes between queries: the index follows every write
            victim = rng.choice(rows)["msdyn_loyaltycardid"]
            if rng.random() < 0.5:
                store.update(CARDS, victim, {"msdyn_cardnumber": "upd" + uuid.uuid4().hex[:6]})
            else:
                store.delete(CARDS, victim)


def test_paging_a_key_range_through_nextlinks_returns_every_row_once(api: Api, emulator: DataverseServer) -> None:
    rng = random.Random(5)
    cards = sorted({f"{rng.choice('AbCd')}{n:04d}" for n in range(120)}, key=str.casefold)
    assert api.bulk("CreateMultiple", [{"@odata.type": "Microsoft.Dynamics.CRM.msdyn_loyaltycard",
                                        "msdyn_cardnumber": c} for c in cards]).status_code in (200, 204)
    url = (f"{CARDS}?$select=msdyn_cardnumber&$orderby=msdyn_cardnumber"
           f"&$filter=msdyn_cardnumber gt '{cards[10]}' and msdyn_cardnumber le '{cards[100]}'")
    got: list[str] = []
    next_link: str | None = url
    while next_link:
        body = api.get(next_link, Prefer="odata.maxpagesize=7").json()
        got.extend(r["msdyn_cardnumber"] for r in body["value"])
        next_link = body.get("@odata.nextLink")
    assert got == cards[11:101]
    [row] = [r for r in api.rows() if r["msdyn_cardnumber"] == cards[50]]
    response = api.patch(f"{CARDS}({row['msdyn_loyaltycardid']})", {"msdyn_cardnumber": "zzz"}, **{"If-Match": "*"})
    assert response.status_code == 204
    body = api.get(url.replace("$select", "$top=200&$select")).json()
    assert [r["msdyn_cardnumber"] for r in body["value"]] == [*cards[11:50], *cards[51:101]]


def test_the_request_log_lists_each_api_request_with_its_query_and_prefer(api: Api, emulator: DataverseServer) -> None:
    requests.delete(f"{emulator.url}/_emulator/requests", timeout=5).raise_for_status()
    api.get(f"{CARDS}?$select=msdyn_cardnumber&$top=3", Prefer="odata.maxpagesize=2")
    api.get("WhoAmI")
    log = requests.get(f"{emulator.url}/_emulator/requests", timeout=5).json()["value"]
    assert [(r["method"], r["path"].rsplit("/", 1)[-1], r["query"], r["prefer"]) for r in log] == [
        ("GET", CARDS, {"$select": "msdyn_cardnumber", "$top": "3"}, "odata.maxpagesize=2"), ("GET", "WhoAmI", {}, "")]
    requests.delete(f"{emulator.url}/_emulator/requests", timeout=5).raise_for_status()
    assert requests.get(f"{emulator.url}/_emulator/requests", timeout=5).json()["value"] == []
