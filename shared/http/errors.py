"""OData error bodies parsed into typed exceptions (protocols.md §2.2 and §3.4)."""

from __future__ import annotations

import json
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
    """A failed call to Dataverse or F&O, with what the server said."""

    error_class = SERVER

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
    protocols.md §3.1). Never sent, so never applied to another row; the record is parked with this reason."""

    error_class = UNADDRESSABLE


class BadRequestError(ApiError):
    error_class = VALIDATION


class AuthError(ApiError):
    error_class = AUTH


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


def error_from_response(response: requests.Response) -> ApiError:
    """Build the typed exception for a non-2xx response; tolerant of HTML and empty bodies."""
    code, message, inner = "", "", ""
    text = response.text or ""
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        innererror = error.get("innererror")
        if isinstance(innererror, dict):
            inner = str(innererror.get("message") or "")
    else:
        message = " ".join(text.split())[:300] or response.reason or "no response body"
    request = response.request
    cls = _class_for(response.status_code)
    return cls(
        message,
        status=response.status_code,
        code=code,
        inner_message=inner,
        method=request.method or "" if request is not None else "",
        url=request.url or "" if request is not None else "",
        request_id=(request.headers.get("x-ms-client-request-id", "") if request is not None else ""),
        service_request_id=response.headers.get("x-ms-service-request-id") or response.headers.get("REQ_ID", ""),
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )
