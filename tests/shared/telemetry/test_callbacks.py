"""Callback metrics and spans, through the real callback trigger (``function_app``) and queue worker against the
emulators and Azurite: ``loyaltysync.callbacks``, ``loyaltysync.callback.ack_latency``, ``loyaltysync.lag`` and
the ``sync.callback`` span."""

from __future__ import annotations

import json
from datetime import timedelta

import azure.functions as func

from devtools.functions_host import QueuePump, invoke_http
from shared.messages.events import wcf_date
from shared.runtime import Runtime
from shared.sync.runs import DIRECTION_OUT
from tests.builders import as_body, business_event
from tests.clock import ManualClock
from tests.data_events import data_event, webhook_request
from tests.e2e.stores import Stores
from tests.otel import Telemetry

LATENCY, CALLBACKS, LAG = "loyaltysync.callback.ack_latency", "loyaltysync.callbacks", "loyaltysync.lag"


def post(body: bytes, template: str = "loyalty_cards") -> tuple[int, dict[str, object]]:
    import function_app

    request = func.HttpRequest("POST", f"http://localhost/api/callbacks/{template}", body=body,
                               headers={"Content-Type": "application/json"})
    response = invoke_http(function_app.app, f"callback_{template}", request)
    return response.status_code, json.loads(response.get_body())


def first_card(stores: Stores) -> str:
    return str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])


def test_a_queued_business_event_is_counted_accepted(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    assert post(as_body(business_event(CardNumber=first_card(stores))))[0] == 202
    assert telemetry.callbacks("loyalty_cards") == {"accepted": 1}


def test_the_acknowledgement_latency_is_recorded_by_kind_and_result(runtime: Runtime, stores: Stores,
                                                                     telemetry: Telemetry) -> None:
    post(as_body(business_event(CardNumber=first_card(stores))))
    [point] = telemetry.points(LATENCY)
    assert dict(point.attributes) == {"template": "loyalty_cards", "kind": "business_event", "result": "accepted"}
    assert point.count == 1 and 0 < point.sum < 10_000  # milliseconds, well inside F&O's 10 s


def test_a_data_event_is_measured_as_a_data_event(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    import function_app

    event = data_event(attributes={"mserp_cardnumber": first_card(stores)})
    invoke_http(function_app.app, "callback_loyalty_cards", webhook_request("loyalty_cards", as_body(event)))
    assert telemetry.count(LATENCY, kind="data_event", result="accepted") == 1


def test_an_event_naming_no_record_is_counted_ignored(runtime: Runtime, telemetry: Telemetry) -> None:
    post(as_body(business_event(BusinessEventId="SalesInvoicePostedBusinessEvent", InvoiceId="INV-1")))
    assert telemetry.callbacks("loyalty_cards") == {"ignored": 1}


def test_a_body_that_is_not_json_is_counted_rejected_of_unknown_kind(runtime: Runtime, telemetry: Telemetry) -> None:
    assert post(b"{not json")[0] == 400
    assert telemetry.callbacks("loyalty_cards") == {"rejected": 1}
    assert telemetry.count(LATENCY, kind="unknown", result="rejected") == 1


def test_a_callback_that_cannot_be_queued_is_counted_failed(runtime: Runtime, stores: Stores, telemetry: Telemetry,
                                                            monkeypatch: object) -> None:
    from azure.core.exceptions import ServiceRequestError

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ServiceRequestError("connection refused")

    monkeypatch.setattr(runtime.queues, "send", refuse)  # type: ignore[attr-defined]
    assert post(as_body(business_event(CardNumber=first_card(stores))))[0] == 503
    assert telemetry.callbacks("loyalty_cards") == {"failed": 1}


def test_an_event_delivered_twice_is_counted_duplicate_when_the_worker_drops_it(
        runtime: Runtime, stores: Stores, pump: QueuePump, telemetry: Telemetry) -> None:
    body = as_body(business_event(CardNumber=first_card(stores)))
    post(body)
    assert pump.drain() == 1
    post(body)
    assert pump.drain() == 1
    assert telemetry.callbacks("loyalty_cards") == {"accepted": 2, "duplicate": 1}


def test_the_lag_runs_from_the_event_time_to_the_record_written(runtime: Runtime, stores: Stores, pump: QueuePump,
                                                                telemetry: Telemetry) -> None:
    event = business_event(CardNumber=first_card(stores), EventTime="/Date(1672408275000)/")
    runtime.state.clock = ManualClock(wcf_date(event["EventTime"]) + timedelta(seconds=42))
    post(as_body(event))
    assert pump.drain() == 1
    assert telemetry.count(LAG, template="loyalty_cards", direction=DIRECTION_OUT) == 1
    assert telemetry.value(LAG, template="loyalty_cards", direction=DIRECTION_OUT) == 42


def test_the_lag_of_a_data_event_runs_from_its_operation_created_on(runtime: Runtime, stores: Stores, pump: QueuePump,
                                                                    telemetry: Telemetry) -> None:
    import function_app

    event = data_event(attributes={"mserp_cardnumber": first_card(stores)}, created_on="/Date(1784051293000+0000)/")
    runtime.state.clock = ManualClock(wcf_date("/Date(1784051293000+0000)/") + timedelta(seconds=7))
    invoke_http(function_app.app, "callback_loyalty_cards", webhook_request("loyalty_cards", as_body(event)))
    assert pump.drain() == 1
    assert telemetry.value(LAG, template="loyalty_cards") == 7


def test_an_unchanged_record_has_no_lag(runtime: Runtime, stores: Stores, pump: QueuePump,
                                        telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    post(as_body(business_event(CardNumber=first_card(stores))))
    assert pump.drain() == 1
    assert telemetry.work_items("loyalty_cards") == {"unchanged": 1}
    assert telemetry.count(LAG) == 0


def test_a_callback_is_one_span_carrying_its_correlation_id_and_result(runtime: Runtime, stores: Stores,
                                                                        telemetry: Telemetry) -> None:
    _, body = post(as_body(business_event(CardNumber=first_card(stores))))
    [span] = telemetry.spans("sync.callback")
    assert span.attributes is not None
    assert dict(span.attributes) == {"correlation_id": body["correlation_id"], "template": "loyalty_cards",
                                     "kind": "business_event", "result": "accepted", "status_code": 202}
