"""Hand-formatted entity-group transactions against Azurite: atomic, typed, ETag-guarded, keys escaped."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient

from shared.state.store import StateStore
from shared.state.transactions import MAX_OPERATIONS, Operation, TransactionRefused, submit

AWKWARD_KEY = "0001'x %25 é ()"


def entity(row_key: str, **fields: object) -> dict[str, object]:
    return {"PartitionKey": "p", "RowKey": row_key, **fields}


@pytest.fixture
def table(state: StateStore) -> TableClient:
    return state.synced.table


def test_a_full_group_of_creates_lands_with_its_types(table: TableClient) -> None:
    submit(table, [Operation("create", entity(f"k{i:03d}", hash="h", big=EntityProperty(2**40, EdmType.INT64),
                                              small=7, flag=True)) for i in range(MAX_OPERATIONS)])

    stored = table.get_entity("p", "k099")
    assert len(list(table.list_entities())) == MAX_OPERATIONS
    assert (stored["hash"], stored["small"], stored["flag"]) == ("h", 7, True)
    assert stored["big"].value == 2**40 and stored["big"].edm_type == EdmType.INT64


def test_quotes_percent_signs_and_non_ascii_in_keys_round_trip(table: TableClient) -> None:
    submit(table, [Operation("create", entity(AWKWARD_KEY, hash="a"))])
    etag = table.get_entity("p", AWKWARD_KEY).metadata["etag"]

    submit(table, [Operation("replace", entity(AWKWARD_KEY, hash="b"), etag=etag)])

    assert table.get_entity("p", AWKWARD_KEY)["hash"] == "b"


def test_creating_an_existing_entity_refuses_the_whole_group(table: TableClient) -> None:
    submit(table, [Operation("create", entity("taken"))])

    with pytest.raises(TransactionRefused) as refused:
        submit(table, [Operation("create", entity("fresh")), Operation("create", entity("taken"))])

    assert (refused.value.status, refused.value.code) == (409, "EntityAlreadyExists")
    with pytest.raises(ResourceNotFoundError):
        table.get_entity("p", "fresh")


def test_a_replace_with_a_stale_etag_is_refused(table: TableClient) -> None:
    submit(table, [Operation("create", entity("k", hash="1"))])
    stale = table.get_entity("p", "k").metadata["etag"]
    submit(table, [Operation("replace", entity("k", hash="2"), etag=stale)])

    with pytest.raises(TransactionRefused) as refused:
        submit(table, [Operation("replace", entity("k", hash="3"), etag=stale)])

    assert refused.value.status == 412
    assert table.get_entity("p", "k")["hash"] == "2"


def test_a_replace_of_a_missing_entity_is_refused(table: TableClient) -> None:
    with pytest.raises(TransactionRefused) as refused:
        submit(table, [Operation("replace", entity("gone", hash="x"), etag='W/"datetime\'2020-01-01T00%3A00%3A00Z\'"')])

    assert refused.value.status == 404


def test_an_upsert_inserts_then_replaces_without_a_condition(table: TableClient) -> None:
    submit(table, [Operation("upsert", entity("u", hash="1", extra="x"))])
    submit(table, [Operation("upsert", entity("u", hash="2"))])

    stored = table.get_entity("p", "u")
    assert stored["hash"] == "2" and "extra" not in stored


def test_more_than_one_hundred_operations_are_rejected_before_sending(table: TableClient) -> None:
    with pytest.raises(ValueError, match="at most 100"):
        submit(table, [Operation("create", entity(f"k{i}")) for i in range(MAX_OPERATIONS + 1)])


def test_a_group_of_deletes_removes_every_entity(table: TableClient) -> None:
    submit(table, [Operation("create", entity(f"k{i}")) for i in range(5)])

    submit(table, [Operation("delete", entity(f"k{i}")) for i in range(5)])

    assert list(table.list_entities()) == []
