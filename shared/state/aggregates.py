"""``<prefix>aggregates``: what an aggregate template (``kind: aggregate``) keeps besides the synced states.

* **Due index**: per group key's first part (a card), the day its folded records change with no new source line
  (a line vests or expires, or enters the expiring-soon horizon). Row key ``<yyyymmdd>|<card>`` in partitions
  ``<template>.due~<bucket>`` (hashed like the synced states, so no partition grows with the whole table), so the
  cards due by a day are one range query per bucket. Entries are never updated in place: a card whose due day
  moves gets a new entry, and an old one only costs a recompute that finds nothing changed.
* **Pool index**: partitions ``<template>.pool~<bucket>``, row key ``<customer>|<card>``: the cards whose lines name
  a customer with a pooled tender ("As contact tender"), so an incremental pass finds a customer's cards without
  reading Commerce (F&O may have no index on the customer of a transaction line: inferred).
* **Incremental mark**: partition ``<template>.mark``: the newest watermark value (``EntryDate`` and time) an
  incremental pass read, and the digests of the source lines it read at or after ``mark - overlap`` (the window
  the next pass reads again), so lines read before are not taken for new ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from shared.state.keys import bucket_of, decode_key, encode_key
from shared.state.transactions import MAX_OPERATIONS, Operation, submit

_DIGEST_CHUNK = 60_000  # bytes per binary property (Table Storage holds 64 KiB)
_MAX_CHUNKS = 15  # properties per entity: about 112,000 line digests (1 MiB per entity)


@dataclass
class IncrementalMark:
    """Where an aggregate's incremental pass resumes: the newest watermark it read (ISO date-time, "" before the
    first pass) and the 8-byte digests of the lines it read in the window it will read again."""

    newest: str = ""
    digests: bytes = b""
    etag: str | None = field(default=None, repr=False)


class AggregateState:
    def __init__(self, table: TableClient, buckets: int = 16) -> None:
        self.table = table
        self.buckets = buckets

    # -- due index --------------------------------------------------------------------------------------------

    def _due_pk(self, template: str, card: str) -> str:
        return f"{template}.due~{bucket_of(card, self.buckets):02x}"

    def add_due(self, template: str, due: dict[str, date]) -> None:
        """Record the day each card is due (upserts, in entity-group transactions per partition)."""
        by_pk: dict[str, list[Operation]] = {}
        for card, day in due.items():
            row_key = f"{day.strftime('%Y%m%d')}|{encode_key((card,))}"
            pk = self._due_pk(template, encode_key((card,)))
            by_pk.setdefault(pk, []).append(Operation("upsert", {"PartitionKey": pk, "RowKey": row_key}))
        for operations in by_pk.values():
            for start in range(0, len(operations), MAX_OPERATIONS):
                submit(self.table, operations[start:start + MAX_OPERATIONS])

    def due_through(self, template: str, day: date) -> Iterator[tuple[str, str, str]]:
        """(partition, row key, card) of every entry due on or before ``day``, streamed."""
        stop = (day.strftime("%Y%m%d") + "|~")
        for bucket in range(self.buckets):
            pk = f"{template}.due~{bucket:02x}"
            for entity in self.table.query_entities("PartitionKey eq @pk and RowKey le @stop",
                                                    parameters={"pk": pk, "stop": stop}, select=["RowKey"]):
                row_key = entity["RowKey"]
                yield pk, row_key, decode_key(row_key.split("|", 1)[1])[0]

    def remove_due(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """Drop due entries that were handled (entries already gone are fine)."""
        by_pk: dict[str, list[Operation]] = {}
        for pk, row_key, _ in entries:
            by_pk.setdefault(pk, []).append(Operation("delete", {"PartitionKey": pk, "RowKey": row_key}))
        for pk, operations in by_pk.items():
            for start in range(0, len(operations), MAX_OPERATIONS):
                chunk = operations[start:start + MAX_OPERATIONS]
                try:
                    submit(self.table, chunk)
                except Exception:  # one was gone already: delete one by one
                    for op in chunk:
                        with contextlib.suppress(ResourceNotFoundError):
                            self.table.delete_entity(pk, op.entity["RowKey"])

    def due_count(self, template: str) -> int:
        return sum(1 for bucket in range(self.buckets)
                   for _ in self.table.query_entities("PartitionKey eq @pk",
                                                      parameters={"pk": f"{template}.due~{bucket:02x}"},
                                                      select=["RowKey"]))

    # -- pool index: the cards of each pooled customer ---------------------------------------------------------

    def _pool_pk(self, template: str, customer: str) -> str:
        return f"{template}.pool~{bucket_of(encode_key((customer,)), self.buckets):02x}"

    def add_pool(self, template: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Record that each (customer, card) pooled: the card's lines name that customer with a pooled tender."""
        by_pk: dict[str, list[Operation]] = {}
        for customer, card in set(pairs):
            pk = self._pool_pk(template, customer)
            row_key = f"{encode_key((customer,))}|{encode_key((card,))}"
            by_pk.setdefault(pk, []).append(Operation("upsert", {"PartitionKey": pk, "RowKey": row_key}))
        for operations in by_pk.values():
            for start in range(0, len(operations), MAX_OPERATIONS):
                submit(self.table, operations[start:start + MAX_OPERATIONS])

    def pooled_cards(self, template: str, customers: Iterable[str]) -> dict[str, set[str]]:
        """The cards recorded for each customer (a customer with none recorded is left out)."""
        found: dict[str, set[str]] = {}
        for customer in set(customers):
            prefix = f"{encode_key((customer,))}|"
            query = self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": self._pool_pk(template, customer), "low": prefix, "high": prefix[:-1] + "}"},
                select=["RowKey"])
            for entity in query:
                found.setdefault(customer, set()).add(decode_key(entity["RowKey"].split("|", 1)[1])[0])
        return found

    # -- incremental mark -------------------------------------------------------------------------------------

    def mark(self, template: str) -> IncrementalMark:
        try:
            entity = self.table.get_entity(f"{template}.mark", "incremental")
        except ResourceNotFoundError:
            return IncrementalMark()
        chunks = [entity.get(f"digests{n:02d}") or b"" for n in range(_MAX_CHUNKS)]
        return IncrementalMark(entity.get("newest", ""), b"".join(bytes(c) for c in chunks),
                               entity.metadata.get("etag"))

    def save_mark(self, template: str, mark: IncrementalMark) -> None:
        """Save the mark (last writer wins: the pass that saves it holds the scope's lease). Digests beyond what one
        entity holds are dropped: those lines are taken for new by the next pass (a recompute that finds nothing)."""
        data = mark.digests[:_DIGEST_CHUNK * _MAX_CHUNKS]
        entity: dict[str, Any] = {"PartitionKey": f"{template}.mark", "RowKey": "incremental", "newest": mark.newest}
        for n in range(_MAX_CHUNKS):
            entity[f"digests{n:02d}"] = data[n * _DIGEST_CHUNK:(n + 1) * _DIGEST_CHUNK]
        self.table.upsert_entity(entity)

    def drop(self, template: str) -> None:
        """Forget the template's due index and mark (a rebuild from nothing)."""
        partitions = [f"{template}.mark", *(f"{template}.{kind}~{b:02x}" for kind in ("due", "pool")
                                             for b in range(self.buckets))]
        for pk in partitions:
            for entity in list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                         select=["RowKey"])):
                with contextlib.suppress(ResourceNotFoundError):
                    self.table.delete_entity(pk, entity["RowKey"])
