"""Dataverse service protection limits over real HTTP (docs/protocol-notes.md §2.12), with limits and
windows scaled down for tests."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from emulators.common.throttling import ServiceProtection
from emulators.dataverse.server import DataverseServer, start_dataverse
from tests.emulators.dataverse.support import CARD_TYPE, Api, batch_body, card, http_part

Start = Callable[..., DataverseServer]


@pytest.fixture()
def start() -> Iterator[Start]:
    started: list[DataverseServer] = []

    def _start(**config: object) -> DataverseServer:
        emu = start_dataverse(port=0, service_protection=ServiceProtection(**config))  # type: ignore[arg-type]
        started.append(emu)
        return emu

    yield _start
    for emu in started:
        emu.stop()


def admin(emu: DataverseServer) -> dict[str, object]:
    return dict(requests.get(f"{emu.url}/_emulator/service-protection", timeout=5).json())


def whoami(api: Api) -> requests.Response:
    return api.get("WhoAmI")


def test_service_protection_is_off_by_default() -> None:
    emu = start_dataverse(port=0)
    try:
        response = Api(emu).get("msdyn_loyaltycards")
        assert "x-ms-ratelimit-burst-remaining-xrm-requests" not in response.headers
        assert admin(emu) == {"enabled": False, "config": None}
    finally:
        emu.stop()


def test_responses_carry_rate_limit_and_dop_hint_headers(start: Start) -> None:
    api = Api(start(max_requests=5, max_execution_s=1200.0))
    first, second = api.get("msdyn_loyaltycards"), api.get("msdyn_loyaltycards")
    assert first.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "4"
    assert second.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "3"
    assert first.headers["x-ms-ratelimit-time-remaining-xrm-requests"] == "1,200.00"
    assert first.headers["x-ms-dop-hint"] == "4"


def test_time_remaining_is_sent_in_the_live_format_and_falls_as_execution_time_is_spent(start: Start) -> None:
    api = Api(start(max_requests=None, max_execution_s=1200.0, server_ms_per_request=30))
    values = [whoami(api).headers["x-ms-ratelimit-time-remaining-xrm-requests"] for _ in range(3)]
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", value) for value in values)  # e.g. 1,199.97 (§2.12)
    seconds = [float(value.replace(",", "")) for value in values]
    assert seconds[0] == 1200.0 and seconds[0] > seconds[1] > seconds[2] >= 1200.0 - 0.5


def test_request_limit_answers_429_0x80072322_with_integer_retry_after(start: Start) -> None:
    api = Api(start(max_requests=2, window_s=2))
    assert [whoami(api).status_code for _ in range(2)] == [200, 200]
    response = whoami(api)
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert response.json() == {
        "error": {"code": "0x80072322", "message": "Number of requests exceeded the limit of 2 over time window of 2 seconds."}
    }
    assert 1 <= int(response.headers["Retry-After"]) <= 2


def test_limits_apply_per_bearer_token(start: Start) -> None:
    emu = start(max_requests=1)
    assert whoami(Api(emu, "alice")).status_code == 200
    assert whoami(Api(emu, "alice")).status_code == 429
    assert whoami(Api(emu, "bob")).status_code == 200


def test_retry_after_grows_when_the_client_keeps_sending(start: Start) -> None:
    api = Api(start(max_requests=1, window_s=2))
    whoami(api)
    first = int(whoami(api).headers["Retry-After"])
    second = int(whoami(api).headers["Retry-After"])
    assert second > first


def test_client_that_waits_retry_after_is_admitted_again(start: Start) -> None:
    api = Api(start(max_requests=1, window_s=1))
    whoami(api)
    throttled = whoami(api)
    time.sleep(int(throttled.headers["Retry-After"]) + 0.05)
    assert whoami(api).status_code == 200


def test_throttled_write_is_not_executed(start: Start) -> None:
    emu = start(max_requests=1)
    api = Api(emu)
    whoami(api)
    assert api.post("msdyn_loyaltycards", card("T-1")).status_code == 429
    assert api.rows() == []


def test_execution_time_limit_is_enforced_after_the_fact_with_0x80072321(start: Start) -> None:
    api = Api(start(max_requests=None, max_execution_s=0.1, server_ms_per_request=60))
    assert [whoami(api).status_code for _ in range(2)] == [200, 200]  # 120 ms: over budget afterwards
    response = whoami(api)
    assert response.status_code == 429
    assert response.json()["error"] == {
        "code": "0x80072321",
        "message": "Combined execution time of incoming requests exceeded limit of 100 milliseconds over time window "
        "of 300 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
    }


def test_concurrent_requests_over_the_limit_are_refused_immediately_with_0x80072326(start: Start) -> None:
    emu = start(max_concurrent=1, server_ms_per_request=2000)
    slow = threading.Thread(target=lambda: whoami(Api(emu)))
    slow.start()
    time.sleep(0.3)
    began = time.monotonic()
    response = whoami(Api(emu))
    elapsed = time.monotonic() - began
    slow.join()
    assert response.status_code == 429
    assert response.json()["error"] == {"code": "0x80072326", "message": "Number of concurrent requests exceeded the limit of 1."}
    assert elapsed < 1.5  # not after the slow one (2 s)


def test_server_time_per_record_is_slept_and_counted_for_bulk_targets(start: Start) -> None:
    emu = start(server_ms_per_record=20)
    began = time.monotonic()
    response = Api(emu).bulk("CreateMultiple", [{"@odata.type": CARD_TYPE, **card(f"B-{i}")} for i in range(10)])
    assert response.status_code == 200
    assert time.monotonic() - began >= 0.2
    state = admin(emu)
    assert (state["requests"], state["records_written"]) == (1, 10)
    assert float(state["execution_s"]) >= 0.2  # type: ignore[arg-type]


def test_batch_is_one_request_but_each_inner_write_is_a_record(start: Start) -> None:
    emu = start(max_requests=1)
    api = Api(emu)
    body = batch_body(*[http_part("POST", "/api/data/v9.2/msdyn_loyaltycards", card(f"C-{i}")) for i in range(3)])
    assert api.batch(body).status_code == 200
    state = admin(emu)
    assert (state["requests"], state["records_written"]) == (1, 3)
    assert whoami(api).status_code == 429


def test_admin_counters_report_429s_by_code(start: Start) -> None:
    emu = start(max_requests=1)
    api = Api(emu)
    for _ in range(3):
        whoami(api)
    state = admin(emu)
    assert (state["requests"], state["throttled_by_code"]) == (1, {"0x80072322": 2})


def test_admin_post_turns_protection_on_and_delete_turns_it_off() -> None:
    emu = start_dataverse(port=0)
    try:
        api = Api(emu)
        on = requests.post(f"{emu.url}/_emulator/service-protection", json={"max_requests": 1}, timeout=5)
        assert on.json()["config"]["max_requests"] == 1
        whoami(api)
        assert whoami(api).status_code == 429
        assert requests.delete(f"{emu.url}/_emulator/service-protection", timeout=5).status_code == 204
        assert whoami(api).status_code == 200
    finally:
        emu.stop()


def test_admin_reset_forgets_the_windows(start: Start) -> None:
    emu = start(max_requests=1)
    api = Api(emu)
    whoami(api)
    assert requests.post(f"{emu.url}/_emulator/service-protection/reset", timeout=5).status_code == 204
    assert whoami(api).status_code == 200


def test_per_request_accounting_does_not_leak_across_a_keep_alive_connection(start: Start) -> None:
    emu = start(server_ms_per_record=100)
    api = Api(emu)  # one requests.Session: both requests share a connection
    api.bulk("CreateMultiple", [{"@odata.type": CARD_TYPE, **card(f"K-{i}")} for i in range(2)])
    began = time.monotonic()
    assert whoami(api).status_code == 200
    assert time.monotonic() - began < 0.1
    assert admin(emu)["records_written"] == 2
