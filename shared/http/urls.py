"""OData URL pieces: literals and key segments, escaped by OData rules (protocols.md §2.5, §3.1)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# In a path segment keep the OData punctuation; '/', '?', '#', '%', spaces and the rest are encoded.
_PATH_SAFE = "'(),=_-.~:@!$*;"


def literal(value: Any, *, guid: bool = False) -> str:
    """An OData literal: strings single-quoted with ``'`` doubled; numbers, booleans and GUIDs bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    text = str(value)
    if guid:
        if not _GUID.match(text):
            raise ValueError(f"{text!r} is not a GUID")
        return text
    return "'" + text.replace("'", "''") + "'"


def key_segment(entity_set: str, key: Mapping[str, Any], *, guid_columns: frozenset[str] = frozenset(),
                named: bool = True) -> str:
    """``set(a='x',b=2)``, or ``set('x')`` for a single key with ``named=False``; percent-encoded for a path."""
    if not named and len(key) == 1:
        inner = literal(next(iter(key.values())))
    else:
        inner = ",".join(f"{name}={literal(value, guid=name in guid_columns)}" for name, value in key.items())
    return f"{entity_set}({quote(inner, safe=_PATH_SAFE)})"
