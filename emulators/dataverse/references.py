"""Addressing rows: resource paths, key segments and ``@odata.bind`` references.

docs/protocol-notes.md §2.5 (key URL syntax: primary key, single and multi-part alternate keys, keys
that include a lookup as ``_<attr>_value=<guid>``) and §2.6 (``@odata.bind`` values by GUID or
alternate key, leading slash optional, absolute URLs allowed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from emulators.common.odata import ODataQueryError, format_key, parse_key_segment

from . import errors
from .schema import ColumnType, Lookup, Table
from .store import Row, Store

API_PREFIX = "/api/data/v9.2/"
_GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class EntityRef:
    """A single row addressed by primary id or by an alternate key."""

    table: Table
    row_id: str | None = None
    key_pairs: tuple[tuple[str, Any], ...] = ()

    @property
    def by_key(self) -> bool:
        return self.row_id is None

    @property
    def key(self) -> dict[str, Any]:
        return dict(self.key_pairs)

    def segment(self) -> str:
        """``set(<guid>)`` or ``set(k='v',...)``: the form used in ``OData-EntityId``."""
        inner = self.row_id if self.row_id is not None else format_key(self.key_pairs)
        return f"{self.table.entity_set}({inner})"


def relative_entity_path(url: str) -> str | None:
    """``set(key)``, ``/set(key)``, ``/api/data/v9.2/set(key)`` or an absolute URL → the path after
    the Web API root; None for an absolute URL outside the Web API.

    ``@odata.id`` and ``@odata.bind`` are JSON values, not request paths: they are taken as they are, never
    percent-decoded (docs/protocol-notes.md §2.5: Microsoft's Python SDK sends the raw literal; whether Dataverse decodes
    them is not documented). A client that percent-encodes a key there gets ``%`` in its key, which no key
    URL can carry: refused below instead of creating a row whose key is literally ``LC%207``."""
    path = url.strip()
    if "://" in path:
        index = path.find(API_PREFIX)
        if index < 0:
            return None
        path = path[index + len(API_PREFIX) :]
    else:
        path = path.lstrip("/")
        if path.startswith(API_PREFIX.lstrip("/")):
            path = path[len(API_PREFIX) - 1 :]
    return path


def split_resource_path(path: str) -> tuple[str, str | None, str]:
    """Split ``set(key)/rest`` (percent-decoded) into ``(set, key or None, rest)``.

    Parentheses and slashes inside single-quoted key values are data.
    """
    match = re.match(r"[^(/]*", path)
    name = match.group() if match else ""
    pos = len(name)
    if pos >= len(path) or path[pos] == "/":
        return name, None, path[pos + 1 :]
    in_quote = False
    for index in range(pos + 1, len(path)):
        ch = path[index]
        if ch == "'":
            in_quote = not in_quote  # a doubled quote toggles twice
        elif ch == ")" and not in_quote:
            rest = path[index + 1 :]
            if rest and not rest.startswith("/"):
                raise errors.bad_request(f"Bad Request - Error in query syntax: '{path}'.")
            return name, path[pos + 1 : index], rest[1:]
    raise errors.bad_request(f"Bad Request - Error in query syntax: '{path}'.")


# docs/protocol-notes.md §2.5: alternate-key data holding one of these cannot be used in a key URL.
KEY_UNSAFE = frozenset("/<>*%&:\\?+")


def _quoted(key_text: str, name: str | None) -> bool:
    """Whether the value of ``name`` (None: the single unnamed value) is a quoted string literal."""
    if name is None:
        return key_text.lstrip().startswith("'")
    return re.search(rf"(?:^|,)\s*{re.escape(name)}\s*=\s*'", key_text) is not None


def _check_key_value(table: Table, name: str, value: Any, key_text: str) -> Any:
    column_type = table.property_type(name)
    if column_type is ColumnType.GUID:
        # A GUID is a bare literal: quoted, it is an Edm.String that does not convert (inferred wording).
        if not isinstance(value, str) or not _GUID_RE.fullmatch(value) or _quoted(key_text, name):
            raise errors.conversion_error(value, "Edm.Guid")
    elif column_type is ColumnType.STRING and not isinstance(value, str):
        raise errors.conversion_error(value, "Edm.String")
    elif column_type is ColumnType.DATE:
        # A date-only column is Edm.Date: a bare 2024-01-01; quoted it is an Edm.String that does not convert (inferred
        # wording, as for GUIDs). Stored as YYYY-MM-DD, so the key compares as that text.
        if not isinstance(value, date) or isinstance(value, datetime):
            raise errors.conversion_error(value, "Edm.Date")
        return value.isoformat()
    if isinstance(value, str) and not KEY_UNSAFE.isdisjoint(value):
        raise errors.unaddressable_key(table, value)
    return value


def resolve_key(table: Table, key_text: str) -> EntityRef:
    """Turn the inside of ``set(...)`` into an :class:`EntityRef` (§2.5).

    Names must match the primary id or exactly one declared alternate key, otherwise the
    documented "The key in the request URI is not valid" 400.
    """
    try:
        pairs = parse_key_segment(key_text)
    except ODataQueryError as exc:
        raise errors.bad_request(str(exc)) from exc
    if len(pairs) == 1 and pairs[0][0] in (None, table.primary_id):
        value = pairs[0][1]
        if not isinstance(value, str) or not _GUID_RE.fullmatch(value):
            raise errors.invalid_key(table)
        if _quoted(key_text, pairs[0][0]):
            raise errors.conversion_error(value, "Edm.Guid")  # set('<guid>'): a string, not a GUID (inferred)
        return EntityRef(table, row_id=value)
    names = {name for name, _ in pairs}
    for key in table.alternate_keys:
        if names == set(key):
            checked = tuple((str(n), _check_key_value(table, str(n), v, key_text)) for n, v in pairs)
            return EntityRef(table, key_pairs=checked)
    raise errors.invalid_key(table)


def find_row(store: Store, ref: EntityRef) -> Row | None:
    if ref.row_id is not None:
        return store.get(ref.table.entity_set, ref.row_id)
    return store.find_by_key(ref.table.entity_set, ref.key)


def not_found(ref: EntityRef) -> Exception:
    """The 404 for a missing row: 0x80040217 by id, 0x80060891 by alternate key."""
    if ref.row_id is not None:
        return errors.not_found_by_id(ref.table, ref.row_id)
    return errors.not_found_by_key(ref.table)


def require_row(store: Store, ref: EntityRef) -> Row:
    row = find_row(store, ref)
    if row is None:
        raise not_found(ref)
    return row


def resolve_bind(store: Store, lookup: Lookup, reference: str) -> str:
    """Resolve an ``@odata.bind`` value to the target row's id (§2.6).

    Accepts ``/set(<guid>)``, ``set(key='v')`` and absolute ``https://host/api/data/v9.2/set(...)``.
    Unknown target rows: 404 (0x80040217 by id, 0x80060891 by key).
    """
    path = relative_entity_path(reference)
    if path is None:
        raise errors.bad_request(f"The @odata.bind value '{reference}' is not a valid entity URL.")
    entity_set, key_text, rest = split_resource_path(path)
    if key_text is None or rest:
        raise errors.bad_request(f"The @odata.bind value '{reference}' is not a valid entity URL.")
    target = store.table(entity_set)
    if target is None:
        raise errors.resource_not_found(entity_set)
    if entity_set != lookup.target_set:
        # Inferred wording: the real server rejects binding a lookup to another table.
        raise errors.bad_request(
            f"The navigation property '{lookup.navigation_property}' refers to '{lookup.target_set}', not '{entity_set}'.",
            code=errors.PAYLOAD_ERROR,
        )
    row = require_row(store, resolve_key(target, key_text))
    return str(row[target.primary_id])


def lookup_target_exists(store: Store, lookup: Lookup, row_id: str) -> None:
    """404 unless ``row_id`` exists in the lookup's target table (creating through a key
    URL that names ``_<attr>_value``: the platform checks the reference; inferred)."""
    target = store.tables[lookup.target_set]
    if store.get(target.entity_set, row_id) is None:
        raise errors.not_found_by_id(target, row_id)
