"""Writes mapped records into Dataverse: alternate-key upserts with lookups bound by ``@odata.bind``.

A key whose data holds ``/ < > * % & : \\ ? +`` cannot be used in a key URL, ``@odata.id`` or ``@odata.bind``
(docs/protocol-notes.md §2.5): such a record is found with ``$filter`` on its key columns, then updated by its primary
key (``PATCH set(<guid>)`` with ``If-Match: *``), or created with ``POST`` and the key columns in the body,
and deleted by its primary key. Every other record goes by alternate key, in bulk where it can.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from shared.dataverse.client import RECORD_NOT_FOUND_BY_KEY, DataverseClient, LookupMissingError
from shared.http.errors import ApiError, NotFoundError, raise_fatal, record_error
from shared.http.urls import DATAVERSE_KEY_UNSAFE, addressable, literal
from shared.mapping.plan import COMPANY_COLUMN, DataverseRecord, LookupValue, Plan
from shared.sync.fallback import Step, bulk_refused_by_table, next_step


def _classify(error: ApiError | None) -> ApiError | None:
    """A 404 0x80060891 on a write means a lookup's parent row is missing."""
    if isinstance(error, NotFoundError) and error.code == RECORD_NOT_FOUND_BY_KEY:
        return LookupMissingError(error.reason, status=404, code=error.code, method=error.method, url=error.url)
    return error


