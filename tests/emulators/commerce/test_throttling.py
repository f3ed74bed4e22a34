"""F&O throttling on the Commerce emulator (docs/protocol-notes.md §3.5): user-based limits and
throttling faults, with the exact documented messages (Microsoft's typos included)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from emulators.commerce.server import CommerceEmulator, start_commerce
from emulators.common.throttling import ServiceProtection

Start = Callable[..., CommerceEmulator]
AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture()
def start() -> Iterator[Start]:
    started: list[CommerceEmulator] = []

    def _start(protection: ServiceProtection | None = None) -> CommerceEmulator:
        emu = start_commerce(cards=3, reward_points=2, levels_per_company=1, service_protection=protection)
        started.append(emu)
        return emu

    yield _start
    for emu in started:
        emu.stop()


def get(emu: CommerceEmulator, token: str = "test-token") -> requests.Response:
    return requests.get(f"{emu.url}/data/RetailLoyaltyCards", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def error(response: requests.Response) -> dict[str, str]:
    return dict(response.json()["error"])


def test_throttling_is_off_by_default(start: Start) -> None:
    emu = start()
    assert all(get(emu).status_code == 200 for _ in range(5))
    assert requests.get(f"{emu.url}/_emulator/service-protection", timeout=5).json()["enabled"] is False


def test_request_limit_answers_429_with_the_documented_message_and_retry_after(start: Start) -> None:
    emu = start(ServiceProtection(max_requests=2))
    assert [get(emu).status_code for _ in range(2)] == [200, 200]
    response = get(emu)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert error(response) == {
        "code": "",
        "message": "Number of requests exeeded the limit of 2 over the time window of 300 seconds.",
    }


def test_request_limit_is_per_user(start: Start) -> None:
    emu = start(ServiceProtection(max_requests=1))
    get(emu, "app-a")
    assert get(emu, "app-a").status_code == 429
    assert get(emu, "app-b").status_code == 200


def test_execution_time_limit_answers_the_documented_message(start: Start) -> None:
    emu = start(ServiceProtection(max_execution_s=0.05, server_ms_per_request=60))
    assert get(emu).status_code == 200
    response = get(emu)
    assert response.status_code == 429
    assert error(response)["message"] == (
        "Combined execution time of incoming requests exceeded limit of 0.05 seconds over time window of 300 seconds. "
        "Decrease number of concurrent requests or reduce the duration of requests and try again later."
    )


def test_concurrency_limit_answers_the_documented_message(start: Start) -> None:
    emu = start(ServiceProtection(max_concurrent=1, server_ms_per_request=400))
    slow = threading.Thread(target=lambda: get(emu))
    slow.start()
    time.sleep(0.1)
    response = get(emu)
    slow.join()
    assert response.status_code == 429
    assert error(response)["message"] == "Number of concurrent requests exceeded the limit of 1."


def test_admin_routes_are_not_throttled(start: Start) -> None:
    emu = start(ServiceProtection(max_requests=1))
    get(emu)
    assert requests.get(f"{emu.url}/_emulator/info", timeout=5).status_code == 200


def test_fault_429_defaults_to_the_request_limit_message_with_documented_numbers(start: Start) -> None:
    emu = start()
    emu.faults.add(route="odata.resource", kind="status", status=429, retry_after=3)
    response = get(emu)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "3")
    assert error(response)["message"] == "Number of requests exeeded the limit of 6000 over the time window of 300 seconds."


def test_fault_429_resource_reason_answers_the_resource_based_message(start: Start) -> None:
    emu = start()
    requests.post(
        f"{emu.url}/_emulator/faults", json={"rules": [{"kind": "status", "status": 429, "reason": "resource"}]}, timeout=5
    ).raise_for_status()
    assert error(get(emu))["message"] == (
        "This request could not be processed at this time due to system experiencing high resource utilization."
    )


def test_fault_500_answers_the_generic_fo_error(start: Start) -> None:
    emu = start()
    emu.faults.add(kind="status", status=500, method="POST")
    response = requests.post(f"{emu.url}/data/RetailLoyaltyCards", json={}, headers=AUTH, timeout=5)
    assert (response.status_code, error(response)["message"]) == (500, "An error has occurred.")
    assert get(emu).status_code == 200
