"""Change tracking (delta sync) of the Dataverse emulator (docs/protocol-notes.md §2.11, checklist §5.1).

Wire behaviour, as in the documented examples:

* ``GET <set>?$select=...`` with ``Prefer: odata.track-changes`` → ``Preference-Applied:
  odata.track-changes``, the current rows and ``@odata.deltaLink`` =
  ``<api>/<set>?<the request's query>&$deltatoken=<version>%21<MM%2fdd%2fyyyy%20HH%3amm%3ass>``.
  With ``Prefer: odata.maxpagesize`` (or more rows than the page-size cap) the initial read
  pages: ``@odata.nextLink`` with a ``$skiptoken`` cookie ``istracking="True"`` (inferred) and
  the deltaLink on the last page only. Follow nextLinks verbatim with the same ``Prefer``.
* Following a deltaLink (GET it verbatim) → ``@odata.context`` ending in ``/$delta``; first
  the changed rows in their CURRENT state (selected columns + primary id + ``@odata.etag``),
  ordered by their last change, then the deleted rows as
  ``{"@odata.context": "<api>$metadata#<set>/$deletedEntity", "id": "<guid>", "reason": "deleted"}``,
  and a new ``@odata.deltaLink``. A row appears once per poll however often it changed; a row
  created and deleted between two polls appears as deleted (documented). No changes →
  ``value: []`` plus a new deltaLink (inferred; the doc says "empty"). Delta responses are
  not paged (the emulator's simplification).
* Every deltaLink carries a new token (the emulator reserves a fresh store version per
  token). A token stays valid after a newer one was issued: following an OLD deltaLink again
  replays every change since that old point (the emulator's choice; Dataverse documents
  nothing either way). Delivery is at-least-once: a row changed while an initial paged read
  is in progress may show up both in a later page and in the first delta.
* ``$filter``, ``$orderby``, ``$expand`` and ``$top`` → 400 ``The "$filter" query parameter
  isn't supported when Change Tracking is enabled.`` (documented text; code inferred). Other
  options besides ``$select`` get the generic unsupported-option 400 (inferred).
* A table without ``change_tracking`` in :mod:`.schema` (the seeded ``transactioncurrencies``
  and ``cdm_companies``, by the emulator's choice) → 400 ``0x80072491`` ``Entity <logical
  name> isn't enabled for change tracking.`` (documented error-code list; status inferred).
* Expiry: :meth:`ChangeTracker.expire_all` (``POST /_emulator/change-tracking/expire``,
  ``DataverseServer.expire_delta_tokens()``) invalidates every token issued so far;
  ``expire_after_s`` expires tokens by age; ``POST /_emulator/reset`` expires the tokens of the
  tables it empties (their history is gone). A token this server never issued (e.g. one from
  an earlier emulator process) counts as expired too. Following an expired token → 400
  ``0x80044352`` ``Version stamp associated with the client has expired. Please perform a
  full sync.``: INFERRED for the Web API. The code and text are Dataverse's documented
  ``ExpiredVersionStamp`` error, which public SDK code shows for RetrieveEntityChanges (the
  SDK twin of ``$deltatoken``); the HTTP status is a guess. A client must re-baseline.
* A malformed token → 400 ``0x80040203`` (text inferred).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import quoteattr

from emulators.common.odata import sort_key
from emulators.common.server import EmulatorHTTPError

from . import errors
from .indexes import Bounds
from .query import check_options, parse_select
from .schema import Table
from .store import Row, Store

if TYPE_CHECKING:
    from .server import DataverseRequestHandler

TRACK_CHANGES = "odata.track-changes"
#: Rejected together with change tracking, with the documented message (§2.11).
REJECTED_OPTIONS = ("$filter", "$orderby", "$expand", "$top")
ALLOWED_OPTIONS = frozenset({"$select", "$deltatoken", "$skiptoken"})

CHANGE_TRACKING_NOT_ENABLED = "0x80072491"  # ChangeTrackingNotEnabledForEntity (documented code list)
EXPIRED_VERSION_STAMP = "0x80044352"  # ExpiredVersionStamp (documented code list)
EXPIRED_MESSAGE = "Version stamp associated with the client has expired. Please perform a full sync."

_TOKEN_TIME_FORMAT = "%m/%d/%Y %H:%M:%S"
_TOKEN_RE = re.compile(r"(\d{1,19})!(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})")


# -- errors ----------------------------------------------------------------------------------


def option_not_supported(option: str) -> EmulatorHTTPError:
    """§2.11 documented text (the code is inferred: the generic query-option code)."""
    return errors.bad_request(f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.')


def not_enabled(table: Table) -> EmulatorHTTPError:
    """Documented code and text (ChangeTrackingNotEnabledForEntity); the 400 status is inferred."""
    return errors.dataverse_error(
        400, CHANGE_TRACKING_NOT_ENABLED, f"Entity {table.logical_name} isn't enabled for change tracking."
    )


def token_expired() -> EmulatorHTTPError:
    """INFERRED for the Web API (see the module docstring): 400 + ExpiredVersionStamp."""
    return errors.dataverse_error(400, EXPIRED_VERSION_STAMP, EXPIRED_MESSAGE)


def token_invalid(token: str) -> EmulatorHTTPError:
    """A ``$deltatoken`` that does not parse (code InvalidArgument; text inferred)."""
    return errors.dataverse_error(
        400,
        errors.INVALID_ARGUMENT,
        f"The $deltatoken value '{token}' is not a valid change tracking token.",
    )


def _invalid_skiptoken() -> EmulatorHTTPError:
    return errors.bad_request("The $skiptoken value is not a valid paging cookie.")


# -- tokens ----------------------------------------------------------------------------------


def _percent_encode_lower(text: str) -> str:
    """.NET-style URL encoding with lower-case hex, as in the documented token
    (``919042%2108%2f22%2f2017%2008%3a10%3a44``)."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(text, safe=""))


def parse_token(text: str) -> int:
    """The version inside a (URL-decoded) ``$deltatoken``; 400 when malformed."""
    match = _TOKEN_RE.fullmatch(text)
    if match is None:
        raise token_invalid(text)
    try:
        datetime.strptime(match.group(2), _TOKEN_TIME_FORMAT)
    except ValueError as exc:
        raise token_invalid(text) from exc
    return int(match.group(1))


@dataclass(frozen=True)
class Delta:
    """What changed in a table since a token: current rows, then ids of deleted rows."""

    changed: list[Row]
    deleted: list[str]


class ChangeTracker:
    """Issues and checks delta tokens over a :class:`Store`'s change log.

    A token names a store version reserved with :meth:`Store.next_version` (so every token is
    new, and every later write has a higher version). The tracker remembers when it issued
    each version, for age-based expiry and to refuse tokens it never issued.
    """

    def __init__(
        self,
        store: Store,
        *,
        expire_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.expire_after_s = expire_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._issued: dict[int, float] = {}
        self._expired_through = 0

    def reserve(self) -> int:
        """A fresh version: the point a future token will replay changes from."""
        return self.store.next_version()

    def issue(self, version: int) -> str:
        """The URL-encoded ``$deltatoken`` for a reserved version."""
        with self._lock:
            self._issued.setdefault(version, self._clock())
        stamp = datetime.now(UTC).strftime(_TOKEN_TIME_FORMAT)
        return _percent_encode_lower(f"{version}!{stamp}")

    def expire_all(self) -> int:
        """Invalidate every token issued (or reserved) so far; returns the watermark version."""
        watermark = self.store.next_version()
        with self._lock:
            self._expired_through = watermark
            self._issued = {v: t for v, t in self._issued.items() if v > watermark}
        return watermark

    def check(self, table: Table, token: str) -> int:
        """The version of a valid, unexpired token for ``table``; raises the 400s otherwise."""
        version = parse_token(token)
        with self._lock:
            issued_at = self._issued.get(version)
            expired = version <= self._expired_through or issued_at is None
            if not expired and self.expire_after_s is not None and issued_at is not None:
                expired = self._clock() - issued_at > self.expire_after_s
        if expired or version <= self.store.change_log_floor.get(table.entity_set, 0):
            raise token_expired()
        return version

    def changes_since(self, table: Table, version: int) -> Delta:
        """Net changes after ``version``: each row once, ordered by its last change."""
        with self.store.lock:
            last_change: dict[str, int] = {}
            for change in self.store.changes_after(table.entity_set, version):
                last_change.pop(change.row_id, None)
                last_change[change.row_id] = change.version
            changed: list[Row] = []
            deleted: list[str] = []
            for row_id in last_change:
                row = self.store.get(table.entity_set, row_id)
                if row is None:
                    deleted.append(row_id)
                else:
                    changed.append(row)
            return Delta(changed, deleted)


# -- tracking paging cookie --------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingCookie:
    page_number: int
    last_id: str
    version: int


def _guid_attr(value: str) -> str:
    return "{" + value.upper() + "}"


def encode_tracking_skiptoken(table: Table, first_id: str, last_id: str, next_page: int, version: int) -> str:
    """Like the documented paging cookie, with ``istracking="True"`` (inferred); the inner
    cookie also carries the reserved version the final deltaLink will replay from."""
    inner = ET.Element("cookie", {"page": str(next_page - 1), "version": str(version)})
    ET.SubElement(inner, table.primary_id, {"last": _guid_attr(last_id), "first": _guid_attr(first_id)})
    inner_text = ET.tostring(inner, encoding="unicode", short_empty_elements=True)
    outer = (
        f"<cookie pagenumber={quoteattr(str(next_page))} "
        f'pagingcookie={quoteattr(_percent_encode_lower(inner_text))} istracking="True" />'
    )
    return quote(outer, safe="=/")


def is_tracking_skiptoken(text: str) -> bool:
    try:
        return ET.fromstring(text).attrib.get("istracking") == "True"
    except ET.ParseError:
        return False


def decode_tracking_skiptoken(table: Table, text: str) -> TrackingCookie:
    """Parse a tracking ``$skiptoken`` (already URL-decoded once)."""
    try:
        outer = ET.fromstring(text)
        if outer.attrib.get("istracking") != "True":
            raise _invalid_skiptoken()
        inner = ET.fromstring(unquote(outer.attrib["pagingcookie"]))
        element = inner.find(table.primary_id)
        if element is None:
            raise _invalid_skiptoken()
        return TrackingCookie(
            int(outer.attrib["pagenumber"]),
            element.attrib["last"].strip("{}").lower(),
            int(inner.attrib["version"]),
        )
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise _invalid_skiptoken() from exc


# -- HTTP ------------------------------------------------------------------------------------


def is_tracking_request(handler: DataverseRequestHandler) -> bool:
    """A ``GET <set>`` that change tracking answers: a ``$deltatoken``, ``Prefer:
    odata.track-changes`` or a tracking ``$skiptoken`` (a nextLink of a tracked read)."""
    names = [name for name, _ in handler.query_items]
    if "$deltatoken" in names or TRACK_CHANGES in handler.prefer():
        return True
    skiptoken = handler.query.get("$skiptoken")
    return skiptoken is not None and is_tracking_skiptoken(skiptoken)


def _options(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    for name, _ in items:
        if name in REJECTED_OPTIONS:
            raise option_not_supported(name)
    return check_options(items, ALLOWED_OPTIONS)


def _strip_params(raw_query: str, names: Iterable[str]) -> str:
    """The raw query string without the named parameters (other parts verbatim)."""
    dropped = set(names)
    kept = [part for part in raw_query.split("&") if part and unquote(part.split("=", 1)[0]) not in dropped]
    return "&".join(kept)


def _link(handler: DataverseRequestHandler, table: Table, name: str, value: str) -> str:
    kept = _strip_params(handler.raw_query, ("$skiptoken", "$deltatoken"))
    separator = "&" if kept else ""
    return f"{handler.server.api_url}{table.entity_set}?{kept}{separator}{name}={value}"


def get_tracked_collection(handler: DataverseRequestHandler, table: Table) -> None:
    """Serve an initial tracked read (or one of its pages) or a delta (§2.11)."""
    if not table.change_tracking:
        raise not_enabled(table)
    options = _options(handler.query_items)
    select = parse_select(table, options["$select"]) if "$select" in options else None
    tracker = handler.server.change_tracker
    if "$deltatoken" in options:
        if "$skiptoken" in options:
            raise _invalid_skiptoken()
        _send_delta(handler, table, select, tracker.check(table, options["$deltatoken"]))
        return
    _send_initial_page(handler, table, select, options.get("$skiptoken"))


def _preference_applied(handler: DataverseRequestHandler, page_size: int | None) -> dict[str, str]:
    applied = [TRACK_CHANGES]
    if page_size is not None:
        applied.append(f"odata.maxpagesize={page_size}")
    return {"Preference-Applied": ",".join(applied)}


def _send_initial_page(
    handler: DataverseRequestHandler, table: Table, select: Sequence[str] | None, skiptoken: str | None
) -> None:
    store = handler.server.store
    tracker = handler.server.change_tracker
    cap = handler.server.page_size_cap
    max_page = handler.prefer().get("odata.maxpagesize", "")
    applied_size = min(int(max_page), cap) if max_page.isdigit() and int(max_page) > 0 else None
    page_size = applied_size or cap
    with store.lock:
        if skiptoken is None:
            version, page_number, last_id = tracker.reserve(), 1, None
        else:
            cookie = decode_tracking_skiptoken(table, skiptoken)
            version, page_number, last_id = cookie.version, cookie.page_number, cookie.last_id
        # Rows in primary-id order, after the cookie's last id: a page and one more row (to know there are more),
        # read from the table's sorted primary-id index instead of sorting a copy of the table per page.
        index = store.sorted_index(table.entity_set, table.primary_id)
        bounds = Bounds(low=sort_key(last_id), low_inclusive=False) if last_id is not None else None
        rows = [dict(store.stored(table.entity_set, row_id))
                for row_id in itertools.islice(index.ids(bounds), page_size + 1)]
    page = rows[:page_size]

    body: dict[str, Any] = {"@odata.context": handler.context_url(table, select, entity=False)}
    more = len(rows) > page_size
    if not more:
        body["@odata.deltaLink"] = _link(handler, table, "$deltatoken", tracker.issue(version))
    body["value"] = [handler.represent(table, row, select) for row in page]
    if more:
        token = encode_tracking_skiptoken(
            table, str(page[0][table.primary_id]), str(page[-1][table.primary_id]), page_number + 1, version
        )
        body["@odata.nextLink"] = _link(handler, table, "$skiptoken", token)
    handler.send_json(200, body, headers=_preference_applied(handler, applied_size))


def _send_delta(handler: DataverseRequestHandler, table: Table, select: Sequence[str] | None, version: int) -> None:
    store = handler.server.store
    tracker = handler.server.change_tracker
    with store.lock:
        delta = tracker.changes_since(table, version)
        new_token = tracker.issue(tracker.reserve())
    deleted_context = f"{handler.server.api_url}$metadata#{table.entity_set}/$deletedEntity"
    body: dict[str, Any] = {
        "@odata.context": handler.context_url(table, select, entity=False) + "/$delta",
        "@odata.deltaLink": _link(handler, table, "$deltatoken", new_token),
        "value": [
            *(handler.represent(table, row, select) for row in delta.changed),
            *({"@odata.context": deleted_context, "id": row_id, "reason": "deleted"} for row_id in delta.deleted),
        ],
    }
    headers = {"Preference-Applied": TRACK_CHANGES} if TRACK_CHANGES in handler.prefer() else {}
    handler.send_json(200, body, headers=headers)
