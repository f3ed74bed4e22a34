"""Key values that OData writes bare, not quoted: date key parts (``shared.http.urls.literal`` renders them).

A module of its own: the plans make them (``shared.mapping``) and the URL code renders them (``shared.http``), two
layers that do not import each other.
"""

from __future__ import annotations


class DateTimeOffsetLiteral(str):
    """A date key part as F&O OData addresses it: a bare ``Edm.DateTimeOffset`` (``ValidFrom=2024-01-01T00:00:00Z``,
    never quoted: docs/protocol-notes.md §3.1). A bare date (``2024-01-01``) stands for midnight UTC, how F&O exposes a
    date field (docs/domain-notes.md §6, inferred); a full value F&O sent is rendered exactly as sent, so keyset
    paging (``gt <last>``) never re-reads or skips a row over a time part. Still a ``str`` everywhere else."""

    def odata(self) -> str:
        return str(self) if "T" in self else f"{self}T00:00:00Z"


class DateLiteral(str):
    """A date key part as Dataverse addresses a date-only column: a bare ``Edm.Date`` (``lsync_validfrom=2024-01-01``;
    date-only columns are ``Edm.Date`` in the Web API, inferred from the ``DateOnly`` behaviour). Still a ``str``."""

    def odata(self) -> str:
        return str(self)[:10]
