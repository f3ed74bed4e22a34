"""The reusable emulator HTTP server base (emulators.common.server)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from emulators.common.server import EmulatorHTTPError, EmulatorRequestHandler, EmulatorServer, Route


class EchoHandler(EmulatorRequestHandler):
    def echo(self, match: re.Match[str]) -> None:
        self.send_json(
            200,
            {"raw_query": self.raw_query, "query": self.query, "body": self.read_json() if self.body else None},
            headers={"X-Extra": "1"},
        )

    def empty(self, match: re.Match[str]) -> None:
        self.send_empty(204)

    def fail(self, match: re.Match[str]) -> None:
        raise EmulatorHTTPError(409, "E1", "conflict")

    routes = [
        Route.make(("GET", "POST"), r"/echo", "echo", echo),
        Route.make("DELETE", r"/things/(?P<id>\d+)", "thing", empty),
        Route.make("GET", r"/fail", "fail", fail),
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EchoHandler, 0) as srv:
        yield srv


@pytest.fixture()
def http(server: EmulatorServer) -> Iterator[requests.Session]:
    requests.post(f"{server.url}/_emulator/stats/reset", timeout=5)
    with requests.Session() as session:
        yield session


def test_server_binds_localhost_on_a_free_port(server: EmulatorServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_raw_query_is_kept_verbatim_next_to_the_decoded_one(server: EmulatorServer, http: requests.Session) -> None:
    body = http.get(f"{server.url}/echo?$filter=a%20eq%20'x'&b=1+2", timeout=5).json()
    assert body["raw_query"] == "$filter=a%20eq%20'x'&b=1+2"
    assert body["query"] == {"$filter": "a eq 'x'", "b": "1 2"}


def test_json_body_is_read_and_response_has_length_and_extra_headers(server: EmulatorServer, http: requests.Session) -> None:
    response = http.post(f"{server.url}/echo", json={"a": 1}, timeout=5)
    assert response.json()["body"] == {"a": 1}
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["X-Extra"] == "1"


def test_empty_response_is_204_without_body(server: EmulatorServer, http: requests.Session) -> None:
    response = http.delete(f"{server.url}/things/7", timeout=5)
    assert response.status_code == 204
    assert response.content == b""


def test_raised_http_error_becomes_json_error(server: EmulatorServer, http: requests.Session) -> None:
    response = http.get(f"{server.url}/fail", timeout=5)
    assert response.status_code == 409
    assert response.json() == {"error": {"code": "E1", "message": "conflict"}}


def test_unknown_path_is_404_and_wrong_method_is_405(server: EmulatorServer, http: requests.Session) -> None:
    assert http.get(f"{server.url}/nope", timeout=5).status_code == 404
    assert http.get(f"{server.url}/things/7", timeout=5).status_code == 405


def test_stats_count_by_method_and_route_but_not_admin_calls(server: EmulatorServer, http: requests.Session) -> None:
    http.get(f"{server.url}/echo", timeout=5)
    http.post(f"{server.url}/echo", json={}, timeout=5)
    http.delete(f"{server.url}/things/1", timeout=5)
    stats = http.get(f"{server.url}/_emulator/stats", timeout=5).json()
    assert stats["total"] == 3
    assert stats["by_method"] == {"GET": 1, "POST": 1, "DELETE": 1}
    assert stats["by_route"] == {"echo": 2, "thing": 1}
    assert stats["by_method_route"]["POST echo"] == 1


def test_stats_reset_zeroes_counters(server: EmulatorServer, http: requests.Session) -> None:
    http.get(f"{server.url}/echo", timeout=5)
    assert http.post(f"{server.url}/_emulator/stats/reset", timeout=5).status_code == 204
    assert http.get(f"{server.url}/_emulator/stats", timeout=5).json()["total"] == 0


def test_stop_closes_the_listening_socket() -> None:
    srv = EmulatorServer(EchoHandler, 0).start()
    url = srv.url
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/echo", timeout=2)