class DataverseWriter:
    """Turns a ``DataverseRecord`` into ``PATCH set(alternate key)`` with the mapped columns."""

    def __init__(self, client: DataverseClient, plan: Plan) -> None:
        self.client = client
        self.plan = plan
        dv = plan.template.dataverse
        self.entity_set = dv.entity_set
        self.company = dv.company
        # A key part that is a lookup is addressed as _<nav>_value=<guid> (docs/protocol-notes.md §2.5).
        self.company_key = f"_{self.company.navigation_property.lower()}_value" if self.company else None
        self.guid_columns = frozenset({self.company_key} if self.company_key else set())
        self.logical_name = dv.logical_name
        self.primary_id = dv.primary_id
        self.bulk_enabled = True
        self._bulk_refusals = 0

    def company_guid(self, company: str) -> str:
        assert self.company is not None
        return self.client.resolve(self.company.entity_set, self.company.primary_id, self.company.match_column,
                                   company.upper())

    def dataverse_key(self, record_columns: dict[str, Any], company: str | None) -> dict[str, Any]:
        key: dict[str, Any] = {}
        for column in self.plan.alternate_key_columns:
            if self.company is not None and column == self.company.navigation_property:
                assert company is not None and self.company_key is not None
                key[self.company_key] = self.company_guid(company)
            else:
                key[column] = self.plan.dataverse_literal(column, record_columns[column])  # a date bare, not quoted
        return key

    def key_for(self, key: tuple[str, ...]) -> dict[str, Any]:
        """The Dataverse alternate key for an F&O key (for deletes, where no row is at hand)."""
        fo = self.plan.key_as_dict(key)
        columns = {dv: fo[prop] for dv, prop in self.plan.dataverse_key_properties.items()}
        return self.dataverse_key(columns, self.plan.company_of(key))

    def body(self, record: DataverseRecord, only: frozenset[str] | None = None, *, with_key: bool = False) -> dict[str, Any]:
        """The request body: every mapped column, or ``only`` these (and the company binding only when
        ``COMPANY_COLUMN`` is among them). Key columns, a company lookup that is part of the key included,
        go only in the key URL (docs/protocol-notes.md §2.5, §2.10: in the body too, UpsertMultiple's create path
        fails with 0x80040216); ``with_key`` puts them in the body, for a ``POST`` create."""
        body: dict[str, Any] = {}
        key_columns = set(self.plan.alternate_key_columns)
        for column, value in record.columns.items():
            if (column in key_columns and not with_key) or (only is not None and column not in only):
                continue
            if isinstance(value, LookupValue):
                spec = value.spec
                if spec.bind == "key" and addressable({spec.match_column: value.match_value}, DATAVERSE_KEY_UNSAFE):
                    # By the referenced table's alternate key: no read (docs/protocol-notes.md §2.6).
                    body[f"{spec.navigation_property}@odata.bind"] = (
                        f"/{spec.entity_set}({spec.match_column}={literal(value.match_value)})")
                    continue
                guid = self.client.resolve(spec.entity_set, spec.primary_id, spec.match_column, value.match_value)
                body[f"{spec.navigation_property}@odata.bind"] = f"/{spec.entity_set}({guid})"
            elif value is None and self._is_lookup(column):
                body[f"{column}@odata.bind"] = None  # clears the lookup (inferred)
            else:
                body[column] = value
        company_in_key = self.company is not None and self.company.navigation_property in key_columns
        if (self.company is not None and record.company is not None and (with_key or not company_in_key)
                and (only is None or COMPANY_COLUMN in only)):
            body[f"{self.company.navigation_property}@odata.bind"] = (
                f"/{self.company.entity_set}({self.company_guid(record.company)})"
            )
        return body

    def _is_lookup(self, column: str) -> bool:
        return any(row.lookup is not None and row.lookup.navigation_property == column for row in self.plan.template.fields)

    def upsert(self, record: DataverseRecord) -> None:
        key = self.dataverse_key(record.columns, record.company)
        try:
            if not addressable(key, DATAVERSE_KEY_UNSAFE):
                self._write_by_id(self.client, record, key, None)
                return
            self.client.upsert(self.entity_set, key, self.body(record), guid_columns=self.guid_columns)
        except NotFoundError as exc:
            if exc.code == RECORD_NOT_FOUND_BY_KEY:
                # A cached lookup GUID whose row was deleted: forget the cache so the next try re-resolves.
                self.client.forget_lookups()
                raise LookupMissingError(exc.reason, status=404, code=exc.code, method=exc.method, url=exc.url) from exc
            raise

    def read(self, key: dict[str, Any], select: list[str]) -> dict[str, Any] | None:
        """The Dataverse row with this alternate key (None when there is none): by key URL, or by ``$filter``
        when the key holds a character a key URL cannot carry."""
        if addressable(key, DATAVERSE_KEY_UNSAFE):
            return self.client.get(self.entity_set, key, select=select, guid_columns=self.guid_columns)
        return self.client.find(self.entity_set, key, select=select, guid_columns=self.guid_columns)

    def _write_by_id(self, writer: DataverseClient, record: DataverseRecord, key: dict[str, Any],
                     only: frozenset[str] | None) -> None:
        """A record whose key cannot be addressed: ``$filter`` for its row, then ``PATCH set(<guid>)`` with
        ``If-Match: *`` (only the ``only`` columns, when given), or ``POST`` with the key columns when there
        is no row (or it was deleted between the read and the write)."""
        row = writer.find(self.entity_set, key, select=[self.primary_id], guid_columns=self.guid_columns)
        if row is not None:
            try:
                writer.update_by_id(self.entity_set, str(row[self.primary_id]), self.body(record, only))
                return
            except NotFoundError as exc:
                if exc.code == RECORD_NOT_FOUND_BY_KEY:
                    raise  # a lookup's parent is missing (classified by the caller)
        writer.create(self.entity_set, self.body(record, with_key=True))

    def _write_each_by_id(self, writer: DataverseClient, records: list[DataverseRecord],
                          changed: list[frozenset[str] | None], indexes: list[int],
                          errors: list[ApiError | None]) -> None:
        for i in indexes:
            every = len(records[i].columns) + 1
            only = changed[i] if changed[i] and len(changed[i] or ()) < every else None
            key = self.dataverse_key(records[i].columns, records[i].company)
            errors[i] = _classify(record_error(partial(self._write_by_id, writer, records[i], key, only)))

    def upsert_many(self, records: list[DataverseRecord], *, client: DataverseClient | None = None,
                    changed: list[frozenset[str] | None] | None = None) -> list[ApiError | None]:
        """Write many records; one error (or None) per record, in order.

        ``changed`` names, per record, the columns that changed since the last write (None: send every
        column). Records with some columns changed go as updates of those columns only: one ``$batch`` of
        ``PATCH`` with ``If-Match: *`` and ``continue-on-error``. ``If-Match`` makes a row deleted in
        Dataverse answer 404 instead of coming back half-empty (which the two-way side would read as an
        edit); such records, like new ones, are then written whole.

        Whole records: first ``UpsertMultiple`` (one request, all-or-nothing on standard tables); when it
        fails, the same records as independent parts of one ``$batch`` with ``continue-on-error`` (so only
        the bad ones fail); when that fails as a whole, one request per record. Throttling or transport
        failures that outlast the HTTP core's retries are not fallen back from: the whole chunk gets that
        error (and is parked). Three refusals of a bulk request whose records then all succeed one by one
        mean the table does not take bulk messages: bulk is switched off for it (docs/protocol-notes.md §2.10).
        """
        writer = client or self.client  # the identity this chunk goes out as; lookups resolve through the main one
        errors: list[ApiError | None] = [None] * len(records)
        changed = changed or [None] * len(records)
        every = len(records[0].columns) + 1 if records else 0
        by_id = [i for i, r in enumerate(records) if not self._key_addressable(r)]
        if by_id:
            self._write_each_by_id(writer, records, changed, by_id, errors)
        skip = set(by_id)
        by_key = [i for i in range(len(records)) if i not in skip]
        partial = [i for i in by_key if changed[i] and len(changed[i] or ()) < every]
        whole = [i for i in by_key if not (changed[i] and len(changed[i] or ()) < every)]
        if partial:
            whole += self._update_columns(writer, records, changed, partial, errors)
        if whole:
            whole.sort()
            for i, error in zip(whole, self._write_whole(writer, [records[i] for i in whole]), strict=True):
                errors[i] = error
        return errors

    def _update_columns(self, writer: DataverseClient, records: list[DataverseRecord],
                        changed: list[frozenset[str] | None], indexes: list[int],
                        errors: list[ApiError | None]) -> list[int]:
        """Send only the changed columns of ``indexes``; returns the ones to write whole after all."""
        targets: list[tuple[dict[str, Any], dict[str, Any]]] = []
        sent: list[int] = []
        for i in indexes:
            try:
                targets.append((self.dataverse_key(records[i].columns, records[i].company),
                                self.body(records[i], changed[i])))
                sent.append(i)
            except ApiError as exc:
                errors[i] = exc
        if not targets:
            return []
        try:
            results = writer.batch_upserts(self.entity_set, targets, guid_columns=self.guid_columns, update_only=True)
        except ApiError as exc:
            if next_step(Step.BATCH, exc) is None:
                for i in sent:
                    errors[i] = exc
                return []
            return sent  # the $batch itself was refused: write these whole
        raise_fatal(results)
        again: list[int] = []
        for i, error in zip(sent, results, strict=True):
            if isinstance(error, NotFoundError):
                again.append(i)  # deleted in Dataverse (or a lookup's parent is missing): write it whole
            else:
                errors[i] = _classify(error)
        return again

    def _attempt(self, step: Step, writer: DataverseClient,
                 targets: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[ApiError | None]:
        """Write ``targets`` whole in one ``step``; per-record errors, or raise when the step failed as a whole."""
        if step is Step.BULK:
            writer.upsert_multiple(self.entity_set, self.logical_name, targets, guid_columns=self.guid_columns)
            return [None] * len(targets)
        if step is Step.BATCH:
            results = writer.batch_upserts(self.entity_set, targets, guid_columns=self.guid_columns)
            raise_fatal(results)
            return results
        return [record_error(partial(writer.upsert, self.entity_set, key, body, guid_columns=self.guid_columns))
                for key, body in targets]

    def _write_whole(self, writer: DataverseClient, records: list[DataverseRecord]) -> list[ApiError | None]:
        errors: list[ApiError | None] = [None] * len(records)
        prepared: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
        for index, record in enumerate(records):
            try:
                prepared.append((index, self.dataverse_key(record.columns, record.company), self.body(record)))
            except ApiError as exc:
                errors[index] = exc
        if not prepared:
            return errors
        targets = [(key, body) for _, key, body in prepared]
        step: Step | None = Step.BULK if self.bulk_enabled else Step.BATCH
        failed: Step | None = None
        results: list[ApiError | None] = []
        while step is not None:
            try:
                results = self._attempt(step, writer, targets)
                break
            except ApiError as exc:
                failed = failed or step
                step = next_step(step, exc)
                results = [exc] * len(targets)  # kept when there is no finer step: the whole chunk is parked
        if bulk_refused_by_table(failed, results):
            self._bulk_refusals += 1
            if self._bulk_refusals >= 3:
                self.bulk_enabled = False
        for (index, _, _), error in zip(prepared, results, strict=True):
            errors[index] = _classify(error)
        return errors

    def _key_addressable(self, record: DataverseRecord) -> bool:
        key_columns = self.plan.alternate_key_columns
        return addressable({c: record.columns[c] for c in key_columns if c in record.columns}, DATAVERSE_KEY_UNSAFE)

    def delete(self, key: tuple[str, ...]) -> bool:
        dv_key = self.key_for(key)
        if addressable(dv_key, DATAVERSE_KEY_UNSAFE):
            return self.client.delete(self.entity_set, dv_key, guid_columns=self.guid_columns)
        row = self.client.find(self.entity_set, dv_key, select=[self.primary_id], guid_columns=self.guid_columns)
        return row is not None and self.client.delete_by_id(self.entity_set, str(row[self.primary_id]))
