"""Runs the registered functions without the Functions host (which cannot be installed here).

``invoke_http`` / ``invoke_timer`` / ``invoke_queue`` call a function through the real
``azure.functions`` app object with real ``HttpRequest`` / ``TimerRequest`` / ``QueueMessage`` objects,
as the host's Python worker does. ``QueuePump`` plays the host's queue listener against Azurite.
``LocalFunctionsHost`` serves the HTTP triggers on 127.0.0.1 (routes under ``/api``, literal routes
before ``{parameter}`` routes, as ASP.NET routing orders them) so the Commerce emulator's business
events reach the callback triggers over real HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy


class LocalContext(func.Context):
    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return ""

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None

    @property
    def thread_local_storage(self) -> Any:
        return threading.local()


_INDEX: dict[int, dict[str, Any]] = {}


def functions(app: func.FunctionApp) -> dict[str, Any]:
    """The app's functions by name. ``get_functions`` may run once per app (it re-validates names)."""
    if id(app) not in _INDEX:
        _INDEX[id(app)] = {str(fn.get_function_name()): fn for fn in app.get_functions()}
    return _INDEX[id(app)]


def function(app: func.FunctionApp, name: str) -> Any:
    try:
        return functions(app)[name]
    except KeyError:
        raise KeyError(f"no function named {name!r}") from None


def invoke_http(app: func.FunctionApp, name: str, req: func.HttpRequest) -> func.HttpResponse:
    result: func.HttpResponse = function(app, name).get_user_function()(req, LocalContext(name))
    return result


def invoke_timer(app: func.FunctionApp, name: str, *, past_due: bool = False) -> None:
    function(app, name).get_user_function()(TimerRequest(past_due=past_due), LocalContext(name))


def invoke_queue(app: func.FunctionApp, name: str, message: func.QueueMessage) -> None:
    function(app, name).get_user_function()(message, LocalContext(name))


def resolve_binding(expression: str) -> str:
    """Resolve ``%AppSetting%`` parts of a binding expression from the environment, as the host does."""
    def setting(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise KeyError(f"app setting {match.group(1)} is not set (binding expression {expression!r})")
        return value

    return re.sub(r"%([^%]+)%", setting, expression)


logger = logging.getLogger("devtools.functions_host")
DASHBOARD_AUTH_SETTING = "SYNC_DASHBOARD_AUTH"  # shared/ops/access.py: "local" serves the status page unsigned
MAX_DEQUEUE_COUNT = 5  # the Functions queue extension's default maxDequeueCount


@dataclass(frozen=True)
class QueueFailure:
    """One invocation of a queue function that raised (the host logs it and retries the message)."""

    function: str
    message_id: str
    dequeue_count: int
    error: str
    poisoned: bool  # the last allowed attempt: the message went to ``<queue>-poison``

    def __str__(self) -> str:
        fate = "moved to the poison queue" if self.poisoned else "left for a retry"
        return f"{self.function} raised {self.error} (dequeue count {self.dequeue_count}; {fate})"


class QueueFunctionFailed(AssertionError):
    """``drain`` saw a queue function raise: never a silent success for a test or the demo."""

    def __init__(self, failures: list[QueueFailure]) -> None:
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))


