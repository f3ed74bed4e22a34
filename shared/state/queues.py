"""Azure Storage queues between the callback triggers and the queue-triggered workers.

Messages are base64-encoded text, the Functions queue trigger's default ``messageEncoding``, and never
expire (``time_to_live=-1``), so a paused template's backlog has no time limit.

Poison queues: the host moves a message whose function failed ``maxDequeueCount`` times (5) to
``<queue>-poison``, the callbacks queue's and the pages queue's of each template. ``CallbackQueues`` counts,
peeks at and requeues them (``PoisonMessage``, ``RequeueResult``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.messages import PageTask
from shared.messages.events import WorkItem

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


POISON_SUFFIX = "-poison"  # the Functions host's name for a queue's poison queue


class QueueKind(StrEnum):
    """A template's two queues: callback work items (the worker's) and key-range tasks (the page workers')."""

    CALLBACKS = "callbacks"
    PAGES = "pages"


PEEK_LIMIT = 32  # Storage returns at most 32 messages per peek; a peek takes nothing (no pop receipt)
REQUEUE_VISIBILITY_S = 60  # a poison message being requeued is hidden this long (then visible again if left)


@dataclass(frozen=True)
class PoisonMessage:
    """A message the host gave up on, as read from ``<queue>-poison`` without taking it (a peek)."""

    template: str
    kind: str  # QueueKind
    queue: str  # the queue it came from (and goes back to when requeued)
    id: str
    inserted_on: str  # ISO 8601, when the host put it on the poison queue
    dequeue_count: int  # deliveries from the poison queue (no function reads it: 0 unless a requeue passed it by)
    body: str  # the decoded text (a work item or a key-range task, JSON)
    encoding: str  # "base64" (as the queue trigger writes), or "text" when the content is not base64 text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequeueResult:
    """One poison message put back: ``requeued`` (sent to ``queue`` as ``new_id``, then removed from the poison
    queue) or ``not_found`` (not, or no longer, in the poison queue: nothing sent)."""

    template: str
    kind: str
    id: str
    outcome: str
    queue: str = ""
    new_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode_body(content: str) -> tuple[str, str]:
    """A queue message's text and its encoding: base64 of UTF-8 (the trigger's default), else the raw text."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8"), "base64"
    except (binascii.Error, ValueError):
        return content, "text"


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


# Every queue write is bounded: a callback is answered only after its message is written, and F&O waits 10 s
# for the answer (docs/protocol-notes.md §4.3). The SDK's defaults (retries 15 s apart and more, long socket timeouts)
# kept a callback waiting 83 s with the queue service down. Here: two attempts of at most 1.5 s to connect and
# 2.5 s to read, 0.5 s apart, so an answer (202, or 503 so that F&O retries) comes within 8.5 s at worst, and
# in milliseconds as usual (a queue write takes about 7 ms here).
def send_limits() -> dict[str, Any]:
    return {"retry_policy": LinearRetry(backoff=0.5, random_jitter_range=0, retry_total=1),  # type: ignore[arg-type]
            "connection_timeout": 1.5, "read_timeout": 2.5}


MAX_BATCH_BYTES = 45_000  # a queue message holds 64 KiB after base64: about 48,000 bytes of JSON


class GroupCommit:
    """Concurrent sends to one queue share messages: while one message is being written, callbacks that
    arrive wait and then go out together in the next one (a ``WorkBatch``). No timer and no added delay:
    alone, a callback is written at once; under load, the writes per second stay bounded by the queue's
    latency instead of growing with the callback rate. Each sender returns only after the message that
    holds its item is written, or raises the error that write raised: nothing is acknowledged unwritten.
    Hand-written: it is a dozen lines around one condition variable, and no queue SDK offers it."""

    def __init__(self, write: Callable[[str], None], *, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self._write = write
        self._max_bytes = max_bytes
        self._cond = threading.Condition()
        self._pending: list[_Waiter] = []
        self._flushing = False

    def send(self, item: WorkItem) -> None:
        waiter = _Waiter(item.model_dump_json())
        with self._cond:
            self._pending.append(waiter)
        while True:
            with self._cond:
                while not waiter.done and self._flushing:
                    self._cond.wait()
                if waiter.done:
                    break
                self._flushing = True
                batch: list[_Waiter] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0].payload) + 12 < self._max_bytes):
                    size += len(self._pending[0].payload) + 1
                    batch.append(self._pending.pop(0))
            error: BaseException | None = None
            try:
                payloads = [w.payload for w in batch]
                self._write(payloads[0] if len(payloads) == 1 else '{"items":[' + ",".join(payloads) + "]}")
            except BaseException as exc:  # handed to every sender of the batch
                error = exc
            with self._cond:
                for w in batch:
                    w.done, w.error = True, error
                self._flushing = False
                self._cond.notify_all()
        if waiter.error is not None:
            raise waiter.error


class _Waiter:
    __slots__ = ("done", "error", "payload")

    def __init__(self, payload: str) -> None:
        self.payload = payload
        self.done = False
        self.error: BaseException | None = None


class CallbackQueues:
    def __init__(self, service: QueueServiceClient, prefix: str) -> None:
        self.service = service
        self.prefix = prefix
        self._clients: dict[str, QueueClient] = {}
        self._commits: dict[str, GroupCommit] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, prefix: str,
                      credential: TokenCredential | None = None) -> CallbackQueues:
        if connection_string:
            service = QueueServiceClient.from_connection_string(connection_string, **send_limits())
        else:
            assert endpoint is not None and credential is not None
            service = QueueServiceClient(account_url=endpoint, credential=credential, **send_limits())
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
        """Queue a work item durably (grouped with concurrent ones into one message when they coincide)."""
        with self._lock:
            commit = self._commits.get(item.template)
            if commit is None:

                def write(message: str, template: str = item.template) -> None:
                    self.client(template).send_message(message, time_to_live=-1)

                commit = self._commits[item.template] = GroupCommit(write)
        commit.send(item)

    def refuse(self, template: str, kind: QueueKind, text: str) -> str:
        """Move a message its worker refused onto the queue's poison queue, its text unchanged (base64, as the host
        writes poison messages), so that an operator sees it (``poison list``) instead of its being lost or run as
        something else. Returns the poison queue's name."""
        name = self.name(template, kind) + POISON_SUFFIX
        client = self.service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        client.send_message(text, time_to_live=-1)
        return name

    def send_page(self, task: PageTask) -> None:
        self.client(task.template, pages=True).send_message(task.model_dump_json(), time_to_live=-1)

    # -- backlog and poison messages -------------------------------------------------------------------

    def name(self, template: str, kind: QueueKind) -> str:
        return pages_queue_name(self.prefix, template) if kind == QueueKind.PAGES else queue_name(self.prefix, template)

    def _raw(self, name: str) -> QueueClient:
        """A client that sends and reads content as it is (no base64 step): requeueing moves the bytes unchanged."""
        return self.service.get_queue_client(name)

    def count(self, name: str) -> int:
        """Messages in a queue (Storage's approximate count); 0 for a queue not created yet."""
        try:
            return int(self._raw(name).get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0

    def backlog(self, template: str) -> dict[str, dict[str, int]]:
        """``{"callbacks": {"queued": n, "poison": m}, "pages": {...}}``: what waits on each queue of a template."""
        return {kind.value: {"queued": self.count(self.name(template, kind)),
                             "poison": self.count(self.name(template, kind) + POISON_SUFFIX)} for kind in QueueKind}

    def peek_poison(self, template: str, kind: QueueKind) -> list[PoisonMessage]:
        """The first ``PEEK_LIMIT`` messages of a poison queue (oldest first), taking none of them."""
        source = self.name(template, kind)
        try:
            peeked = self._raw(source + POISON_SUFFIX).peek_messages(max_messages=PEEK_LIMIT)
        except ResourceNotFoundError:
            return []
        messages = []
        for m in peeked:
            body, encoding = decode_body(str(m.content))
            messages.append(PoisonMessage(template, kind.value, source, str(m.id), _iso(m.inserted_on),
                                          int(m.dequeue_count or 0), body, encoding))
        return messages

    def requeue_poison(self, template: str, kind: QueueKind, ids: Iterable[str] | None = None) -> list[RequeueResult]:
        """Put poison messages back on the queue they came from: all of them (``ids`` None) or those named.

        Each message is received (hidden for ``REQUEUE_VISIBILITY_S``), sent to its queue with its content
        unchanged, and deleted from the poison queue only once that send succeeded: a failed send raises and
        leaves it in the poison queue (visible again after the hiding). A message named but not (or no longer)
        there is ``not_found``, nothing is sent: requeueing twice sends once. Messages passed by while looking
        for named ones are made visible again at once. The workers take a message twice without harm (event ids,
        key ranges done), should a crash come between the send and the delete."""
        source = self.name(template, kind)
        poison, target = self._raw(source + POISON_SUFFIX), self._raw(source)
        wanted = None if ids is None else list(dict.fromkeys(ids))
        results: list[RequeueResult] = []
        passed: list[Any] = []  # received but not requeued: made visible again at the end
        done: set[str] = set()
        try:
            while wanted is None or len(done) < len(wanted):
                try:
                    batch = list(poison.receive_messages(max_messages=PEEK_LIMIT,
                                                         visibility_timeout=REQUEUE_VISIBILITY_S))
                except ResourceNotFoundError:
                    break  # no poison queue: nothing was ever poisoned
                if not batch:
                    break
                for message in batch:
                    if wanted is not None and message.id not in wanted:
                        passed.append(message)
                        continue
                    try:
                        sent = target.send_message(message.content, time_to_live=-1)
                    except BaseException:
                        passed.append(message)  # stays in the poison queue, visible again
                        raise
                    poison.delete_message(message.id, message.pop_receipt)
                    done.add(str(message.id))
                    results.append(RequeueResult(template, kind.value, str(message.id), "requeued", source,
                                                 str(sent.id)))
        finally:
            for message in passed:
                with contextlib.suppress(ResourceNotFoundError):
                    poison.update_message(message.id, message.pop_receipt, visibility_timeout=0)
        missing = [i for i in (wanted or []) if i not in done]
        return results + [RequeueResult(template, kind.value, i, "not_found") for i in missing]
