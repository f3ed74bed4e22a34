"""A small reusable HTTP server base for the emulators (stdlib only).

* :class:`EmulatorServer`: a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0 = a free port)
  with ``url``/``port``/``start()``/``stop()`` and context-manager support.
* :class:`EmulatorRequestHandler`: HTTP/1.1 keep-alive handler with a route table, body and
  query parsing (the raw query string is kept, because nextLinks must round-trip verbatim),
  JSON/empty response helpers, a central error path (:class:`EmulatorHTTPError`) and
  per-server request statistics served at ``GET /_emulator/stats`` (reset with
  ``POST /_emulator/stats/reset``).
* :func:`run_cli`: start a server from the command line, print its URL, wait for
  Ctrl-C/SIGTERM.
* Fault injection (:mod:`emulators.common.faults`): every server has ``server.faults``; the
  dispatch applies them to every non-admin route (:meth:`EmulatorRequestHandler.run_route`);
  admin routes ``GET|POST|DELETE /_emulator/faults``.
* :meth:`EmulatorRequestHandler.dispatch_virtual`: run an in-memory request (a ``$batch``
  part) through the same routing and handlers, capturing the raw response.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import re
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from .faults import FaultRule, FaultRuleError, FaultSet

__all__ = [
    "DropConnection",
    "EmulatorHTTPError",
    "EmulatorRequestHandler",
    "EmulatorServer",
    "RequestStats",
    "Route",
    "run_cli",
]

JSON_CONTENT_TYPE = "application/json"


class EmulatorHTTPError(Exception):
    """Raise from a route handler to answer with an error response.

    The handler's :meth:`EmulatorRequestHandler.send_error_response` decides the body shape
    (Dataverse and F&O differ); the default is ``{"error":{"code":..,"message":..}}``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class DropConnection(Exception):
    """Raise from request handling to close the connection without sending a response."""


