"""``POST /api/data/v9.2/$batch`` (docs/protocol-notes.md §2.9, checklist §5.1).

* Request: ``multipart/mixed`` (boundary quoted or not, CRLF or LF); top-level parts are
  ``application/http`` requests or ``multipart/mixed`` change sets. At most 1,000 operations
  (else 400); no nested ``$batch``; ``GET`` is not allowed in a change set (400).
* Every operation runs through the same routing and handlers as a single request
  (:meth:`EmulatorRequestHandler.dispatch_virtual`, hence :mod:`.operations`), sequentially,
  with the batch's ``Authorization``. Inner URLs may be absolute, ``/api/data/v9.2/...``,
  relative to the service root (inferred) or start with a ``$<Content-ID>`` reference.
* Change sets are atomic (:class:`Transaction`): the first failure rolls the set back and the
  set answers with that single error part. ``$<n>`` references (URL or ``@odata.bind`` /
  ``@odata.id`` values) resolve to entities created earlier *in the same change set* (OData
  4.0 rule); anything else is the 400 "Content-ID Reference: '$n' does not exist in the
  batch context.".
* Without ``Prefer: odata.continue-on-error`` the batch stops at the first failure and the
  outer status is that failure's (status line with the .NET reason, e.g. ``400 BadRequest``,
  as in the documented example); with it the outer status is 200 and later parts run.
* Response: ``multipart/mixed; boundary=batchresponse_<guid>``, change sets as
  ``changesetresponse_<guid>`` (unquoted), ``Content-ID`` echoed; inner parts carry
  ``OData-EntityId`` (+ ``Location`` for creates); inner errors carry ``REQ_ID``.
* Service protection: the batch is one request; its whole execution time counts and each
  inner write that succeeded (even if its change set was later rolled back) adds a record
  (``records_written``); a bulk action inside the batch adds its targets.
* Fault kind ``batch_partial`` (:mod:`emulators.common.faults`): the rule's ``operation``-th
  operation (1-based, in request order) fails with the rule's status instead of running.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from emulators.common.faults import BATCH_KINDS, FaultRule
from emulators.common.multipart import (
    CRLF,
    HttpMessage,
    MultipartError,
    Part,
    boundary_of,
    parse_http_request,
    parse_http_response,
    render_multipart,
    split_multipart,
)
from emulators.common.server import EmulatorHTTPError

from . import errors
from .references import API_PREFIX
from .transactions import Transaction

if TYPE_CHECKING:
    from .server import DataverseRequestHandler

BATCH_PATTERN = r"/api/data/v9\.2/\$batch"
MAX_OPERATIONS = 1000
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_CHANGESET_METHODS = _WRITE_METHODS
_DROPPED_HEADERS = frozenset({"server", "date", "content-length", "connection", "keep-alive"})
_REFERENCE_RE = re.compile(r"\$([A-Za-z0-9_.\-]+)")
_ODATA_JSON = "application/json; odata.metadata=minimal"


# -- request model -----------------------------------------------------------------------


@dataclass
class Operation:
    """One inner request (``index`` is 1-based over the whole batch)."""

    index: int
    request: HttpMessage
    content_id: str | None


@dataclass
class ChangeSet:
    operations: list[Operation] = field(default_factory=list)


@dataclass
class Result:
    """One inner response, ready to render."""

    response: HttpMessage
    content_id: str | None = None
    entity_url: str | None = None
    records: int = 0

    @property
    def failed(self) -> bool:
        return self.response.status >= 400


def _bad_batch(message: str) -> EmulatorHTTPError:
    """A batch rejected as a whole (JSON error, not multipart). Texts inferred; the change
    set method text is Microsoft.OData's batch reader message."""
    return errors.bad_request(message, code=errors.INVALID_ARGUMENT)


def _operation(part: Part, index: int) -> Operation:
    if not part.content_type.lower().startswith("application/http"):
        raise _bad_batch(f"The batch part content type '{part.content_type}' is not supported; expected 'application/http'.")
    try:
        request = parse_http_request(part.content)
    except MultipartError as exc:
        raise _bad_batch(str(exc)) from None
    content_id = part.header("Content-ID") or request.header("Content-ID")
    path = request.target.split("?", 1)[0]
    if path.rstrip("/").endswith("$batch"):
        raise _bad_batch("A batch request cannot contain a nested $batch request.")
    return Operation(index, request, content_id.strip() if content_id else None)


def parse_batch(content_type: str, body: bytes) -> list[Operation | ChangeSet]:
    """The top-level items of a ``$batch`` body; raises a 400 on malformed framing, more than
    :data:`MAX_OPERATIONS` operations or a GET inside a change set."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise _bad_batch(f"The content type '{content_type}' is not supported for $batch; expected 'multipart/mixed'.")
    boundary = boundary_of(content_type)
    if not boundary:
        raise _bad_batch("The multipart/mixed Content-Type of a $batch request must have a boundary parameter.")
    try:
        parts = split_multipart(body, boundary)
    except MultipartError as exc:
        raise _bad_batch(str(exc)) from None
    items: list[Operation | ChangeSet] = []
    count = 0
    for part in parts:
        if part.content_type.lower().startswith("multipart/mixed"):
            inner = boundary_of(part.content_type)
            if not inner:
                raise _bad_batch("A change set part must have a boundary parameter.")
            try:
                inner_parts = split_multipart(part.content, inner)
            except MultipartError as exc:
                raise _bad_batch(str(exc)) from None
            changeset = ChangeSet()
            for inner_part in inner_parts:
                count += 1
                operation = _operation(inner_part, count)
                if operation.request.method not in _CHANGESET_METHODS:
                    raise _bad_batch(
                        f"An invalid HTTP method '{operation.request.method}' was detected for a request in a change "
                        f"set. Requests in change sets only support the HTTP methods 'POST', 'PUT', 'DELETE', and 'PATCH'."
                    )
                changeset.operations.append(operation)
            items.append(changeset)
        else:
            count += 1
            items.append(_operation(part, count))
    if count > MAX_OPERATIONS:
        raise _bad_batch(f"The number of operations in the batch ({count}) exceeds the limit of {MAX_OPERATIONS}.")
    return items


def _operations(items: list[Operation | ChangeSet]) -> Iterator[Operation]:
    for item in items:
        yield from item.operations if isinstance(item, ChangeSet) else [item]


# -- Content-ID references ---------------------------------------------------------------


class _UnknownReference(Exception):
    def __init__(self, reference: str) -> None:
        super().__init__(reference)
        self.reference = reference


def reference_error(reference: str) -> EmulatorHTTPError:
    """§2.9 documented text (code inferred)."""
    return errors.bad_request(
        f"Content-ID Reference: '{reference}' does not exist in the batch context.", code=errors.INVALID_ARGUMENT
    )


def _resolve_target(target: str, ids: dict[str, str]) -> str:
    """The inner request target as a server-relative path (``/api/data/v9.2/...``)."""
    if target.startswith("$"):
        match = _REFERENCE_RE.match(target)
        name = match.group(1) if match else ""
        if name not in ids:
            raise _UnknownReference(f"${name}")
        return ids[name] + target[len(name) + 1 :]
    if "://" in target:
        index = target.find(API_PREFIX)
        if index < 0:
            slash = target.find("/", target.find("://") + 3)
            return target[slash:] if slash >= 0 else "/"
        return target[index:]
    if target.startswith("/"):
        return target
    return API_PREFIX + target  # relative to the service root (inferred)


def _resolve_value(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_resolve_value(v, ids) for v in value]
    if isinstance(value, str) and value.startswith("$"):
        match = _REFERENCE_RE.match(value)
        name = match.group(1) if match else ""
        if name not in ids:
            raise _UnknownReference(f"${name}")
        return ids[name][len(API_PREFIX) - 1 :] + value[len(name) + 1 :]
    return value


def _resolve_body(request: HttpMessage, ids: dict[str, str]) -> bytes:
    """Replace ``$n`` in ``@odata.bind`` and ``@odata.id`` values of a JSON body."""
    if not request.body.strip() or b"$" not in request.body:
        return request.body
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return request.body  # the handler reports the malformed JSON
    if not isinstance(body, dict):
        return request.body
    changed = {
        key: _resolve_value(value, ids) if key.endswith("@odata.bind") or key == "@odata.id" else value
        for key, value in body.items()
    }
    return json.dumps(changed).encode("utf-8")


# -- running -----------------------------------------------------------------------------


class BatchRun:
    """Executes the parsed items of one ``$batch`` request for ``handler``."""

    def __init__(self, handler: DataverseRequestHandler, partial: FaultRule | None) -> None:
        self.handler = handler
        self.server = handler.server
        self.partial = partial
        self.records = 0

    def _virtual(self, request: HttpMessage, target: str, body: bytes) -> DataverseRequestHandler:
        headers = list(request.headers)
        if request.header("Authorization") is None:
            authorization = self.handler.header("Authorization")
            if authorization:
                headers.append(("Authorization", authorization))
        return type(self.handler).virtual(self.server, request.method, target, headers, body, self.handler.client_address)

    def _error_result(self, operation: Operation, err: EmulatorHTTPError) -> Result:
        inner = self._virtual(operation.request, API_PREFIX, b"")
        inner.method = operation.request.method
        inner.send_error_response(err)
        return Result(parse_http_response(inner.virtual_response()), operation.content_id)

    def run(self, operation: Operation, ids: dict[str, str]) -> Result:
        """Run one operation (``ids``: Content-ID → entity path usable for references)."""
        if self.partial is not None and operation.index == self.partial.operation:
            return self._error_result(operation, self.handler.fault_error(self.partial))
        try:
            target = _resolve_target(operation.request.target, ids)
            body = _resolve_body(operation.request, ids)
        except _UnknownReference as unknown:
            return self._error_result(operation, reference_error(unknown.reference))
        inner = self._virtual(operation.request, target, body)
        inner.dispatch_virtual()
        response = parse_http_response(inner.virtual_response())
        result = Result(response, operation.content_id)
        method = operation.request.method
        result.records = inner.records_written or (1 if method in _WRITE_METHODS and response.status < 300 else 0)
        self.records += result.records
        if not result.failed:
            result.entity_url = self._entity_url(response)
        return result

    def _entity_url(self, response: HttpMessage) -> str | None:
        """The created/addressed entity as a server-relative path (for ``$n``)."""
        url = response.header("OData-EntityId") or response.header("Location")
        if url is None and response.body:
            url = self._url_from_body(response.body)
        if url is None:
            return None
        index = url.find(API_PREFIX)
        return url[index:] if index >= 0 else None

    def _url_from_body(self, body: bytes) -> str | None:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        context = data.get("@odata.context") if isinstance(data, dict) else None
        if not isinstance(context, str) or not context.endswith("/$entity"):
            return None
        match = re.search(r"\$metadata#([A-Za-z0-9_]+)", context)
        table = self.server.store.table(match.group(1)) if match else None
        if table is None or not isinstance(data.get(table.primary_id), str):
            return None
        return f"{API_PREFIX}{table.entity_set}({data[table.primary_id]})"


# -- rendering ---------------------------------------------------------------------------


def _ordered_headers(response: HttpMessage, *, method: str) -> list[tuple[str, str]]:
    """Inner response headers in the order of the documented examples."""
    failed = response.status >= 400
    kept = [(n, v) for n, v in response.headers if n.lower() not in _DROPPED_HEADERS]
    if not failed:
        kept = [(n, v) for n, v in kept if n.lower() != "req_id"]
    if not failed and method == "POST" and response.header("Location") is None:
        entity_id = response.header("OData-EntityId")
        if entity_id is not None:
            kept.append(("Location", entity_id))
    order = ["req_id", "content-type", "odata-version", "location", "odata-entityid"]

    def rank(item: tuple[str, str]) -> int:
        name = item[0].lower()
        return order.index(name) if name in order else len(order)

    kept.sort(key=rank)
    if not failed:
        kept = [(n, f"{v}; odata.streaming=true" if n.lower() == "content-type" and v == _ODATA_JSON else v) for n, v in kept]
    return kept


def render_result(result: Result, method: str) -> bytes:
    """One ``application/http`` body part (ends with the line break before the next
    delimiter)."""
    head = [b"Content-Type: application/http", b"Content-Transfer-Encoding: binary"]
    if result.content_id is not None:
        head.append(f"Content-ID: {result.content_id}".encode())
    response = result.response
    lines = [f"HTTP/1.1 {response.status} {response.reason}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in _ordered_headers(response, method=method)]
    return CRLF.join(head) + CRLF + CRLF + CRLF.join(lines) + CRLF + CRLF + response.body + CRLF


def render_changeset(parts: list[bytes]) -> bytes:
    boundary = f"changesetresponse_{uuid.uuid4()}"
    header = f"Content-Type: multipart/mixed; boundary={boundary}".encode()
    return header + CRLF + CRLF + render_multipart(boundary, parts)


def dotnet_reason(status: int) -> str:
    """``BadRequest``, ``NotFound``, ``TooManyRequests``: the .NET ``HttpStatusCode`` name
    used in the documented outer status line (``HTTP/1.1 400 BadRequest``)."""
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return ""


# -- route -------------------------------------------------------------------------------


def handle_batch(handler: DataverseRequestHandler, match: re.Match[str]) -> None:
    """``POST $batch``: parse, run in order, answer ``multipart/mixed``."""
    items = parse_batch(handler.header("Content-Type") or "", handler.body)
    continue_on_error = "odata.continue-on-error" in handler.prefer()
    partial = handler.server.faults.pick(handler.route_name, handler.path_only, handler.method, kinds=BATCH_KINDS)
    run = BatchRun(handler, partial)
    parts: list[bytes] = []
    outer_status = 200
    for item in items:
        failure: Result | None = None
        if isinstance(item, ChangeSet):
            rendered, failure = _run_changeset(run, item)
            parts.append(rendered)
        else:
            result = run.run(item, {})
            parts.append(render_result(result, item.request.method))
            failure = result if result.failed else None
        if failure is not None and not continue_on_error:
            outer_status = failure.response.status
            break
    handler.records_written = run.records
    boundary = f"batchresponse_{uuid.uuid4()}"
    handler.send_bytes(
        outer_status,
        render_multipart(boundary, parts),
        content_type=f"multipart/mixed; boundary={boundary}",
        reason=None if outer_status == 200 else dotnet_reason(outer_status),
    )


def _run_changeset(run: BatchRun, changeset: ChangeSet) -> tuple[bytes, Result | None]:
    """All operations of a change set or none: on the first failure roll back and answer
    that error alone (§2.9 "A failing change set returns one error part")."""
    ids: dict[str, str] = {}
    results: list[tuple[Result, str]] = []
    with Transaction(run.server.store) as transaction:
        for operation in changeset.operations:
            result = run.run(operation, ids)
            if result.failed:
                transaction.rollback()
                return render_result(Result(result.response), operation.request.method), result
            if operation.content_id is not None and result.entity_url is not None:
                ids[operation.content_id] = result.entity_url
            results.append((result, operation.request.method))
    return render_changeset([render_result(r, method) for r, method in results]), None
