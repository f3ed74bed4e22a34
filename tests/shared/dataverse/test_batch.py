"""The ``$batch`` answer parsed into per-part typed errors (docs/protocol-notes.md §2.9): pure, no server."""

from __future__ import annotations

import json

import pytest
from requests.structures import CaseInsensitiveDict

from shared.dataverse.batch import parse_parts
from shared.http.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    NotFoundError,
    PreconditionFailedError,
    ServerError,
    error_from_bytes,
)

BOUNDARY = "batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a"
VALIDATION = {"error": {"code": "0x80044331", "message": (
    "A validation error occurred.  The length of the 'subject' attribute of the 'task' entity exceeded the maximum "
    "allowed length of '200'.")}}


def answer(*parts: str, newline: str = "\r\n") -> bytes:
    """A continue-on-error answer: each part's HTTP message after the part headers, as Dataverse frames it."""
    chunks = [f"--{BOUNDARY}{newline}Content-Type: application/http{newline}Content-Transfer-Encoding: binary{newline}"
              f"{newline}{part.replace(chr(10), newline)}{newline}" for part in parts]
    return ("".join(chunks) + f"--{BOUNDARY}--{newline}").encode()


NO_CONTENT = "HTTP/1.1 204 No Content\nOData-Version: 4.0\n"
BAD_REQUEST = ("HTTP/1.1 400 Bad Request\nREQ_ID: 5ecd1cb3-1730-4ffc-909c-d44c22270026\n"
               "Content-Type: application/json; odata.metadata=minimal\nOData-Version: 4.0\n\n" + json.dumps(VALIDATION))


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_each_part_has_its_status_and_a_failed_part_its_typed_error(newline: str) -> None:
    results = parse_parts(f"multipart/mixed; boundary={BOUNDARY}",
                          answer(NO_CONTENT, BAD_REQUEST, NO_CONTENT, newline=newline))
    assert [r.status for r in results] == [204, 400, 204]
    assert [r.error for r in results][0::2] == [None, None]
    error = results[1].error
    assert isinstance(error, BadRequestError)
    assert (error.code, error.reason, error.service_request_id) == (
        "0x80044331", VALIDATION["error"]["message"], "5ecd1cb3-1730-4ffc-909c-d44c22270026")


def test_a_part_error_is_the_error_a_whole_response_would_be() -> None:
    """One parser: a failed part and a whole response with the same status, headers and body agree."""
    fo_body = json.dumps({"error": {"code": "", "message": "An error has occurred.",
                                    "innererror": {"message": "Write failed. Infolog: Error: Card exists."}}})
    part = f"HTTP/1.1 412 Precondition Failed\nRetry-After: 4\nx-ms-service-request-id: svc-9\n\n{fo_body}"
    [result] = parse_parts(f'multipart/mixed; boundary="{BOUNDARY}"', answer(part))
    whole = error_from_bytes(412, CaseInsensitiveDict({"Retry-After": "4", "x-ms-service-request-id": "svc-9"}),
                             fo_body.encode(), method="$batch part")
    assert isinstance(result.error, PreconditionFailedError)
    assert vars(result.error) == vars(whole) and str(result.error) == str(whole)
    assert result.error.reason == "Write failed. Infolog: Error: Card exists."


@pytest.mark.parametrize(("part", "error_type", "reason"), [
    ("HTTP/1.1 404 Not Found\nOData-Version: 4.0\n", NotFoundError, "Not Found"),
    ("HTTP/1.1 403 Forbidden\n\n", AuthError, "Forbidden"),
    ("HTTP/1.1 502 Bad Gateway\nContent-Type: text/html\n\n<html>\n <b>Bad   Gateway</b>\n</html>", ServerError,
     "<html> <b>Bad Gateway</b> </html>"),
])
def test_a_part_without_an_odata_error_body_keeps_its_text_or_reason(part: str, error_type: type[ApiError],
                                                                     reason: str) -> None:
    [result] = parse_parts(f"multipart/mixed; boundary={BOUNDARY}", answer(part))
    assert type(result.error) is error_type and result.error.reason == reason


def test_an_answer_that_is_not_multipart_is_an_error() -> None:
    with pytest.raises(ApiError, match="not multipart"):
        parse_parts("application/json", json.dumps(VALIDATION).encode(), outer_status=400)


def test_a_part_without_a_status_line_is_an_error() -> None:
    with pytest.raises(ApiError, match="no status line"):
        parse_parts(f"multipart/mixed; boundary={BOUNDARY}", answer("not http at all\n"))
