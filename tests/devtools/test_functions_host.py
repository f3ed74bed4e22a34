"""devtools/functions_host.py: the queue pump never hides a queue function that raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite
from devtools.functions_host import MAX_DEQUEUE_COUNT, QueueFunctionFailed, QueuePump
from shared.runtime import Runtime

NOT_A_WORK_ITEM = '{"template": "loyalty_cards"}'  # no key: the worker's validation raises on every delivery


@pytest.fixture()
def fast_pump(runtime: Runtime, azurite: Azurite) -> Iterator[QueuePump]:
    """A failed message is visible again after a second (the host's retry, quickly)."""
    import function_app

    pump = QueuePump(function_app.app, azurite.connection_string, visibility_timeout_s=1)
    yield pump
    pump.stop()


def test_drain_raises_when_a_queue_function_raises_naming_the_function_and_the_error(runtime: Runtime,
                                                                                     pump: QueuePump) -> None:
    runtime.queues.client("loyalty_cards").send_message(NOT_A_WORK_ITEM)
    with pytest.raises(QueueFunctionFailed, match=r"worker_loyalty_cards raised ValidationError") as caught:
        pump.drain()
    [failure] = caught.value.failures
    assert (failure.dequeue_count, failure.poisoned) == (1, False)


def test_with_failures_allowed_drain_retries_as_the_host_does_and_keeps_every_failure(runtime: Runtime,
                                                                                      fast_pump: QueuePump) -> None:
    runtime.queues.client("loyalty_cards").send_message(NOT_A_WORK_ITEM)
    assert fast_pump.drain(allow_failures=True) == 0
    assert [(f.function, f.dequeue_count) for f in fast_pump.failures] == [
        ("worker_loyalty_cards", n) for n in range(1, MAX_DEQUEUE_COUNT + 1)]
    assert [f.poisoned for f in fast_pump.failures] == [False] * (MAX_DEQUEUE_COUNT - 1) + [True]
