"""OData URL pieces: literals and key segments, escaped by OData rules (docs/protocol-notes.md §2.5, §3.1)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from shared.literals import DateLiteral, DateTimeOffsetLiteral

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# In a path segment keep the OData punctuation; '/', '?', '#', '%', spaces and the rest are encoded.
_PATH_SAFE = "'(),=_-.~:@!$*;"


def literal(value: Any, *, guid: bool = False) -> str:
    """An OData literal: strings single-quoted with ``'`` doubled; numbers, booleans, GUIDs and dates bare."""
    if isinstance(value, (DateTimeOffsetLiteral, DateLiteral)):
        return value.odata()
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
        [(name, value)] = key.items()
        inner = literal(value, guid=name in guid_columns)
    else:
        inner = ",".join(f"{name}={literal(value, guid=name in guid_columns)}" for name, value in key.items())
    return f"{entity_set}({quote(inner, safe=_PATH_SAFE)})"


# Characters that make alternate-key data unusable in a Dataverse key URL: "retrieve (GET), update, or upsert
# (PATCH) actions don't work" (docs/protocol-notes.md §2.5, define-alternate-keys-entity.md). The same characters inside
# @odata.id or @odata.bind are treated as equally unsafe (inferred: those are key URLs too).
DATAVERSE_KEY_UNSAFE = frozenset("/<>*%&:\\?+")
# F&O routes the decoded path before it reads the key: '/' (and '\', which IIS turns into '/') in a key
# answers 404 "No route data was found for this request." (docs/protocol-notes.md §3.1; third-party report, not documented).
FO_KEY_UNSAFE = frozenset("/\\")


def addressable(key: Mapping[str, Any], unsafe: frozenset[str]) -> bool:
    """True when no string value of ``key`` holds a character of ``unsafe`` (a date is a bare literal, not data)."""
    return not any(isinstance(value, str) and not isinstance(value, (DateTimeOffsetLiteral, DateLiteral))
                   and not unsafe.isdisjoint(value) for value in key.values())


def odata_id(entity_set: str, key: Mapping[str, Any], *, guid_columns: frozenset[str] = frozenset()) -> str:
    """``set(a='x',b=<guid>)`` as a JSON value (``@odata.id``): the raw OData literal, quotes doubled and
    nothing percent-encoded, as Microsoft's Python SDK builds it (docs/protocol-notes.md §2.5, DVPY ``_odata.py``)."""
    inner = ",".join(f"{name}={literal(value, guid=name in guid_columns)}" for name, value in key.items())
    return f"{entity_set}({inner})"


def filter_equal(key: Mapping[str, Any], *, guid_columns: frozenset[str] = frozenset()) -> str:
    """``a eq 'x' and b eq <guid>``: a ``$filter`` that finds the row a key names."""
    return " and ".join(f"{name} eq {literal(value, guid=name in guid_columns)}" for name, value in key.items())
