"""``multipart/mixed`` framing of OData ``$batch`` (docs/protocol-notes.md §2.9 Dataverse, §3.2 F&O).

Parsing is lenient the way servers are: the boundary parameter may be quoted or not, lines
may end with CRLF or LF, a preamble before the first delimiter and an epilogue after the
closing one are ignored. Each body part is a MIME header block, a blank line and content;
``application/http`` content is itself an HTTP request (request line, headers, blank line,
body). Writing always uses CRLF.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CRLF",
    "HttpMessage",
    "MultipartError",
    "Part",
    "boundary_of",
    "parse_http_request",
    "parse_http_response",
    "render_multipart",
    "split_multipart",
]

CRLF = b"\r\n"
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class MultipartError(ValueError):
    """Malformed multipart body or embedded HTTP message."""


def _parse_headers(block: bytes) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for raw in re.split(rb"\r?\n", block):
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError(f"Malformed header line '{line}'.")
        headers.append((name.strip(), value.strip()))
    return headers


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the first blank line (no blank line: everything is head)."""
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    if data.startswith(b"\n"):
        return b"", data[1:]
    match = _BLANK_LINE.search(data)
    if match is None:
        return data, b""
    return data[: match.start()], data[match.end() :]


@dataclass
class Part:
    """One body part: its MIME headers and its content."""

    headers: list[tuple[str, str]]
    content: bytes

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").strip()


@dataclass
class HttpMessage:
    """An HTTP request (``method``/``target``) or response (``status``/``reason``)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


def boundary_of(content_type: str) -> str | None:
    """The ``boundary`` parameter of a multipart Content-Type, quoted or not."""
    match = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;,\s]+))', content_type, flags=re.IGNORECASE)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The body parts between ``--boundary`` delimiters (the line break before a delimiter
    belongs to the delimiter, RFC 2046 §5.1.1). Raises :class:`MultipartError` without a
    closing delimiter."""
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("utf-8")) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[Part] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            head, content = _split_head(body[start : match.start()])
            parts.append(Part(_parse_headers(head), content))
        if match.group(1):
            return parts
        start = match.end()
    raise MultipartError(f"The multipart body has no closing delimiter '--{boundary}--'.")


def parse_http_request(data: bytes) -> HttpMessage:
    """``METHOD target HTTP/1.1`` + headers + blank line + body (trailing line breaks of
    the body are dropped)."""
    data = data.lstrip(b"\r\n")
    line_end = re.search(rb"\r?\n", data)
    request_line = (data[: line_end.start()] if line_end else data).decode("utf-8", "replace")
    rest = data[line_end.end() :] if line_end else b""
    pieces = request_line.split()
    if len(pieces) != 3 or not pieces[2].upper().startswith("HTTP/"):
        raise MultipartError(f"Malformed request line '{request_line}' in a batch part.")
    head, body = _split_head(rest)
    return HttpMessage(_parse_headers(head), body.rstrip(b"\r\n"), method=pieces[0].upper(), target=pieces[1])


def parse_http_response(data: bytes) -> HttpMessage:
    """A raw HTTP/1.1 response (status line, headers, body) as written by a handler."""
    head, body = _split_head(data)
    lines = re.split(rb"\r?\n", head, maxsplit=1)
    status_line = lines[0].decode("latin-1")
    pieces = status_line.split(" ", 2)
    if len(pieces) < 2 or not pieces[1].isdigit():
        raise MultipartError(f"Malformed status line '{status_line}'.")
    headers = _parse_headers(lines[1]) if len(lines) > 1 else []
    return HttpMessage(headers, body, status=int(pieces[1]), reason=pieces[2] if len(pieces) > 2 else "")


def render_multipart(boundary: str, parts: Iterable[bytes]) -> bytes:
    """``--boundary CRLF <part>`` for each part, then ``--boundary-- CRLF``. Each rendered
    part must end with the line break that precedes the next delimiter."""
    delimiter = b"--" + boundary.encode("ascii")
    out = bytearray()
    for part in parts:
        out += delimiter + CRLF + part
    out += delimiter + b"--" + CRLF
    return bytes(out)
