"""Message models: business-event payloads, callback work items and scan tasks. The lowest layer: the state
layer (queues) and the sync layer import it; it imports neither (pydantic and the standard library only)."""

from shared.messages.events import BusinessEvent, WorkBatch, WorkItem, work_items
from shared.messages.pages import PageTask

__all__ = ["BusinessEvent", "PageTask", "WorkBatch", "WorkItem", "work_items"]
