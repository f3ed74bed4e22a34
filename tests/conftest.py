"""Shared fixtures: Azurite (real Table Storage), both emulators, app settings pointing at them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from devtools.azurite import Azurite, start_azurite
from shared.state.store import StateStore


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = start_azurite()
    yield server
    server.stop()


@pytest.fixture()
def table_prefix() -> str:
    """A fresh set of tables per test: tests never see each other's state."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture()
def state(azurite: Azurite, table_prefix: str) -> StateStore:
    store = StateStore(TableServiceClient.from_connection_string(azurite.connection_string), table_prefix)
    store.ensure_tables()
    return store


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
