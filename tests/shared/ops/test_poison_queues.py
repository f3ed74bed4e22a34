"""shared/state/queues.py against Azurite: poison queues counted, peeked at and requeued."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError

from devtools.azurite import Azurite
from shared.state.queues import POISON_SUFFIX, CallbackQueues, QueueKind
from tests.shared.ops.poison_queues import poison_as_host

TEMPLATE = "loyalty_cards"
WORK_ITEM = {"template": TEMPLATE, "key": {"CardNumber": "LC-<b>1</b>"}, "event_id": "E-1"}


@pytest.fixture()
def queues(azurite: Azurite) -> CallbackQueues:
    queues = CallbackQueues.from_settings(azurite.connection_string, None, "q" + uuid.uuid4().hex[:10])
    queues.ensure([TEMPLATE])
    return queues


def received(queues: CallbackQueues, kind: QueueKind) -> list[str]:
    """What the queue trigger would be handed from the template's queue (decoded as the host decodes it)."""
    client = queues.client(TEMPLATE, pages=kind == QueueKind.PAGES)
    return [str(m.content) for m in client.receive_messages(max_messages=32)]


def test_backlog_counts_each_queue_and_its_poison_queue(queues: CallbackQueues) -> None:
    queues.client(TEMPLATE).send_message("{}")
    poison_as_host(queues, TEMPLATE, QueueKind.PAGES, {"a": 1})
    poison_as_host(queues, TEMPLATE, QueueKind.PAGES, {"a": 2})
    assert queues.backlog(TEMPLATE) == {"callbacks": {"queued": 1, "poison": 0}, "pages": {"queued": 0, "poison": 2}}


def test_a_template_nothing_was_poisoned_for_counts_zero_and_lists_nothing(queues: CallbackQueues) -> None:
    assert queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS) == []
    assert queues.count(queues.name(TEMPLATE, QueueKind.CALLBACKS) + POISON_SUFFIX) == 0


def test_a_poison_message_is_read_decoded_with_its_insertion_time_and_dequeue_count(queues: CallbackQueues) -> None:
    message_id = poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, WORK_ITEM)
    [message] = queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS)
    assert (message.id, message.kind, message.queue) == (message_id, "callbacks", queues.name(TEMPLATE,
                                                                                              QueueKind.CALLBACKS))
    assert (message.body, message.encoding, message.dequeue_count) == (
        '{"template": "loyalty_cards", "key": {"CardNumber": "LC-<b>1</b>"}, "event_id": "E-1"}', "base64", 0)
    assert message.inserted_on.startswith("20")


def test_reading_poison_messages_takes_none_of_them(queues: CallbackQueues) -> None:
    poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, WORK_ITEM)
    queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS)
    [message] = queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS)
    assert message.dequeue_count == 0


def test_a_message_that_is_not_base64_is_shown_as_its_text(queues: CallbackQueues) -> None:
    client = queues.service.get_queue_client(queues.name(TEMPLATE, QueueKind.CALLBACKS) + POISON_SUFFIX)
    client.create_queue()
    client.send_message("plain {text}")
    [message] = queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS)
    assert (message.body, message.encoding) == ("plain {text}", "text")


def test_requeue_sends_the_message_back_to_its_queue_unchanged_and_removes_it_from_the_poison_queue(
        queues: CallbackQueues) -> None:
    message_id = poison_as_host(queues, TEMPLATE, QueueKind.PAGES, {"task": "range", "n": 7})
    [result] = queues.requeue_poison(TEMPLATE, QueueKind.PAGES, [message_id])
    assert (result.outcome, result.queue) == ("requeued", queues.name(TEMPLATE, QueueKind.PAGES))
    assert received(queues, QueueKind.PAGES) == ['{"task": "range", "n": 7}']
    assert queues.backlog(TEMPLATE)["pages"]["poison"] == 0


def test_requeueing_a_message_twice_sends_it_once(queues: CallbackQueues) -> None:
    message_id = poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, WORK_ITEM)
    queues.requeue_poison(TEMPLATE, QueueKind.CALLBACKS, [message_id])
    [again] = queues.requeue_poison(TEMPLATE, QueueKind.CALLBACKS, [message_id])
    assert again.outcome == "not_found"
    assert len(received(queues, QueueKind.CALLBACKS)) == 1


def test_a_failed_send_leaves_the_message_in_the_poison_queue_visible(queues: CallbackQueues) -> None:
    message_id = poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, WORK_ITEM)
    queues.client(TEMPLATE).delete_queue()  # the send back fails
    with pytest.raises(ResourceNotFoundError):
        queues.requeue_poison(TEMPLATE, QueueKind.CALLBACKS, [message_id])
    assert [m.id for m in queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS)] == [message_id]


def test_requeueing_named_messages_leaves_the_others_in_the_poison_queue_visible(queues: CallbackQueues) -> None:
    first = poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, {"n": 1})
    second = poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, {"n": 2})
    queues.requeue_poison(TEMPLATE, QueueKind.CALLBACKS, [second])
    assert [m.id for m in queues.peek_poison(TEMPLATE, QueueKind.CALLBACKS)] == [first]
    assert received(queues, QueueKind.CALLBACKS) == ['{"n": 2}']


def test_requeue_without_names_requeues_every_poison_message(queues: CallbackQueues) -> None:
    for n in range(40):  # more than one receive batch (32)
        poison_as_host(queues, TEMPLATE, QueueKind.CALLBACKS, {"n": n})
    results = queues.requeue_poison(TEMPLATE, QueueKind.CALLBACKS)
    assert [r.outcome for r in results] == ["requeued"] * 40
    assert queues.backlog(TEMPLATE)["callbacks"] == {"queued": 40, "poison": 0}


def test_requeue_from_a_poison_queue_never_created_finds_nothing(queues: CallbackQueues) -> None:
    assert queues.requeue_poison(TEMPLATE, QueueKind.PAGES) == []
    assert [r.outcome for r in queues.requeue_poison(TEMPLATE, QueueKind.PAGES, ["m-1"])] == ["not_found"]
