"""Records kept for operators, with no time limit: parked records (``<prefix>parked``), conflicts
(``<prefix>conflicts``), the Dataverse-id index that lets a Dataverse delete name its Commerce key
(``<prefix>dvids``, kept only when Dataverse deletes flow to Commerce), and the ``Target.Id`` index that lets an
F&O data event's delete name it (``<prefix>targetids``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.clock import Clock
from shared.state.keys import MAX_TEXT, decode_key, split_parked_key
from shared.state.transactions import MAX_OPERATIONS, Operation, submit


class ParkedKeys(set[str]):
    """The parked row keys of a template, and ``waiting``: those refused for a reason in their own data (row key ->
    the hash of the Commerce content that was refused), which a scan skips until that content changes."""

    def __init__(self, keys: Iterable[str] = (), waiting: dict[str, str] | None = None) -> None:
        super().__init__(keys)
        self.waiting: dict[str, str] = waiting or {}


class ParkedRecords:
    def __init__(self, table: TableClient, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def park(self, template: str, row_key: str, *, direction: str, error_class: str, error: str,
             source: str, correlation_id: str, payload: Any = None, wait_hash: str = "") -> int:
        """Keep a record that could not be synced, with its reason; returns the attempt count. ``wait_hash``: the
        record was refused for a reason in its data; the hash of that content (scans skip it until it changes)."""
        table: TableClient = self.table
        try:
            existing = table.get_entity(template, row_key)
            attempts = int(existing.get("attempts", 0)) + 1
            first = existing.get("first_failed", self.clock.now().isoformat())
        except ResourceNotFoundError:
            attempts, first = 1, self.clock.now().isoformat()
        entity = {
            "PartitionKey": template,
            "RowKey": row_key,
            "key": json.dumps(list(decode_key(split_parked_key(row_key)[1]))),
            "direction": direction,
            "error_class": error_class,
            "error": error[:MAX_TEXT],
            "attempts": attempts,
            "first_failed": first,
            "last_failed": self.clock.now().isoformat(),
            "source": source,
            "correlation_id": correlation_id,
            "payload": json.dumps(payload, default=str)[:MAX_TEXT] if payload is not None else "",
            "wait_hash": wait_hash,
        }
        table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return attempts

    def stop_waiting(self, template: str, row_keys: Iterable[str]) -> None:
        """These parked records go with the next scan again, whatever their content (a cause found to be one for
        all, not their data)."""
        for row_key in set(row_keys):
            with contextlib.suppress(ResourceNotFoundError):
                self.table.update_entity({"PartitionKey": template, "RowKey": row_key, "wait_hash": ""},
                                         mode=UpdateMode.MERGE)

    def unpark(self, template: str, row_key: str) -> bool:
        try:
            self.table.delete_entity(template, row_key)
        except ResourceNotFoundError:
            return False
        return True

    def all(self, template: str | None = None) -> Iterator[dict[str, Any]]:
        if template is None:
            yield from self.table.list_entities()
        else:
            yield from self.table.query_entities("PartitionKey eq @pk", parameters={"pk": template})

    def get(self, template: str, row_key: str) -> dict[str, Any] | None:
        try:
            return dict(self.table.get_entity(template, row_key))
        except ResourceNotFoundError:
            return None

    def keys(self, template: str) -> ParkedKeys:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": template},
                                          select=["RowKey", "wait_hash"])
        rows = [(e["RowKey"], e.get("wait_hash") or "") for e in query]
        return ParkedKeys((k for k, _ in rows), {k: h for k, h in rows if h})


class Conflicts:
    def __init__(self, table: TableClient, clock: Clock) -> None:
        self.table = table
        self.clock = clock

    def record(self, template: str, row_key: str, *, commerce: Any, dataverse: Any, winner: str,
                        detected_by: str, correlation_id: str) -> None:
        """Both sides changed a record since the last sync; kept for operators, with no time limit."""
        at = self.clock.now().isoformat()
        self.table.create_entity({
            "PartitionKey": template, "RowKey": f"{at}|{row_key}", "key": json.dumps(list(decode_key(row_key))),
            "commerce": json.dumps(commerce, default=str)[:MAX_TEXT],
            "dataverse": json.dumps(dataverse, default=str)[:MAX_TEXT], "winner": winner, "detected_at": at,
            "detected_by": detected_by, "correlation_id": correlation_id})

    def all(self, template: str | None = None) -> Iterator[dict[str, Any]]:
        if template is None:
            yield from self.table.list_entities()
        else:
            yield from self.table.query_entities("PartitionKey eq @pk", parameters={"pk": template})


class DataverseIds:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def remember(self, template: str, dataverse_id: str, row_key: str) -> None:
        self.table.upsert_entity({"PartitionKey": template, "RowKey": dataverse_id.lower(), "key": row_key},
                                         mode=UpdateMode.REPLACE)

    def remember_many(self, template: str, pairs: Iterable[tuple[str, str]]) -> None:
        """``remember`` for many (Dataverse id, row key) pairs: entity-group transactions of up to 100."""
        by_id = {dataverse_id.lower(): row_key for dataverse_id, row_key in pairs}  # one operation per entity
        rows = [Operation("upsert", {"PartitionKey": template, "RowKey": dataverse_id, "key": row_key})
                for dataverse_id, row_key in by_id.items()]
        for start in range(0, len(rows), MAX_OPERATIONS):
            submit(self.table, rows[start:start + MAX_OPERATIONS])

    def key_of(self, template: str, dataverse_id: str) -> str | None:
        try:
            return str(self.table.get_entity(template, dataverse_id.lower())["key"])
        except ResourceNotFoundError:
            return None

    def forget(self, template: str, dataverse_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(template, dataverse_id.lower())


class TargetIds(DataverseIds):
    """F&O data events' ``Target.Id`` -> Commerce key (``<prefix>targetids``), filled from Created and Updated events:
    a Deleted data event names its record by that id alone (docs/protocol-notes.md §4.4). The same id -> row key index as
    ``DataverseIds``, in its own table."""
