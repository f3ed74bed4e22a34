"""Typed errors from status, headers and body bytes (docs/protocol-notes.md §2.2, §3.4): pure, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from shared.dataverse.client import LookupMissingError
from shared.http import errors
from shared.http.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    CredentialError,
    NotFoundError,
    PreconditionFailedError,
    ServerError,
    ThrottledError,
    TransportError,
    UnaddressableKeyError,
    error_from_bytes,
    is_fatal,
)


def headers(**values: str) -> CaseInsensitiveDict[str]:
    return CaseInsensitiveDict({name.replace("_", "-"): value for name, value in values.items()})


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(("status", "error_type"), [
    (400, BadRequestError), (401, AuthError), (403, AuthError), (404, NotFoundError), (405, BadRequestError),
    (412, PreconditionFailedError), (413, BadRequestError), (429, ThrottledError), (500, ServerError),
    (501, ServerError), (503, ServerError),
])
def test_the_status_alone_picks_the_error_type(status: int, error_type: type[ApiError]) -> None:
    error = error_from_bytes(status, headers(), b"")
    assert type(error) is error_type and error.status == status


def test_a_dataverse_error_body_gives_code_message_and_ids() -> None:
    error = error_from_bytes(
        429, headers(**{"x-ms-service-request-id": "svc-1", "Retry-After": "12"}),
        body({"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit of 6000"}}),
        method="PATCH", url="https://org/api/data/v9.2/x", request_id="req-1")
    assert (error.code, error.reason, error.service_request_id, error.request_id, error.retry_after) == (
        "0x80072322", "Number of requests exceeded the limit of 6000", "svc-1", "req-1", 12.0)
    assert str(error) == ("PATCH https://org/api/data/v9.2/x -> 429 [0x80072322]: "
                          "Number of requests exceeded the limit of 6000")


def test_header_names_are_matched_whatever_their_case() -> None:
    error = error_from_bytes(400, CaseInsensitiveDict({"req_id": "5ecd1cb3", "retry-after": "3"}), b"")
    assert (error.service_request_id, error.retry_after) == ("5ecd1cb3", 3.0)


def test_the_fo_infolog_in_innererror_is_the_reason() -> None:
    error = error_from_bytes(400, headers(), body({"error": {"code": "", "message": "An error has occurred.",
                                                             "innererror": {"message": "Write failed. Infolog: x"}}}))
    assert (error.server_message, error.inner_message, error.reason) == (
        "An error has occurred.", "Write failed. Infolog: x", "Write failed. Infolog: x")


@pytest.mark.parametrize(("raw", "message"), [
    (b"<html>\r\n  <body>Bad   Gateway</body>\n</html>", "<html> <body>Bad Gateway</body> </html>"),
    (b"[1, 2]", "[1, 2]"),  # JSON, but no OData error object
    (b'{"error": "text"}', '{"error": "text"}'),
    (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    (b"", "Bad Gateway"),  # no body: the status line's reason
])
def test_a_body_that_is_no_odata_error_is_kept_as_text(raw: bytes, message: str) -> None:
    error = error_from_bytes(502, headers(), raw, reason="Bad Gateway")
    assert (type(error), error.code, error.reason) == (ServerError, "", message)


def test_a_long_text_body_is_cut_and_no_body_nor_reason_says_so() -> None:
    assert len(error_from_bytes(500, headers(), b"x" * 1000).reason) == 300
    assert error_from_bytes(500, headers(), b"").reason == "no response body"


def test_every_error_type_names_its_own_error_class() -> None:
    known = {errors.VALIDATION, errors.LOOKUP_MISSING, errors.NOT_FOUND, errors.CONFLICT, errors.THROTTLED,
             errors.SERVER, errors.AUTH, errors.TRANSPORT, errors.UNADDRESSABLE}
    types: list[type[ApiError]] = [ApiError]
    for cls in types:
        types.extend(cls.__subclasses__())
    assert LookupMissingError in types and CredentialError in types
    assert {cls.__name__ for cls in types if "error_class" not in vars(cls)} == set()
    assert {cls.error_class for cls in types} <= known


@pytest.mark.parametrize("exc", [AuthError("denied", status=403), CredentialError("AADSTS700016"),
                                 error_from_bytes(401, headers(), b"")])
def test_auth_and_credential_failures_are_fatal(exc: BaseException) -> None:
    assert is_fatal(exc)


@pytest.mark.parametrize("exc", [BadRequestError("x"), NotFoundError("x"), PreconditionFailedError("x"),
                                 ThrottledError("x"), ServerError("x"), TransportError("x"), UnaddressableKeyError("x"),
                                 LookupMissingError("x"), ApiError("x"), ValueError("x"), KeyError("x")])
def test_every_other_failure_is_not_fatal(exc: BaseException) -> None:
    assert not is_fatal(exc)
