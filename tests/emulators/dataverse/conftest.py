"""Fixtures shared by the Dataverse emulator's tests: one emulator per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from emulators.dataverse.server import DataverseServer, start_dataverse
from tests.emulators.dataverse.support import Api


@pytest.fixture(scope="module")
def emulator() -> Iterator[DataverseServer]:
    emu = start_dataverse(port=0)
    yield emu
    emu.stop()


@pytest.fixture()
def api(emulator: DataverseServer) -> Iterator[Api]:
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5).raise_for_status()
    emulator.faults.clear()
    client = Api(emulator)
    yield client
    client.session.close()
