"""Shared fixtures: Azurite (real Table Storage), both emulators (module-scoped, reset per test),
app settings pointing at them, and both stores side by side."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.data.tables import TableServiceClient

from devtools.azurite import Azurite, start_azurite
from devtools.demo import STATIC_TOKEN, emulator_settings
from devtools.functions_host import QueuePump
from emulators.commerce.server import start_commerce
from emulators.dataverse.server import DataverseServer, start_dataverse
from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings
from shared.state.store import StateStore
from tests.e2e.stores import Stores
from tests.otel import Telemetry
from tests.scripted_server import ScriptedServer

SEED = {"cards": 60, "reward_points": 10, "levels_per_company": 3}


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    """A scripted HTTP server on loopback: it answers what a test scripts and records what it received."""
    srv = ScriptedServer()
    yield srv
    srv.stop()


@pytest.fixture()
def telemetry() -> Iterator[Telemetry]:
    """The app's metrics and spans, read back in memory (``tests/otel.py``)."""
    with Telemetry.bound() as found:
        yield found


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


@pytest.fixture(scope="module")
def dataverse_emulator() -> Iterator[object]:
    server = start_dataverse(port=0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metadata_emulator() -> Iterator[DataverseServer]:
    """A Dataverse emulator of the module's own for the metadata API (alternate keys Active after two polls)."""
    server = start_dataverse(port=0, key_activation_polls=2)
    yield server
    server.stop()


@pytest.fixture()
def fresh_metadata_emulator(metadata_emulator: DataverseServer) -> DataverseServer:
    """``metadata_emulator`` with no table, row or recorded request of an earlier test."""
    for path in ("metadata/reset", "reset"):
        requests.post(f"{metadata_emulator.url}/_emulator/{path}", timeout=5).raise_for_status()
    requests.delete(f"{metadata_emulator.url}/_emulator/requests", timeout=5).raise_for_status()
    return metadata_emulator


@pytest.fixture(scope="module")
def commerce_emulator() -> Iterator[object]:
    # A small page size so every scan pages through @odata.nextLink several times.
    server = start_commerce(port=0, page_size=25, publisher_options={"retry_wait": 0.05, "timeout": 10.0}, **SEED)
    yield server
    server.stop()


@pytest.fixture()
def runtime(azurite: Azurite, dataverse_emulator: object, commerce_emulator: object, table_prefix: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    dv_url, fo_url = dataverse_emulator.url, commerce_emulator.url  # type: ignore[attr-defined]
    requests.post(f"{dv_url}/_emulator/reset", timeout=10).raise_for_status()
    requests.post(f"{dv_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    requests.post(f"{fo_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    requests.post(f"{fo_url}/_emulator/config", json={"validation_failures": {}}, timeout=10).raise_for_status()
    requests.delete(f"{dv_url}/_emulator/faults", timeout=10)
    requests.delete(f"{fo_url}/_emulator/faults", timeout=10)
    requests.delete(f"{dv_url}/_emulator/service-protection", timeout=10)
    requests.post(f"{fo_url}/_emulator/reset", json=SEED, timeout=10).raise_for_status()
    requests.delete(f"{fo_url}/_emulator/business-events/endpoints", timeout=10).raise_for_status()
    for name, value in emulator_settings(dv_url, fo_url, azurite.connection_string, table_prefix).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    provision_app_owned(get_runtime(), dv_url)  # as after `python -m shared.cli provision` on a tenant
    yield get_runtime()
    get_settings.cache_clear()
    get_runtime.cache_clear()


def provision_app_owned(runtime: Runtime, dataverse_url: str) -> None:
    """The templates' app-owned tables, created afresh (as after ``python -m shared.cli provision`` on a tenant)."""
    from tests.provisioning import provision_app_tables

    requests.post(f"{dataverse_url}/_emulator/metadata/reset", timeout=10).raise_for_status()
    provision_app_tables(runtime, dataverse_url)
    # On a tenant an administrator provisions, not the sync: its request counters and the emulator's start after it.
    runtime.dataverse.core.requests_sent = 0
    requests.post(f"{dataverse_url}/_emulator/stats/reset", timeout=10).raise_for_status()
    requests.delete(f"{dataverse_url}/_emulator/requests", timeout=10)


@pytest.fixture()
def pump(runtime: Runtime, azurite: Azurite) -> Iterator[QueuePump]:
    """The host's queue listener, for draining callback work items on demand (``pump.drain()``)."""
    import function_app

    queue_pump = QueuePump(function_app.app, azurite.connection_string)
    yield queue_pump
    queue_pump.stop()


@pytest.fixture()
def stores(runtime: Runtime, dataverse_emulator: object, commerce_emulator: object) -> Stores:
    return Stores(runtime, dataverse_emulator.url, commerce_emulator.url, STATIC_TOKEN)  # type: ignore[attr-defined]


# Tests that must not share the machine's cores with each other under pytest-xdist (``./dev test`` runs ``-n 2
# --dist loadgroup``): they measure time or load the machine (the chaos run, the browser, the gate's and the
# limiter's timing, the callback deadline, a whole demo process). They all go to one worker, one after the other.
SERIAL = ("/tests/chaos/", "/tests/browser/", "/tests/shared/http/", "/tests/shared/sync/test_callback_deadline.py",
          "/tests/devtools/test_demo_keep.py")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group markers
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/e2e/" in path:
            item.add_marker(pytest.mark.e2e)
        if "/hostile/" in path:
            item.add_marker(pytest.mark.hostile)
        if any(part in path for part in SERIAL):
            item.add_marker(pytest.mark.xdist_group("serial"))
