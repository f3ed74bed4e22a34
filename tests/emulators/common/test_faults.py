"""Fault injection (emulators.common.faults) on the common server base: rule semantics,
the three HTTP kinds and the /_emulator/faults admin API."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from emulators.common.faults import FaultRuleError, FaultSet
from emulators.common.server import EmulatorRequestHandler, EmulatorServer, Route


class CountingHandler(EmulatorRequestHandler):
    calls = 0

    def hello(self, match: re.Match[str]) -> None:
        type(self).calls += 1
        self.send_json(200, {"hello": match.group("name")})

    routes = [Route.make(("GET", "POST"), r"/hello/(?P<name>\w+)", "hello", hello)]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(CountingHandler, 0) as srv:
        yield srv


@pytest.fixture(autouse=True)
def clean(server: EmulatorServer) -> None:
    server.faults.clear()
    CountingHandler.calls = 0


def get(server: EmulatorServer, name: str = "x", timeout: float = 5) -> requests.Response:
    return requests.get(f"{server.url}/hello/{name}", timeout=timeout)


# -- rule semantics (no HTTP) -------------------------------------------------------------


def test_nth_fires_only_on_that_matching_call() -> None:
    faults = FaultSet()
    faults.add(kind="status", nth=3)
    assert [faults.pick("r", "/p", "GET") is not None for _ in range(5)] == [False, False, True, False, False]


def test_every_fires_on_each_multiple_until_times_is_used_up() -> None:
    faults = FaultSet()
    faults.add(kind="status", every=2, times=2)
    assert [faults.pick("r", "/p", "GET") is not None for _ in range(8)] == [False, True, False, True] + [False] * 4


def test_probability_with_a_seed_is_reproducible() -> None:
    def pattern() -> list[bool]:
        faults = FaultSet()
        faults.add(kind="status", probability=0.5, seed=7)
        return [faults.pick("r", "/p", "GET") is not None for _ in range(30)]

    first = pattern()
    assert first == pattern()
    assert 0 < sum(first) < 30


def test_route_matches_by_name_or_by_regex_on_the_path_and_method_filters() -> None:
    faults = FaultSet()
    faults.add(kind="status", route="resource", method="PATCH")
    faults.add(kind="drop", route=r"UpsertMultiple$")
    assert faults.pick("resource", "/api/x", "GET") is None
    assert faults.pick("resource", "/api/x", "PATCH").kind == "status"  # type: ignore[union-attr]
    assert faults.pick("bulk", "/api/data/v9.2/s/Microsoft.Dynamics.CRM.UpsertMultiple", "POST").kind == "drop"  # type: ignore[union-attr]


def test_first_firing_rule_wins_and_fired_counts_by_kind() -> None:
    faults = FaultSet()
    faults.add(kind="status", status=503)
    faults.add(kind="drop")
    assert faults.pick("r", "/p", "GET").status == 503  # type: ignore[union-attr]
    assert faults.fired() == {"batch_partial": 0, "delay": 0, "drop": 0, "status": 1}


def test_batch_partial_rules_are_ignored_by_the_http_dispatch() -> None:
    faults = FaultSet()
    faults.add(kind="batch_partial", operation=2)
    assert faults.pick("$batch", "/api/data/v9.2/$batch", "POST") is None


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "explode"},
        {"kind": "status", "nth": 2, "every": 3},
        {"kind": "status", "probability": 1.5},
        {"kind": "status", "colour": "red"},
        {"kind": "status", "after": True},
        {"kind": "status", "route": "("},
    ],
)
def test_invalid_rules_are_rejected(rule: dict[str, object]) -> None:
    with pytest.raises(FaultRuleError):
        FaultSet().add(rule)


# -- HTTP kinds ---------------------------------------------------------------------------


def test_status_rule_answers_the_status_with_retry_after(server: EmulatorServer) -> None:
    server.faults.add(route="hello", kind="status", status=503, retry_after=2)
    response = get(server)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert CountingHandler.calls == 0


def test_status_rule_without_retry_after_sends_no_header(server: EmulatorServer) -> None:
    server.faults.add(kind="status", status=429)
    assert "Retry-After" not in get(server).headers


def test_delay_rule_makes_the_client_time_out(server: EmulatorServer) -> None:
    server.faults.add(kind="delay", delay_s=0.6, times=1)
    with pytest.raises(requests.ReadTimeout):
        get(server, timeout=0.2)
    assert get(server).status_code == 200


def test_delay_after_processing_applies_the_request_before_the_timeout(server: EmulatorServer) -> None:
    server.faults.add(kind="delay", delay_s=0.6, after=True, times=1)
    with pytest.raises(requests.ReadTimeout):
        get(server, timeout=0.2)
    assert CountingHandler.calls == 1


def test_drop_rule_closes_the_connection_without_a_response(server: EmulatorServer) -> None:
    server.faults.add(kind="drop", times=1)
    with pytest.raises(requests.ConnectionError):
        get(server)
    assert CountingHandler.calls == 0
    assert get(server).status_code == 200


def test_drop_after_processing_loses_the_response_of_a_completed_request(server: EmulatorServer) -> None:
    server.faults.add(kind="drop", after=True, times=1)
    with pytest.raises(requests.ConnectionError):
        get(server)
    assert CountingHandler.calls == 1


def test_admin_routes_are_never_faulted(server: EmulatorServer) -> None:
    server.faults.add(kind="status", status=500)
    assert requests.get(f"{server.url}/_emulator/stats", timeout=5).status_code == 200


# -- admin API ----------------------------------------------------------------------------


def test_admin_post_appends_rules_and_get_reports_matches_and_fires(server: EmulatorServer) -> None:
    rules = [{"route": "hello", "kind": "status", "status": 500, "nth": 2}]
    created = requests.post(f"{server.url}/_emulator/faults", json={"rules": rules}, timeout=5)
    assert created.status_code == 201
    assert [get(server).status_code for _ in range(3)] == [200, 500, 200]
    state = requests.get(f"{server.url}/_emulator/faults", timeout=5).json()
    assert state["rules"][0]["matched"] == 3
    assert state["rules"][0]["fired"] == 1
    assert state["fired"]["status"] == 1


def test_admin_post_with_an_invalid_rule_is_400_and_adds_nothing(server: EmulatorServer) -> None:
    body = {"rules": [{"kind": "status"}, {"kind": "nope"}]}
    assert requests.post(f"{server.url}/_emulator/faults", json=body, timeout=5).status_code == 400
    assert requests.get(f"{server.url}/_emulator/faults", timeout=5).json()["rules"] == []


def test_admin_delete_clears_rules_and_counters(server: EmulatorServer) -> None:
    server.faults.add(kind="status", status=500)
    get(server)
    assert requests.delete(f"{server.url}/_emulator/faults", timeout=5).status_code == 204
    assert requests.get(f"{server.url}/_emulator/faults", timeout=5).json() == {
        "rules": [],
        "fired": {"batch_partial": 0, "delay": 0, "drop": 0, "status": 0},
    }
    assert get(server).status_code == 200
