"""Drift between the stores, as operators see and repair it; the same for the command line and the endpoints:
``reconcile`` (compare Commerce and Dataverse record by record, optionally repair), a sync's ``dry_run``
(what it would write, writing nothing) and ``resync`` (one record, whatever its hash says).

Findings are streamed to a sink as they are found (a template of a million records can hold a million
findings); the writers print them as text lines, JSON or CSV, and ``Collected`` keeps the first ``limit``
for an HTTP answer while the summaries count them all.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from shared.observability import log
from shared.runtime import Runtime
from shared.state.store import encode_key
from shared.sync.compare import Finding, Sink
from shared.sync.dryrun import DryRun, DryRunSummary
from shared.sync.reconcile import Reconciler, ReconcileSummary
from shared.sync.runs import Outcome, Progress

logger = logging.getLogger("loyaltysync.operations")
NOT_FOUND = "not_found"


def scopes(runtime: Runtime, template: str, companies: Sequence[str] = ()) -> list[str | None]:
    """The scopes to compare: the companies named, else ``SYNC_LEGAL_ENTITIES``, else F&O's ``LegalEntities``
    (``LegalEntitiesError`` when that read fails); one scope-less pass for a template that is not
    company-specific. Unlike a run, nothing about a failure is recorded: these commands write no state."""
    if not runtime.catalog.plan(template).company_specific:
        return [None]
    named = [c.lower() for c in companies] or [c.lower() for c in runtime.settings.legal_entities]
    return list(named or runtime.commerce.legal_entities())


def reconcile(runtime: Runtime, template: str, companies: Sequence[str] = (), *, repair: bool = False,
              sink: Sink, progress: Progress | None = None) -> list[ReconcileSummary]:
    reconciler = Reconciler(runtime.outbound(template))
    return [reconciler.run(company, sink, repair=repair, progress=progress)
            for company in scopes(runtime, template, companies)]


def dry_run(runtime: Runtime, template: str, companies: Sequence[str] = (), *, sink: Sink,
            progress: Progress | None = None) -> list[DryRunSummary]:
    preview = DryRun(runtime.outbound(template))
    return [preview.run(company, sink, progress=progress) for company in scopes(runtime, template, companies)]


# -- resync: one record ---------------------------------------------------------------------------------


def key_parts_problem(runtime: Runtime, template: str, parts: Sequence[Any]) -> str | None:
    """Why ``parts`` is not a key of ``template`` (None when it is): one non-empty string per key property."""
    properties = runtime.catalog.plan(template).key_properties
    if len(parts) != len(properties) or not all(isinstance(p, str) and p for p in parts):
        return (f"{template} records have a key of {len(properties)} part{'s' if len(properties) > 1 else ''} "
                f"({', '.join(properties)}), each a non-empty string; got {list(parts)!r}")
    return None


@dataclass(frozen=True)
class ResyncResult:
    template: str
    key: str
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"template": self.template, "key": self.key, "outcome": self.outcome, "detail": self.detail}


def resync(runtime: Runtime, template: str, parts: Sequence[str]) -> ResyncResult:
    """Re-read one record from Commerce and write it to Dataverse whatever its hash says (``sync_key`` with
    ``force``): its state is recorded, a failure parked, an edit made in Dataverse since the last sync is a
    conflict as usual. A record Commerce no longer has is deleted as a scan would delete it."""
    engine = runtime.outbound(template)
    fo_key = engine.plan.key_as_dict(tuple(parts))
    row_key = encode_key(engine.plan.key_of(fo_key))
    outcome = str(engine.sync_key(fo_key, source="resync", force=True))
    detail = ""
    if outcome == Outcome.UNCHANGED:  # with force, only a key that neither Commerce nor the sync state knows
        outcome, detail = NOT_FOUND, "Commerce has no such record and it was never synced"
    log(logger, logging.INFO, "record re-synced", template=template, key=row_key, outcome=outcome)
    return ResyncResult(template, row_key, outcome, detail)


# -- where findings go ------------------------------------------------------------------------------------


@dataclass
class Collected:
    """The first ``limit`` findings (as JSON objects) and whether more were left out."""

    limit: int = 1000
    items: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False

    def __call__(self, finding: Finding) -> None:
        if len(self.items) < self.limit:
            self.items.append(finding.as_dict())
        else:
            self.truncated = True


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)


class FindingWriter(Protocol):
    """A sink for findings that writes them somewhere, and closes with the summaries."""

    def __call__(self, finding: Finding) -> None: ...

    def close(self, summaries: list[dict[str, Any]]) -> None: ...


class TextWriter:
    """One line per finding as it is found; the summaries are the caller's (a table)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, finding: Finding) -> None:
        columns = "; ".join(f"{c.column}: Commerce {c.commerce!r}, Dataverse {c.dataverse!r}" for c in finding.columns)
        parts = [finding.kind.ljust(10), finding.template, finding.scope, finding.row_key or "-", columns, finding.detail,
                 f"[{finding.repair}]" if finding.repair else ""]
        print("  ".join(p for p in parts if p), file=self.out, flush=True)

    def close(self, summaries: list[dict[str, Any]]) -> None:
        if summaries:
            print(file=self.out)


class JsonWriter:
    """``{"findings": [...], "summary": [...]}``, the findings written as they are found."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0
        self.out.write('{"findings": [')

    def __call__(self, finding: Finding) -> None:
        self.out.write(("," if self.count else "") + "\n  " + json.dumps(finding.as_dict(), default=str))
        self.count += 1
        self.out.flush()

    def close(self, summaries: list[dict[str, Any]]) -> None:
        self.out.write(("\n" if self.count else "") + '], "summary": ' + json.dumps(summaries, default=str) + "}\n")


CSV_COLUMNS = ["kind", "template", "scope", "key", "column", "commerce", "dataverse", "detail", "repair"]


class CsvWriter:
    """One CSV row per differing column (one per record when no column is named); the key as its row key."""

    def __init__(self, out: TextIO) -> None:
        self.writer = csv.writer(out, lineterminator="\n")
        self.writer.writerow(CSV_COLUMNS)
        self.out = out

    def __call__(self, finding: Finding) -> None:
        base = [finding.kind, finding.template, finding.scope, finding.row_key]
        cells = [[c.column, _text(c.commerce), _text(c.dataverse)] for c in finding.columns] or [["", "", ""]]
        for cell in cells:
            self.writer.writerow([*base, *cell, finding.detail, finding.repair])
        self.out.flush()

    def close(self, summaries: list[dict[str, Any]]) -> None:
        return None  # a CSV holds findings only: the caller prints the summaries elsewhere