class QueuePump:
    """Runs the app's queue triggers against Azurite as the host's queue listener does.

    Messages are base64 text; a message whose function raises becomes visible again and is retried
    until it has been dequeued ``MAX_DEQUEUE_COUNT`` times, then moves to ``<queue>-poison``. Every such
    invocation is kept in ``failures``; ``drain`` raises ``QueueFunctionFailed`` at the first one unless
    told that failures are expected.
    """

    def __init__(self, app: func.FunctionApp, connection_string: str, *, visibility_timeout_s: int = 30) -> None:
        self.app = app
        self.service = QueueServiceClient.from_connection_string(connection_string)
        self.visibility_timeout_s = visibility_timeout_s
        self.queues: dict[str, str] = {}
        for name, fn in functions(app).items():
            trigger = fn.get_trigger()
            if getattr(trigger, "type", "") == "queueTrigger":
                self.queues[name] = resolve_binding(trigger.queue_name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0
        self.failures: list[QueueFailure] = []

    def _client(self, queue: str) -> Any:
        return self.service.get_queue_client(queue, message_encode_policy=TextBase64EncodePolicy(),
                                             message_decode_policy=TextBase64DecodePolicy())

    def run_once(self, max_messages: int = 32) -> int:
        """Deliver what is visible now; returns how many messages were handled."""
        handled = 0
        for name, queue in self.queues.items():
            client = self._client(queue)
            try:
                messages = list(client.receive_messages(max_messages=max_messages,
                                                        visibility_timeout=self.visibility_timeout_s))
            except ResourceNotFoundError:
                continue
            for message in messages:
                body = message.content if isinstance(message.content, str) else str(message.content)
                try:
                    invoke_queue(self.app, name, func.QueueMessage(id=message.id, body=body,
                                                                   pop_receipt=message.pop_receipt))
                except Exception as exc:
                    logger.exception("queue function %s failed (dequeue count %s)", name, message.dequeue_count)
                    self.failures.append(QueueFailure(name, str(message.id), int(message.dequeue_count or 0),
                                                      f"{type(exc).__name__}: {exc}",
                                                      message.dequeue_count >= MAX_DEQUEUE_COUNT))
                    if message.dequeue_count >= MAX_DEQUEUE_COUNT:
                        poison = self._client(f"{queue}-poison")
                        with contextlib.suppress(ResourceExistsError):
                            poison.create_queue()
                        poison.send_message(body, time_to_live=-1)
                        client.delete_message(message)
                    continue
                client.delete_message(message)
                handled += 1
        self.processed += handled
        return handled

    def drain(self, timeout_s: float = 30.0, *, allow_failures: bool = False) -> int:
        """Deliver until every queue is empty; returns how many messages were handled (their function
        returned). Raises ``QueueFunctionFailed`` as soon as a function raises, unless ``allow_failures``
        (then the failed messages are retried as the host would; read ``failures``), and
        ``TimeoutError`` when the queues are not empty after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            failed_before = len(self.failures)
            handled = self.run_once()
            total += handled
            if not allow_failures and len(self.failures) > failed_before:
                raise QueueFunctionFailed(self.failures[failed_before:])
            if handled == 0 and self._all_empty():
                return total
            if handled == 0:
                time.sleep(0.05)
        raise TimeoutError(f"the queues were not empty after {timeout_s} s ({total} messages handled)")

    def _all_empty(self) -> bool:
        for queue in self.queues.values():
            try:
                if self._client(queue).get_queue_properties().approximate_message_count:
                    return False
            except ResourceNotFoundError:
                continue
        return True

    def start(self, poll_s: float = 0.1) -> QueuePump:
        def loop() -> None:
            while not self._stop.is_set():
                if self.run_once() == 0:
                    self._stop.wait(poll_s)

        self._thread = threading.Thread(target=loop, name="queue-pump", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _route_regex(route: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", route)
    return re.compile(f"^/api/{pattern}$")


class _HostServer(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog of the Functions host's Kestrel (512), not socketserver's 5: a burst of callers opening
    # connections while the accept thread waits for the interpreter lock must not see attempts dropped (a dropped
    # attempt is retried by the caller's TCP stack only after 1 s), which the real host would accept.
    request_queue_size = 512


class LocalFunctionsHost:
    """Serves the app's HTTP triggers on 127.0.0.1 (no function keys: local equipment only). The status page
    (``/api/ops/dashboard``) is served without sign-in: ``start`` sets ``SYNC_DASHBOARD_AUTH=local`` for this
    process unless it is set already (the page refuses it wherever ``WEBSITE_SITE_NAME`` says Azure), and
    ``stop`` takes it back."""

    def __init__(self, app: func.FunctionApp, port: int = 0, *, master_key: str | None = None,
                 easy_auth: dict[str, str] | None = None) -> None:
        routes: list[tuple[bool, re.Pattern[str], str, set[str]]] = []
        self.admin_level: set[str] = set()
        for fn in functions(app).values():
            trigger = fn.get_trigger()
            route = getattr(trigger, "route", None)
            if route is None:
                continue
            methods = {str(getattr(m, "value", m)).upper() for m in (getattr(trigger, "methods", None) or ["POST"])}
            routes.append(("{" in route, _route_regex(route), str(fn.get_function_name()), methods))
            if getattr(trigger, "auth_level", None) == func.AuthLevel.ADMIN:
                self.admin_level.add(str(fn.get_function_name()))
        routes.sort(key=lambda r: r[0])  # literal routes win over parameter routes
        host = self
        self.app = app
        self.routes = routes
        # With a master key, admin-level functions answer 401 to a request without it (x-functions-key or ?code=),
        # as the host does; without one (the default) no key is checked (local equipment only).
        self.master_key = master_key
        # App Service Authentication in front of the app, when given: bearer token -> the X-MS-CLIENT-PRINCIPAL
        # header (base64 JSON) it stands for. As the platform does, a client's own X-MS-CLIENT-PRINCIPAL* headers
        # are dropped, a known token's principal is injected, and an unknown bearer token answers 401.
        self.easy_auth = easy_auth

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave in separate writes: no 40 ms stalls

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                host._handle(self)

            def do_GET(self) -> None:
                host._handle(self)

        self.server = _HostServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> LocalFunctionsHost:
        self._set_local_auth = DASHBOARD_AUTH_SETTING not in os.environ
        if self._set_local_auth:
            os.environ[DASHBOARD_AUTH_SETTING] = "local"
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if getattr(self, "_set_local_auth", False):
            os.environ.pop(DASHBOARD_AUTH_SETTING, None)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = dict(handler.headers)
        if self.easy_auth is not None:
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-ms-client-principal")}
            scheme, _, token = (handler.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() == "bearer":
                if token not in self.easy_auth:
                    handler.send_response(401)
                    handler.send_header("Content-Length", "0")
                    handler.end_headers()
                    return
                headers["X-MS-CLIENT-PRINCIPAL"] = self.easy_auth[token]
        for _, regex, name, methods in self.routes:
            match = regex.match(parts.path)
            if match and handler.command in methods:
                if self.master_key is not None and name in self.admin_level and self.master_key not in (
                        handler.headers.get("x-functions-key"), dict(parse_qsl(parts.query)).get("code")):
                    handler.send_response(401)
                    handler.send_header("Content-Length", "0")
                    handler.end_headers()
                    return
                req = func.HttpRequest(handler.command, self.url + handler.path, headers=headers,
                                       params=dict(parse_qsl(parts.query)), route_params=match.groupdict(), body=body)
                try:
                    response = invoke_http(self.app, name, req)
                except Exception:  # the host answers 500 when a function raises
                    logger.exception("function %s failed", name)
                    response = func.HttpResponse("", status_code=500)
                payload = response.get_body()
                handler.send_response(response.status_code)
                content_type = response.mimetype or "application/json"
                if content_type.startswith("text/"):
                    content_type += f"; charset={response.charset or 'utf-8'}"
                handler.send_header("Content-Type", content_type)
                for header, value in response.headers.items():  # Location, Set-Cookie (each), security headers
                    if header.lower() not in ("content-type", "content-length"):
                        handler.send_header(header, value)
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
                return
        handler.send_response(404)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
