"""devtools/azurite.py: Azurite as one process, or one process per storage service."""

from __future__ import annotations

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devtools.azurite import start_azurite


@pytest.mark.parametrize("in_memory", [False, True])
def test_separate_services_run_as_separate_processes_behind_one_connection_string(in_memory: bool) -> None:
    with start_azurite(separate_services=True, in_memory=in_memory) as azurite:
        assert len({p.pid for p in azurite.processes}) == 3
        queue = QueueServiceClient.from_connection_string(azurite.connection_string).create_queue("probe")
        queue.send_message("hello")
        table = TableServiceClient.from_connection_string(azurite.connection_string).create_table("probe")
        table.create_entity({"PartitionKey": "p", "RowKey": "r"})

        assert [m.content for m in queue.receive_messages()] == ["hello"]
        assert table.get_entity("p", "r")["RowKey"] == "r"

    assert all(p.poll() is not None for p in azurite.processes)  # stopped on leaving the block
