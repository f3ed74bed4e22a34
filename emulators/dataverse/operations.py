"""Row operations independent of HTTP framing: create, upsert/update, delete, ETags.

docs/protocol-notes.md §2.3 (create), §2.4 (update/delete), §2.5 (upsert semantics by alternate key),
§2.7 (ETags and conditional writes). Kept free of request/response details so that
``$batch`` and the bulk actions (later issues) can reuse them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import errors
from .payload import check_required, parse_payload
from .references import EntityRef, find_row, lookup_target_exists, not_found
from .schema import Table
from .store import Row, Store

_ETAG_RE = re.compile(r'(?:W/)?"(\d+)"')


def etag_of(row: Row) -> str:
    """Weak ETag of a row: ``W/"<versionnumber>"`` (§2.7)."""
    return f'W/"{row["versionnumber"]}"'


def precondition(value: str | None) -> str | None:
    """Normalise an ``If-Match``/``If-None-Match`` header: ``null``/empty mean "absent"
    (clients send ``If-None-Match: null``, §2.1)."""
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "null") else value


def etag_matches(header: str, row: Row) -> bool:
    """``*`` matches any row; otherwise one of the listed ETags must equal the row's."""
    if header == "*":
        return True
    return any(int(v) == row["versionnumber"] for v in _ETAG_RE.findall(header))


@dataclass(frozen=True)
class WriteResult:
    row: Row
    created: bool


def _check_unique(store: Store, table: Table, candidate: dict[str, Any], exclude_id: str | None) -> None:
    if store.find_key_conflict(table.entity_set, candidate, exclude_id=exclude_id) is not None:
        raise errors.duplicate_record()


def create(store: Store, table: Table, body: Any) -> Row:
    """``POST set`` (§2.3): validate, enforce required columns and unique keys, insert."""
    with store.lock:
        payload = parse_payload(store, table, body)
        check_required(table, payload.values, creating=True)
        if payload.row_id is not None and store.get(table.entity_set, payload.row_id) is not None:
            raise errors.duplicate_record()
        _check_unique(store, table, payload.values, exclude_id=None)
        return store.insert(table.entity_set, payload.values, row_id=payload.row_id)


def upsert(
    store: Store,
    ref: EntityRef,
    body: Any,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
) -> WriteResult:
    """``PATCH set(id|key)`` (§2.4, §2.5, §2.7).

    * no precondition: upsert; ``If-Match: *``/ETag: update only (404 when missing, 412 on
      a stale ETag); ``If-None-Match: *``: create only (412 when the row exists);
    * update through a key URL: the key's columns in the body are dropped;
    * create through a key URL: key columns missing from the body are copied from the URL
      (body values win).
    """
    table = ref.table
    if_match, if_none_match = precondition(if_match), precondition(if_none_match)
    with store.lock:
        payload = parse_payload(store, table, body)
        existing = find_row(store, ref)
        if existing is None:
            if if_match is not None:
                raise not_found(ref)
            values = dict(payload.values)
            row_id = ref.row_id or payload.row_id
            for name, value in ref.key_pairs:
                if name not in values:
                    lookup = table.lookup_by_value_property.get(name)
                    if lookup is not None:
                        lookup_target_exists(store, lookup, value)
                    values[name] = value
            check_required(table, values, creating=True)
            if row_id is not None and store.get(table.entity_set, row_id) is not None:
                raise errors.duplicate_record()
            _check_unique(store, table, values, exclude_id=None)
            return WriteResult(store.insert(table.entity_set, values, row_id=row_id), created=True)

        if if_none_match == "*":
            raise errors.duplicate_record()
        if if_match is not None and not etag_matches(if_match, existing):
            raise errors.version_mismatch()
        changes = {k: v for k, v in payload.values.items() if k not in ref.key}
        check_required(table, changes, creating=False)
        row_id = existing[table.primary_id]
        _check_unique(store, table, {**existing, **changes}, exclude_id=row_id)
        return WriteResult(store.update(table.entity_set, row_id, changes), created=False)


def delete(store: Store, ref: EntityRef, *, if_match: str | None = None) -> Row:
    """``DELETE set(id|key)`` (§2.4): 404 when missing, 412 on a stale ``If-Match``."""
    if_match = precondition(if_match)
    with store.lock:
        existing = find_row(store, ref)
        if existing is None:
            raise not_found(ref)
        if if_match is not None and not etag_matches(if_match, existing):
            raise errors.version_mismatch()
        store.delete(ref.table.entity_set, existing[ref.table.primary_id])
        return existing
