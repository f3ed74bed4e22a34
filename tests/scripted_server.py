"""A real HTTP server on 127.0.0.1 that answers from a script and records every request.

For exact-request assertions on the HTTP core: what was sent (method, path, headers, body) and how
the client reacted to each scripted answer (429, 503, error bodies, paging).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from azure.core.credentials import AccessToken


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    #: The answer is lost after the request was received: the connection is closed without a response...
    drop: bool = False
    #: ...or the answer comes only after this many seconds (beyond the client's read timeout).
    delay_s: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    def __init__(self) -> None:
        self.answers: deque[Answer] = deque()
        self.requests: list[Recorded] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
                answer = outer.answers.popleft() if outer.answers else Answer(500, {"error": {"message": "script ended"}})
                if answer.drop:
                    self.close_connection = True
                    return
                time.sleep(answer.delay_s)
                payload = answer.raw if answer.raw is not None else (
                    json.dumps(answer.body).encode() if answer.body is not None else b"")
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.body is not None and answer.raw is None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class StaticCredential:
    """A TokenCredential that always hands out the same long-lived token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", 2**31)
