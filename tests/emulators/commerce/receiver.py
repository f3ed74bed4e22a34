"""A webhook / HTTPS-endpoint stand-in for the Commerce emulator's publisher tests: records every POST with
its path and headers, and answers ``status[path]`` (default 200)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEST_EVENT = "BusinessEventsTestEndpointContract"


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.status: dict[str, int] = {}
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def deliveries(self, path: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """Every POST to ``path`` as (headers with lower-case names, body)."""
        with self.lock:
            return [(h, b) for p, h, b in self.posts if p == path]

    def received(self, path: str, *, include_test: bool = False) -> list[dict[str, Any]]:
        """The bodies posted to ``path``, without the activation test event unless asked for."""
        return [body for _, body in self.deliveries(path)
                if include_test or TEST_EVENT not in str(body.get("BusinessEventId", ""))]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
        self.send_response(self.server.status.get(self.path, 200))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serving() -> Iterator[Receiver]:
    """A receiver serving on a free loopback port until the generator is closed."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
