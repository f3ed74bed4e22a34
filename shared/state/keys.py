"""Row keys and small helpers shared by the state tables: Commerce keys as Table Storage row keys, parked
records' direction prefix, hash buckets, Int64 properties, and the one concurrency error."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote, unquote

from azure.data.tables import EdmType, EntityProperty

# RowKey may not hold / \ # ? or control characters; '|' separates key parts and '%' escapes.
_ROWKEY_SAFE = " !\"$&'()*+,-.:;<=>@[]^_`{}~"
MAX_TEXT = 32_000  # a Table Storage string property holds 64 KiB (32K UTF-16 characters)


def encode_key(parts: tuple[str, ...]) -> str:
    return "|".join(quote(part, safe=_ROWKEY_SAFE) for part in parts)


def decode_key(row_key: str) -> tuple[str, ...]:
    return tuple(unquote(part) for part in row_key.split("|"))


def int64(value: int) -> EntityProperty:
    """Table Storage keeps a plain int as Int32; ControlNumber and counters need Int64."""
    return EntityProperty(value, EdmType.INT64)


def plain(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value or 0)


# Parked records of the Dataverse -> F&O direction get this prefix: '%' is always escaped by encode_key,
# so no Commerce key can collide with it, and each direction's failure stays its own record.
INBOUND_PARKED_PREFIX = "%in%"


def parked_key(row_key: str, direction: str) -> str:
    return f"{INBOUND_PARKED_PREFIX}{row_key}" if direction == "dataverse_to_fo" else row_key


def split_parked_key(parked: str) -> tuple[str, str]:
    """(direction, row key) of a parked record's RowKey."""
    if parked.startswith(INBOUND_PARKED_PREFIX):
        return "dataverse_to_fo", parked[len(INBOUND_PARKED_PREFIX):]
    return "fo_to_dataverse", parked


class ConcurrencyConflict(Exception):
    """Someone else changed the state entity since it was read."""


def bucket_of(row_key: str, buckets: int) -> int:
    return hashlib.blake2b(row_key.encode("utf-8"), digest_size=2).digest()[0] % buckets if buckets > 1 else 0
