"""multipart/mixed framing used by $batch (emulators.common.multipart, docs/protocol-notes.md §2.9)."""

from __future__ import annotations

import pytest

from emulators.common.multipart import (
    MultipartError,
    boundary_of,
    parse_http_request,
    parse_http_response,
    render_multipart,
    split_multipart,
)

BODY = (
    "--b1\n"
    "Content-Type: application/http\n"
    "Content-Transfer-Encoding: binary\n"
    "Content-ID: 1\n"
    "\n"
    "POST /api/data/v9.2/tasks HTTP/1.1\n"
    "Content-Type: application/json; type=entry\n"
    "\n"
    '{"subject": "x"}\n'
    "--b1\n"
    "Content-Type: application/http\n"
    "\n"
    "GET /api/data/v9.2/tasks HTTP/1.1\n"
    "\n"
    "\n"
    "--b1--\n"
)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/mixed; boundary="batch_22975cad-7f57-410d-be15-6363209367ea"', "batch_22975cad-7f57-410d-be15-6363209367ea"),
        ("multipart/mixed; boundary=batchresponse_f27ef42d", "batchresponse_f27ef42d"),
        ("multipart/mixed;boundary=x; charset=utf-8", "x"),
    ],
)
def test_boundary_is_read_quoted_or_unquoted(content_type: str, boundary: str) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_parts_split_the_same_with_lf_or_crlf(newline: str) -> None:
    parts = split_multipart(BODY.replace("\n", newline).encode(), "b1")
    assert [p.header("Content-ID") for p in parts] == ["1", None]
    first = parse_http_request(parts[0].content)
    assert (first.method, first.target, first.body) == ("POST", "/api/data/v9.2/tasks", b'{"subject": "x"}')
    second = parse_http_request(parts[1].content)
    assert (second.method, second.body) == ("GET", b"")


def test_missing_closing_delimiter_is_an_error() -> None:
    with pytest.raises(MultipartError):
        split_multipart(b"--b1\nContent-Type: application/http\n\nGET / HTTP/1.1\n", "b1")


def test_malformed_request_line_is_an_error() -> None:
    with pytest.raises(MultipartError):
        parse_http_request(b"NOT A REQUEST\n\n")


def test_render_then_split_round_trips() -> None:
    rendered = render_multipart("r", [b"Content-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n"])
    assert rendered.endswith(b"--r--\r\n")
    part = split_multipart(rendered, "r")[0]
    response = parse_http_response(part.content)
    assert (response.status, response.reason, response.body) == (204, "No Content", b"")
