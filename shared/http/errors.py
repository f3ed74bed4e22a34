"""OData error bodies parsed into typed exceptions (docs/protocol-notes.md §2.2 and §3.4)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

# Error classes an operator sees on a parked record.
VALIDATION = "validation"
LOOKUP_MISSING = "lookup_missing"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
THROTTLED = "throttled"
SERVER = "server"
AUTH = "auth"
TRANSPORT = "transport"
UNADDRESSABLE = "unaddressable_key"


class ApiError(Exception):
    """A failed call to Dataverse or F&O, with what the server said.

    ``error_class`` is what an operator sees on a parked record. ``fatal``: the failure would hit every
    record alike (the credential, the app user's rights), so a run aborts instead of parking each record;
    read it with ``is_fatal``."""

    error_class = SERVER
    fatal = False

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        inner_message: str = "",
        method: str = "",
        url: str = "",
        request_id: str = "",
        service_request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.server_message = message
        self.inner_message = inner_message
        self.method = method
        self.url = url
        self.request_id = request_id
        self.service_request_id = service_request_id
        self.retry_after = retry_after
        detail = inner_message or message
        prefix = f"{method} {url} -> {status}" if method else f"HTTP {status}"
        code_part = f" [{code}]" if code else ""
        super().__init__(f"{prefix}{code_part}: {detail}")

    @property
    def reason(self) -> str:
        """The readable reason: F&O puts the Infolog in innererror, Dataverse in message."""
        return self.inner_message or self.server_message


class UnaddressableKeyError(ApiError):
    """A write that names its row by a key the service cannot route (F&O: ``/`` or ``\\`` in a key,
    docs/protocol-notes.md §3.1). Never sent, so never applied to another row; the record is parked with this reason."""

    error_class = UNADDRESSABLE


class BadRequestError(ApiError):
    error_class = VALIDATION


class AuthError(ApiError):
    """401 or 403: the token or the app user's rights are refused."""

    error_class = AUTH
    fatal = True


class NotFoundError(ApiError):
    error_class = NOT_FOUND


class PreconditionFailedError(ApiError):
    error_class = CONFLICT


class ThrottledError(ApiError):
    error_class = THROTTLED


class ServerError(ApiError):
    error_class = SERVER


class TransportError(ApiError):
    """No HTTP answer at all: connection refused or reset, or a timeout."""

    error_class = TRANSPORT


class CredentialError(ApiError):
    """The credential could not produce a token: a configuration problem, never retried."""

    error_class = AUTH
    fatal = True


def is_fatal(exc: BaseException) -> bool:
    """True for a failure that would hit every record (``AuthError``, ``CredentialError``): the run must
    abort rather than park record after record. False for anything else, ``ApiError`` or not."""
    return isinstance(exc, ApiError) and exc.fatal


def record_error(call: Callable[[], object]) -> ApiError | None:
    """Run one record's call: None when it succeeds, its ``ApiError`` when that failure is the record's own
    (it is parked), and a fatal one raised (every record would fail the same way: abort instead). The one
    place that tells the two apart, so callers do not each repeat ``except AuthError: raise``."""
    try:
        call()
    except ApiError as exc:
        if exc.fatal:
            raise
        return exc
    return None


def raise_fatal(errors: Iterable[ApiError | None]) -> None:
    """A fatal error among per-record results (a ``$batch`` part refused for authentication) aborts too."""
    for error in errors:
        if error is not None and error.fatal:
            raise error


def _class_for(status: int) -> type[ApiError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 412:
        return PreconditionFailedError
    if status == 429:
        return ThrottledError
    if 400 <= status < 500:
        return BadRequestError
    return ServerError


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in integer (or decimal) seconds; HTTP-date forms are not sent by either service."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from_bytes(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    reason: str = "",
    method: str = "",
    url: str = "",
    request_id: str = "",
) -> ApiError:
    """The typed exception for one HTTP answer: the only place a status becomes an error class and an
    OData error body (``error.code``, ``error.message``, ``error.innererror.message``; docs/protocol-notes.md §2.2,
    §3.4) becomes its fields. Used for whole responses and for the parts of a ``$batch`` answer.
    ``headers`` must look names up case-insensitively. Tolerant of HTML, other JSON and empty bodies:
    the message is then the body's text (300 characters, whitespace collapsed), else ``reason``."""
    code, message, inner = "", "", ""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        innererror = error.get("innererror")
        if isinstance(innererror, dict):
            inner = str(innererror.get("message") or "")
    else:
        text = body.decode("utf-8", "replace")
        message = " ".join(text.split())[:300] or reason or "no response body"
    cls = _class_for(status)
    return cls(
        message,
        status=status,
        code=code,
        inner_message=inner,
        method=method,
        url=url,
        request_id=request_id,
        service_request_id=headers.get("x-ms-service-request-id") or headers.get("REQ_ID") or "",
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )


def error_from_response(response: requests.Response) -> ApiError:
    """Build the typed exception for a non-2xx response (``error_from_bytes`` with the request's details)."""
    request = response.request
    return error_from_bytes(
        response.status_code,
        response.headers,
        response.content or b"",
        reason=response.reason or "",
        method=(request.method or "") if request is not None else "",
        url=(request.url or "") if request is not None else "",
        request_id=request.headers.get("x-ms-client-request-id", "") if request is not None else "",
    )
