"""The callback side's state: processed event ids (``<prefix>events``), pause flags (``<prefix>control``), and
work items held while a template is paused (``<prefix>held``). Callback counts are metrics, not rows
(``loyaltysync.callbacks``, ``loyaltysync.records``: shared/telemetry/metrics.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.clock import Clock
from shared.state.keys import MAX_TEXT, encode_key


class CallbackState:
    def __init__(self, events: TableClient, control: TableClient, held: TableClient, clock: Clock) -> None:
        self.events_table = events
        self.control_table = control
        self.held_table = held
        self.clock = clock

    def event_applied(self, template: str, event_id: str) -> bool:
        """True when an event with this id was processed before (a duplicate delivery)."""
        try:
            self.events_table.get_entity(template, encode_key((event_id,)))
        except ResourceNotFoundError:
            return False
        return True

    def remember_event(self, template: str, event_id: str, outcome: str) -> None:
        """Record a processed event id, after the work is done (a crash before this replays the event)."""
        self.events_table.upsert_entity({"PartitionKey": template, "RowKey": encode_key((event_id,)),
                                   "processed_at": self.clock.now().isoformat(), "outcome": outcome}, mode=UpdateMode.REPLACE)

    def set_paused(self, template: str, paused: bool, *, by: str, reason: str = "") -> None:
        """``reason``: why (an auto-pause records its count and last error; an operator may give one)."""
        self.control_table.upsert_entity({"PartitionKey": "pause", "RowKey": template, "paused": paused,
                                          "changed_at": self.clock.now().isoformat(), "changed_by": by,
                                          "reason": reason}, mode=UpdateMode.REPLACE)

    def is_paused(self, template: str) -> bool:
        try:
            return bool(self.control_table.get_entity("pause", template).get("paused", False))
        except ResourceNotFoundError:
            return False

    def pause_record(self, template: str) -> dict[str, Any] | None:
        """The pause flag as the last ``pause``/``resume`` left it: ``paused``, ``changed_by``, ``changed_at``, ``reason``."""
        try:
            entity = self.control_table.get_entity("pause", template)
        except ResourceNotFoundError:
            return None
        return {"paused": bool(entity.get("paused", False)), "changed_by": str(entity.get("changed_by", "")),
                "changed_at": str(entity.get("changed_at", "")), "reason": str(entity.get("reason", ""))}

    def hold(self, template: str, order_key: str, message: str) -> None:
        """Keep a work item that arrived while its template is paused (no time limit)."""
        self.held_table.upsert_entity({"PartitionKey": template, "RowKey": order_key, "message": message[:MAX_TEXT]},
                                mode=UpdateMode.REPLACE)

    def held_items(self, template: str) -> Iterator[tuple[str, str]]:
        """Held work items in arrival order (RowKey order)."""
        for e in self.held_table.query_entities("PartitionKey eq @pk", parameters={"pk": template}):
            yield e["RowKey"], e["message"]

    def release_held(self, template: str, order_key: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.held_table.delete_entity(template, order_key)
