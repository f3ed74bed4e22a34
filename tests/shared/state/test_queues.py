"""Group commit of callback work items: grouped only when they coincide, never acknowledged unwritten."""

from __future__ import annotations

import threading
import time

import pytest

from shared.messages.events import WorkItem, work_items
from shared.state.queues import GroupCommit


def item(n: int) -> WorkItem:
    return WorkItem(template="loyalty_cards", key={"CardNumber": f"C{n}"}, event_id=f"E{n}",
                    received_at="2026-11-23T00:00:00+00:00")


class BlockingQueue:
    """Records messages; the first write waits until released (a write in flight)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.release = threading.Event()
        self.first_started = threading.Event()

    def write(self, message: str) -> None:
        if not self.messages and not self.first_started.is_set():
            self.first_started.set()
            assert self.release.wait(5)
        self.messages.append(message)


def test_a_lone_callback_is_written_at_once_as_a_plain_item() -> None:
    queue = BlockingQueue()
    queue.release.set()
    GroupCommit(queue.write).send(item(1))
    assert [work_items(m) for m in queue.messages] == [[item(1)]]


def test_callbacks_arriving_during_a_write_go_out_together_in_the_next_message() -> None:
    queue = BlockingQueue()
    commit = GroupCommit(queue.write)
    first = threading.Thread(target=commit.send, args=(item(0),))
    first.start()
    assert queue.first_started.wait(5)
    others = [threading.Thread(target=commit.send, args=(item(n),)) for n in (1, 2, 3)]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # all three are waiting behind the write in flight
    assert queue.messages == []

    queue.release.set()
    for thread in [first, *others]:
        thread.join(5)

    assert work_items(queue.messages[0]) == [item(0)]
    assert sorted(i.event_id for i in work_items(queue.messages[1])) == ["E1", "E2", "E3"]
    assert len(queue.messages) == 2


def test_a_failed_write_fails_every_sender_of_its_message() -> None:
    def broken(message: str) -> None:
        raise ConnectionError("queue unreachable")

    with pytest.raises(ConnectionError):
        GroupCommit(broken).send(item(1))


def test_a_group_never_exceeds_the_message_size() -> None:
    queue = BlockingQueue()
    commit = GroupCommit(queue.write, max_bytes=600)
    first = threading.Thread(target=commit.send, args=(item(0),))
    first.start()
    assert queue.first_started.wait(5)
    others = [threading.Thread(target=commit.send, args=(item(n),)) for n in range(1, 7)]
    for thread in others:
        thread.start()
    time.sleep(0.2)
    queue.release.set()
    for thread in [first, *others]:
        thread.join(5)

    assert all(len(m) < 600 for m in queue.messages)
    assert sorted(i.event_id for m in queue.messages for i in work_items(m)) == [f"E{n}" for n in range(7)]
