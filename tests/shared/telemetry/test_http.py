"""HTTP metrics from the one HTTP core, against the emulators: every response per API and status code, 429s,
and the time waited before a retry (``Retry-After``)."""

from __future__ import annotations

import requests

from shared.runtime import Runtime
from tests.e2e.stores import Stores
from tests.otel import Telemetry

REQUESTS, THROTTLED, RETRY_WAIT = "loyaltysync.http.requests", "loyaltysync.http.throttled", "loyaltysync.http.retry_wait"


def commerce_faults(stores: Stores, *rules: dict[str, object]) -> None:
    requests.post(f"{stores.commerce_url}/_emulator/faults", json={"rules": list(rules)}, timeout=10).raise_for_status()


def card_path(stores: Stores) -> tuple[str, dict[str, str]]:
    return "RetailLoyaltyCards", {"CardNumber": str(stores.commerce_rows("loyalty_cards")[0]["CardNumber"])}


def test_every_response_is_counted_per_api_and_status_code(runtime: Runtime, stores: Stores,
                                                           telemetry: Telemetry) -> None:
    runtime.scan("loyalty_cards").run()
    fo = runtime.outbound("loyalty_cards").commerce.core.requests_sent
    dv = runtime.outbound("loyalty_cards").dataverse.core.requests_sent
    assert telemetry.value(REQUESTS, api="commerce") == fo
    assert telemetry.value(REQUESTS, api="dataverse") == dv
    assert set(telemetry.by(REQUESTS, "status_code", api="commerce")) <= {"200", "204"}


def test_a_429_is_counted_throttled_and_its_retry_after_is_the_wait(runtime: Runtime, stores: Stores,
                                                                    telemetry: Telemetry) -> None:
    commerce_faults(stores, {"route": "odata.resource", "method": "GET", "kind": "status", "status": 429,
                             "retry_after": 1, "times": 1})
    entity_set, key = card_path(stores)
    assert runtime.outbound("loyalty_cards").commerce.get(entity_set, key) is not None
    assert telemetry.by(REQUESTS, "status_code", api="commerce")["429"] == 1
    assert telemetry.value(THROTTLED, api="commerce") == 1
    assert (telemetry.count(RETRY_WAIT, api="commerce"), telemetry.value(RETRY_WAIT, api="commerce")) == (1, 1.0)


def test_a_503_is_retried_without_counting_as_throttled(runtime: Runtime, stores: Stores, telemetry: Telemetry) -> None:
    commerce_faults(stores, {"route": "odata.resource", "method": "GET", "kind": "status", "status": 503, "times": 1})
    entity_set, key = card_path(stores)
    runtime.outbound("loyalty_cards").commerce.get(entity_set, key)
    assert telemetry.by(REQUESTS, "status_code", api="commerce")["503"] == 1
    assert telemetry.value(THROTTLED) == 0
    assert telemetry.count(RETRY_WAIT, api="commerce") == 1
