"""Poison messages as the Functions host leaves them: the failed message's content, unchanged, on
``<queue>-poison`` (base64 text, the queue trigger's encoding)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy

from shared.state.queues import POISON_SUFFIX, CallbackQueues, QueueKind


def poison_as_host(queues: CallbackQueues, template: str, kind: QueueKind, body: dict[str, Any] | str) -> str:
    """Put a message on a template's poison queue as the host does after the last failed delivery; its id."""
    client = queues.service.get_queue_client(queues.name(template, kind) + POISON_SUFFIX,
                                             message_encode_policy=TextBase64EncodePolicy())
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    text = body if isinstance(body, str) else json.dumps(body)
    return str(client.send_message(text, time_to_live=-1).id)
