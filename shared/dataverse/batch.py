"""Dataverse ``$batch`` (protocols.md §2.9): independent operations with ``continue-on-error``.

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

from shared.http.errors import ApiError, _class_for

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


_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")


def parse(response: requests.Response) -> list[PartResult]:
    """Each part's status (and typed error) in request order."""
    match = re.search(r'boundary="?([^";]+)"?', response.headers.get("Content-Type", ""))
    if not match:
        raise ApiError("the $batch answer is not multipart", status=response.status_code)
    delimiter = b"--" + match.group(1).encode()
    results: list[PartResult] = []
    for chunk in response.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        http = chunk.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in chunk else chunk.split(b"\n\n", 1)[-1]
        http = http.lstrip(b"\r\n")
        status_match = _STATUS.match(http)
        if not status_match:
            raise ApiError("a $batch part has no status line", status=response.status_code)
        status = int(status_match.group(1))
        error = None
        if status >= 400:
            sep = b"\r\n\r\n" if b"\r\n\r\n" in http else b"\n\n"
            body = http.split(sep, 1)[1].strip() if sep in http else b""
            code = message = ""
            try:
                parsed = json.loads(body) if body else {}
                code = str(parsed.get("error", {}).get("code") or "")
                message = str(parsed.get("error", {}).get("message") or "")
            except ValueError:
                message = body.decode("utf-8", "replace")[:300]
            error = _class_for(status)(message or f"HTTP {status}", status=status, code=code, method="$batch part")
        results.append(PartResult(status, error))
    return results