class RequestStats:
    """Thread-safe request counters: total, by method, by route name, by "METHOD route"."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._by_method: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()
        self._by_method_route: Counter[str] = Counter()
        self._total = 0
        self._open = 0  # requests being handled: counted once their handler ends, after the response

    def begin(self) -> None:
        with self._lock:
            self._open += 1

    def end(self) -> None:
        """A request that began and will not be recorded (an admin route)."""
        with self._lock:
            self._open -= 1
            self._lock.notify_all()

    def record(self, method: str, route: str) -> None:
        with self._lock:
            self._open -= 1
            self._lock.notify_all()
            self._total += 1
            self._by_method[method] += 1
            self._by_route[route] += 1
            self._by_method_route[f"{method} {route}"] += 1

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._by_method.clear()
            self._by_route.clear()
            self._by_method_route.clear()

    def snapshot(self, *, settle_s: float = 1.0) -> dict[str, Any]:
        """The counters, once the requests still being handled are recorded (a client may read the stats
        right after its last response, before that request's handler has counted it); at most
        ``settle_s`` of waiting, for servers that never go quiet."""
        with self._lock:
            self._lock.wait_for(lambda: self._open <= 0, timeout=settle_s)
            return {
                "total": self._total,
                "by_method": dict(self._by_method),
                "by_route": dict(self._by_route),
                "by_method_route": dict(self._by_method_route),
            }


class EmulatorServer(ThreadingHTTPServer):
    """A threaded HTTP server bound to 127.0.0.1 that serves in a background thread.

    Subclass it (or attach attributes) to hold emulator state; handlers reach it through
    ``self.server``.
    """

    daemon_threads = True
    allow_reuse_address = True
    # A service accepts the connections its callers open: not socketserver's backlog of 5, with which a burst of
    # new connections could be dropped by the kernel (and retried by the caller only after 1 s).
    request_queue_size = 512

    def __init__(
        self,
        handler_class: type[BaseHTTPRequestHandler],
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        name: str = "emulator",
        verbose: bool = False,
    ) -> None:
        super().__init__((host, port), handler_class)
        self.host = host
        self.name = name
        self.verbose = verbose
        self.stats = RequestStats()
        self.faults = FaultSet()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{self.name}-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


#: ``handler(request_handler, match)``; typed loosely (Any) so that subclasses can register
#: their own methods (``Callable[[MyHandler, Match], None]``) without casts.
RouteHandler = Callable[[Any, "re.Match[str]"], None]


@dataclass(frozen=True)
class Route:
    """One entry of a handler's route table.

    ``pattern`` is matched (``fullmatch``) against the percent-decoded path; ``handler`` is
    called as ``handler(request_handler, match)``. ``admin`` routes (``/_emulator/*``) are
    not counted in the stats.
    """

    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    name: str
    handler: RouteHandler
    admin: bool = False

    @classmethod
    def make(
        cls,
        methods: str | Sequence[str],
        pattern: str,
        name: str,
        handler: RouteHandler,
        *,
        admin: bool = False,
    ) -> Route:
        method_tuple = (methods,) if isinstance(methods, str) else tuple(methods)
        return cls(method_tuple, re.compile(pattern), name, handler, admin)


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    """Base request handler: routing, body/query parsing, response helpers, stats.

    Subclasses set :attr:`routes` (a list of :class:`Route`) and may override
    :meth:`default_headers`, :meth:`send_error_response` and :meth:`before_route`.
    Attributes available in route handlers: ``method``, ``raw_path`` (as sent),
    ``path_only`` (percent-decoded path), ``raw_query`` (verbatim query string),
    ``query`` (first value per name, ``+`` and ``%xx`` decoded), ``query_items`` (all pairs),
    ``body`` (raw bytes), ``route_name`` (may be refined for the stats).
    """

    disable_nagle_algorithm = True  # headers and body leave in separate writes: no 40 ms delayed-ACK stalls

    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    routes: ClassVar[list[Route]] = []
    server_version = "EmulatorHTTP/1.0"
    sys_version = ""
    #: Content-Type of :meth:`send_json` bodies (Dataverse adds ``odata.metadata=minimal``).
    json_content_type: ClassVar[str] = JSON_CONTENT_TYPE

    method: str
    raw_path: str
    path_only: str
    raw_query: str
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    body: bytes
    route_name: str
    #: Status of the last response started by this handler (0 before any).
    response_status: int = 0
    #: Rows written while handling the request, for service-protection accounting (routes that
    #: write several rows set it; see :mod:`emulators.common.throttling`).
    records_written: int = 0
    #: Headers added to every response of the current request by wrappers (e.g. the
    #: service-protection rate-limit headers); reset for each request.
    extra_response_headers: dict[str, str] = {}

    # -- HTTP verbs ------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- dispatch --------------------------------------------------------------------------
    def _begin_request(self) -> None:
        """Forget per-request state: one handler serves every request of a keep-alive connection."""
        self.response_status = 0
        self.records_written = 0
        self.extra_response_headers = {}

    def _dispatch(self, method: str) -> None:
        self._begin_request()
        self.method = method
        self.route_name = "unmatched"
        counted = not urlsplit(self.path).path.startswith("/_emulator/")
        if counted:
            self.server.stats.begin()
        try:
            self.body = self._read_body()
            self._parse_target()
            route, match = self._find_route(method)
            if route is None or match is None:
                self.handle_unmatched(method)
                return
            if counted and route.admin:  # an admin route outside /_emulator/: not counted after all
                counted = False
                self.server.stats.end()
            self.route_name = route.name
            if route.admin:
                route.handler(self, match)
            else:
                self.run_route(route, match)
        except DropConnection:
            self.close_connection = True  # no response at all: the client sees a reset/EOF
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it timed out on a delay fault)
        except EmulatorHTTPError as err:
            self.send_error_response(err)
        except Exception as exc:  # pragma: no cover - a bug in the emulator itself
            traceback.print_exc(file=sys.stderr)
            self.send_error_response(EmulatorHTTPError(500, "", f"Emulator internal error: {exc!r}"))
        finally:
            if counted:
                self.server.stats.record(method, self.route_name)

    def _parse_target(self) -> None:
        split = urlsplit(self.path)
        self.raw_path = split.path
        self.path_only = unquote(split.path)
        self.raw_query = split.query
        self.query_items = parse_qsl(split.query, keep_blank_values=True)
        self.query = {}
        for name, value in self.query_items:
            self.query.setdefault(name, value)

    def run_route(self, route: Route, match: re.Match[str]) -> None:
        """A non-admin route: fault rules first, then :meth:`before_route` and
        :meth:`invoke_route` (see :mod:`emulators.common.faults` for the kinds)."""
        rule = self.server.faults.pick(route.name, self.path_only, self.method)

        def call() -> None:
            self.before_route(route, match)
            self.invoke_route(route, match)

        if rule is None:
            call()
            return
        if rule.kind == "status":
            raise self.fault_error(rule)
        if rule.after:
            output = self.call_captured(call)
            if rule.kind == "drop":
                raise DropConnection
            time.sleep(rule.delay_s)
            self.wfile.write(output)
            return
        if rule.kind == "drop":
            raise DropConnection
        time.sleep(rule.delay_s)
        call()

    def invoke_route(self, route: Route, match: re.Match[str]) -> None:
        """Call the route's handler (subclasses wrap it, e.g. for service protection)."""
        route.handler(self, match)

    def call_captured(self, call: Callable[[], None]) -> bytes:
        """Run ``call`` with the response (errors included) written to a buffer; return it."""
        real = self.wfile
        buffer = io.BytesIO()
        self.wfile = buffer
        try:
            try:
                call()
            except EmulatorHTTPError as err:
                self.send_error_response(err)
        finally:
            self.wfile = real
        return buffer.getvalue()

    @classmethod
    def virtual(
        cls,
        server: EmulatorServer,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        client_address: Any = ("127.0.0.1", 0),
    ) -> Self:
        """A handler for an in-memory request (no socket): use :meth:`dispatch_virtual`,
        then read the raw HTTP response from ``handler.wfile.getvalue()``."""
        handler = cls.__new__(cls)
        handler.server = server
        handler.client_address = client_address
        handler.command = method
        handler.path = target
        handler.request_version = "HTTP/1.1"
        handler.requestline = f"{method} {target} HTTP/1.1"
        handler.close_connection = False
        message = http.client.HTTPMessage()
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding"):
                message[name] = value
        message["Content-Length"] = str(len(body))
        handler.headers = message
        handler.rfile = io.BytesIO(body)
        handler.wfile = io.BytesIO()
        return handler

    def virtual_response(self) -> bytes:
        """The raw HTTP response written by a :meth:`virtual` handler."""
        return self.wfile.getvalue() if isinstance(self.wfile, io.BytesIO) else b""

    def dispatch_virtual(self) -> None:
        """Handle a :meth:`virtual` request like a real one (same parsing, routing,
        :meth:`before_route` and handlers) but without statistics, fault rules or
        :meth:`invoke_route` wrapping; admin routes are not reachable."""
        self._begin_request()
        self.method = self.command
        self.route_name = "unmatched"
        try:
            self.body = self._read_body()
            self._parse_target()
            route, match = self._find_route(self.method)
            if route is None or match is None or route.admin:
                self.handle_unmatched(self.method)
                return
            self.route_name = route.name
            self.before_route(route, match)
            route.handler(self, match)
        except EmulatorHTTPError as err:
            self.send_error_response(err)
        except Exception as exc:  # pragma: no cover - a bug in the emulator itself
            traceback.print_exc(file=sys.stderr)
            self.send_error_response(EmulatorHTTPError(500, "", f"Emulator internal error: {exc!r}"))

    def _find_route(self, method: str) -> tuple[Route | None, re.Match[str] | None]:
        path_matched = False
        for route in [*self.common_routes(), *self.routes]:
            match = route.pattern.fullmatch(self.path_only)
            if match is None:
                continue
            path_matched = True
            if method in route.methods:
                return route, match
        if path_matched:
            raise EmulatorHTTPError(405, "", f"The requested resource does not support http method '{method}'.")
        return None, None

    def common_routes(self) -> list[Route]:
        """Admin routes every emulator has: request statistics."""
        return [
            Route.make("GET", r"/_emulator/stats", "admin.stats", _stats_get, admin=True),
            Route.make("POST", r"/_emulator/stats/reset", "admin.stats.reset", _stats_reset, admin=True),
            Route.make("GET", r"/_emulator/faults", "admin.faults", _faults_get, admin=True),
            Route.make("POST", r"/_emulator/faults", "admin.faults.add", _faults_post, admin=True),
            Route.make("DELETE", r"/_emulator/faults", "admin.faults.clear", _faults_delete, admin=True),
        ]

    # -- hooks -----------------------------------------------------------------------------
    def before_route(self, route: Route, match: re.Match[str]) -> None:
        """Called before every non-admin route (e.g. authentication). Raise to reject."""

    def handle_unmatched(self, method: str) -> None:
        raise EmulatorHTTPError(404, "", f"No HTTP resource was found that matches the request URI '{self.path}'.")

    def default_headers(self, *, has_body: bool) -> dict[str, str]:
        """Headers added to every response (subclasses add e.g. ``OData-Version``)."""
        return {}

    def fault_error(self, rule: FaultRule) -> EmulatorHTTPError:
        """The error answered by a ``status`` fault rule (subclasses use their own codes
        and texts); ``Retry-After`` is added when the rule sets ``retry_after``."""
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        status = rule.status or 503
        message = rule.message or f"Fault injected by the emulator: HTTP {status}."
        return EmulatorHTTPError(status, rule.code or "", message, headers=headers)

    def send_error_response(self, err: EmulatorHTTPError) -> None:
        """Render an :class:`EmulatorHTTPError`; default ``{"error":{"code","message"}}``."""
        body: dict[str, Any] = {"error": {"code": err.code, "message": err.message, **err.extra}}
        self.send_json(err.status, body, headers=err.headers)

    # -- request helpers -------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().strip().split(b";", 1)[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def read_json(self) -> Any:
        """The request body decoded as JSON; raises a 400 :class:`EmulatorHTTPError`."""
        if not self.body:
            raise EmulatorHTTPError(400, "", "The request body is empty; a JSON payload is expected.")
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EmulatorHTTPError(400, "", f"The request body is not valid JSON: {exc}") from exc

    def header(self, name: str, default: str | None = None) -> str | None:
        value = self.headers.get(name)
        return default if value is None else value.strip()

    # -- response helpers ------------------------------------------------------------------
    def send_json(
        self,
        status: int,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Send ``body`` as compact JSON with ``status`` (Content-Length always set)."""
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.send_bytes(
            status, payload, content_type=content_type or self.json_content_type, headers=headers, reason=reason
        )

    def send_bytes(
        self,
        status: int,
        payload: bytes,
        *,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        """Send raw bytes; ``reason`` overrides the status line's reason phrase."""
        self.send_response(status, reason)
        merged = {**self.default_headers(has_body=True), **self.extra_response_headers, "Content-Type": content_type}
        merged.update(headers or {})
        for name, value in merged.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.method != "HEAD":
            self.wfile.write(payload)

    def send_empty(
        self, status: int = 204, *, headers: Mapping[str, str] | None = None, reason: str | None = None
    ) -> None:
        """A response without a body (204, 304, ...)."""
        self.send_response(status, reason)
        merged = {**self.default_headers(has_body=False), **self.extra_response_headers}
        merged.update(headers or {})
        for name, value in merged.items():
            self.send_header(name, value)
        if status not in (204, 304) and status >= 200:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.response_status = code
        if message is None:
            try:
                message = HTTPStatus(code).phrase
            except ValueError:
                message = ""
        super().send_response(code, message)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def _stats_get(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
    handler.send_json(200, handler.server.stats.snapshot())


def _stats_reset(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
    handler.server.stats.reset()
    handler.send_empty(204)


def _faults_get(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
    """``GET /_emulator/faults``: ``{"rules": [...with matched/fired...], "fired": {kind: n}}``."""
    handler.send_json(200, handler.server.faults.snapshot(), content_type=JSON_CONTENT_TYPE)


def _faults_post(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
    """``POST /_emulator/faults`` with ``{"rules": [...]}`` (or one rule object): append."""
    try:
        body = json.loads(handler.body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise EmulatorHTTPError(400, "", f"The request body is not valid JSON: {exc}") from None
    rules = body.get("rules") if isinstance(body, dict) and "rules" in body else [body]
    if not isinstance(rules, list):
        raise EmulatorHTTPError(400, "", "'rules' must be a JSON array of fault rules.")
    try:
        added = handler.server.faults.extend(rules)
    except FaultRuleError as exc:
        raise EmulatorHTTPError(400, "", str(exc)) from None
    handler.send_json(201, {"rules": [rule.as_json() for rule in added]}, content_type=JSON_CONTENT_TYPE)


def _faults_delete(handler: EmulatorRequestHandler, match: re.Match[str]) -> None:
    """``DELETE /_emulator/faults``: remove every rule and zero the counters."""
    handler.server.faults.clear()
    handler.send_empty(204)


def run_cli(
    build_server: Callable[[int], EmulatorServer],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    default_port: int = 0,
) -> int:
    """Command-line entry point: ``--port N`` (0 = free port), ``--verbose``.

    Builds the server with ``build_server(port)``, starts it, prints its URL on stdout
    (first line, flushed) and blocks until Ctrl-C or SIGTERM. Returns the exit code.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, default=default_port, help="TCP port (0 = any free port)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(list(argv) if argv is not None else None)

    server = build_server(args.port)
    server.verbose = args.verbose
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _on_signal)
    server.start()
    print(server.url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0
