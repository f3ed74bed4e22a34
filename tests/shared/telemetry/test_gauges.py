"""The observable gauges: the storage sample the telemetry timer takes (backlog, parked, watermark age) and the
limiter's in-flight requests, read back as an exporter reads them (against Azurite and the emulators)."""

from __future__ import annotations

from shared.clock import SYSTEM_CLOCK
from shared.http.limiter import AdaptiveLimiter
from shared.messages.events import WorkItem
from shared.runtime import Runtime
from shared.sync import operations
from shared.sync.runs import DIRECTION_OUT
from shared.telemetry import metrics, sampling
from tests.clock import ManualClock
from tests.otel import Telemetry

BACKLOG, PARKED, AGE = "loyaltysync.backlog", "loyaltysync.parked", "loyaltysync.watermark.age"
IN_FLIGHT = "loyaltysync.limiter.in_flight"


def item(card: str) -> WorkItem:
    return WorkItem(template="loyalty_cards", key={"CardNumber": card}, event_id=f"E-{card}",
                    business_event_id="RetailLoyaltyCardChangedBusinessEvent",
                    received_at=SYSTEM_CLOCK.now().isoformat(), correlation_id="c-1")


def sample(runtime: Runtime) -> metrics.Snapshot:
    return sampling.sample(runtime.state, runtime.queues, [t.name for t in runtime.catalog])


def test_queued_work_items_are_reported_as_the_queued_backlog(runtime: Runtime, telemetry: Telemetry) -> None:
    runtime.queues.send(item("LC-1"))
    runtime.queues.send(item("LC-2"))
    sample(runtime)
    assert telemetry.value(BACKLOG, template="loyalty_cards", kind="queued", queue="callbacks") == 2


def test_messages_on_a_poison_queue_are_reported_as_the_poison_backlog(runtime: Runtime, telemetry: Telemetry) -> None:
    poison = runtime.queues.service.get_queue_client(runtime.queues.client("loyalty_cards", pages=True).queue_name
                                                     + "-poison")
    poison.create_queue()
    poison.send_message("a key-range task the host gave up on")
    sample(runtime)
    assert telemetry.value(BACKLOG, template="loyalty_cards", kind="poison") == 1
    assert telemetry.value(BACKLOG, template="loyalty_cards", kind="poison", queue="pages") == 1


def test_work_items_held_while_paused_are_reported_as_the_held_backlog(runtime: Runtime, telemetry: Telemetry) -> None:
    from shared.sync import worker

    operations.pause(runtime, "loyalty_cards", by="test")
    worker.process(runtime, item("LC-1"))
    sample(runtime)
    assert telemetry.value(BACKLOG, template="loyalty_cards", kind="held") == 1


def test_parked_records_are_reported_per_template(runtime: Runtime, telemetry: Telemetry) -> None:
    for key in ("LC-1", "LC-2", "LC-3"):
        runtime.state.parked.park("loyalty_cards", key, direction=DIRECTION_OUT, error_class="validation",
                                  error="refused", source="timer", correlation_id="c-1", payload=None)
    sample(runtime)
    assert telemetry.by(PARKED, "template") == {"loyalty_cards": 3}


def test_the_watermark_age_is_the_time_since_the_last_successful_run_started(runtime: Runtime,
                                                                              telemetry: Telemetry) -> None:
    clock = ManualClock()
    runtime.state.clock = clock
    runtime.scan("loyalty_cards").run()
    clock.advance(300)
    sample(runtime)
    assert telemetry.value(AGE, template="loyalty_cards", direction=DIRECTION_OUT, scope="all") == 300


def test_a_sample_older_than_its_freshness_is_not_reported(runtime: Runtime, telemetry: Telemetry) -> None:
    runtime.queues.send(item("LC-1"))
    sample(runtime)
    metrics.GAUGES.snapshot.taken_monotonic -= metrics.GAUGES.max_age_s + 1  # type: ignore[union-attr]
    assert telemetry.points(BACKLOG) == []


def test_the_limiter_gauge_reports_the_requests_in_flight(telemetry: Telemetry) -> None:
    limiter = AdaptiveLimiter(start=4, ceiling=8)
    metrics.watch_limiter("dataverse", limiter)
    limiter.acquire()
    limiter.acquire()
    assert telemetry.value(IN_FLIGHT, api="dataverse") == 2
    limiter.release()
    assert telemetry.value(IN_FLIGHT, api="dataverse") == 1
