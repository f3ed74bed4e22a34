"""Azure Storage queues between the callback triggers and the queue-triggered workers.

Messages are base64-encoded text, the Functions queue trigger's default ``messageEncoding``, and never
expire (``time_to_live=-1``), so a paused template's backlog has no time limit.
"""

from __future__ import annotations

import contextlib
import threading

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.sync.events import WorkItem
from shared.sync.paged import PageTask

QUEUE_PREFIX_SETTING = "SYNC_QUEUE_PREFIX"


def queue_name(prefix: str, template: str) -> str:
    """``loyaltysync-loyalty-cards``: queue names allow lower-case letters, digits and single hyphens."""
    name = f"{prefix}-{template.replace('_', '-')}"
    if len(name) > 63:
        raise ValueError(f"queue name {name!r} is longer than 63 characters")
    return name


def binding_queue_name(template: str) -> str:
    """The same name as an app-setting binding expression, for the queue trigger's decorator."""
    return f"%{QUEUE_PREFIX_SETTING}%-{template.replace('_', '-')}"


def pages_queue_name(prefix: str, template: str) -> str:
    """``loyaltysync-pages-loyalty-cards``: the key ranges of fanned-out full scans."""
    return queue_name(f"{prefix}-pages", template)


def pages_binding_queue_name(template: str) -> str:
    return f"%{QUEUE_PREFIX_SETTING}%-pages-{template.replace('_', '-')}"


class CallbackQueues:
    def __init__(self, service: QueueServiceClient, prefix: str) -> None:
        self.service = service
        self.prefix = prefix
        self._clients: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, prefix: str,
                      credential: TokenCredential | None = None) -> CallbackQueues:
        if connection_string:
            service = QueueServiceClient.from_connection_string(connection_string)
        else:
            assert endpoint is not None and credential is not None
            service = QueueServiceClient(account_url=endpoint, credential=credential)
        return cls(service, prefix)

    def client(self, template: str, *, pages: bool = False) -> QueueClient:
        name = pages_queue_name(self.prefix, template) if pages else queue_name(self.prefix, template)
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self.service.get_queue_client(
                    name,
                    message_encode_policy=TextBase64EncodePolicy(),
                    message_decode_policy=TextBase64DecodePolicy(),
                )
                self._clients[name] = client
            return client

    def ensure(self, templates: list[str]) -> None:
        for template in templates:
            for pages in (False, True):
                with contextlib.suppress(ResourceExistsError):
                    self.client(template, pages=pages).create_queue()

    def send(self, item: WorkItem) -> None:
        self.client(item.template).send_message(item.model_dump_json(), time_to_live=-1)

    def send_page(self, task: PageTask) -> None:
        self.client(task.template, pages=True).send_message(task.model_dump_json(), time_to_live=-1)
