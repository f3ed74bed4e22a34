"""Dataverse ``$batch`` (docs/protocol-notes.md §2.9): independent operations with ``continue-on-error``.

Used to isolate records when a bulk request fails as a whole: each record is its own part (no change
set), so one bad record fails only its part. Hand-written because the multipart framing is small and
no maintained Python package speaks OData's batch format.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from shared.http.errors import ApiError, error_from_bytes

MAX_PARTS = 1000


@dataclass(frozen=True)
class BatchPart:
    method: str
    path: str  # relative to the service root, e.g. msdyn_loyaltycards(msdyn_cardnumber='X')
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()  # e.g. (("If-Match", "*"),): update only, 404 when missing


@dataclass(frozen=True)
class PartResult:
    status: int
    error: ApiError | None


def build(base_path: str, parts: Sequence[BatchPart]) -> tuple[str, bytes]:
    """The multipart body and its boundary; ``base_path`` like ``/api/data/v9.2/``."""
    if len(parts) > MAX_PARTS:
        raise ValueError(f"a $batch holds at most {MAX_PARTS} operations")
    boundary = f"batch_{uuid.uuid4()}"
    lines: list[str] = []
    for index, part in enumerate(parts, start=1):
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary",
                  f"Content-ID: {index}", "", f"{part.method} {base_path}{part.path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in part.headers]
        if part.body is not None:
            lines += ["Content-Type: application/json; type=entry", "", json.dumps(part.body)]
        else:
            lines += [""]
    lines += [f"--{boundary}--", ""]
    return boundary, "\r\n".join(lines).encode("utf-8")


_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})[ \t]*([^\r\n]*)")


def parse(response: requests.Response) -> list[PartResult]:
    """Each part's status (and typed error) in request order."""
    return parse_parts(response.headers.get("Content-Type", ""), response.content, outer_status=response.status_code)


def parse_parts(content_type: str, content: bytes, *, outer_status: int = 200) -> list[PartResult]:
    """``parse`` on the raw answer: its ``Content-Type`` (for the boundary) and its body. A failed part
    becomes the same typed error a whole response with that status, headers and body would."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ApiError("the $batch answer is not multipart", status=outer_status)
    delimiter = b"--" + match.group(1).encode()
    results: list[PartResult] = []
    for chunk in content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        http = chunk.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in chunk else chunk.split(b"\n\n", 1)[-1]
        http = http.lstrip(b"\r\n")
        status_match = _STATUS.match(http)
        if not status_match:
            raise ApiError("a $batch part has no status line", status=outer_status)
        status = int(status_match.group(1))
        error = None
        if status >= 400:
            sep = b"\r\n\r\n" if b"\r\n\r\n" in http else b"\n\n"
            head, _, body = http.partition(sep)
            headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
            for line in head.decode("utf-8", "replace").splitlines()[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip()] = value.strip()
            error = error_from_bytes(status, headers, body.strip(), reason=status_match.group(2).decode("latin-1"),
                                     method="$batch part")
        results.append(PartResult(status, error))
    return results
