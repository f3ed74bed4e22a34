"""Operator command line: each template's watermark and last run, parked records, sync now.

    python -m shared.cli status
    python -m shared.cli sync loyalty_cards [--company usmf]
    python -m shared.cli sync --all
    python -m shared.cli sync loyalty_cards --direction inbound   # Dataverse edits -> Commerce
    python -m shared.cli sync loyalty_cards --dry-run             # what a sync would write; writes nothing
    python -m shared.cli sync loyalty_card_balances --incremental # an aggregate's incremental pass
    python -m shared.cli reconcile loyalty_cards [--company usmf] [--repair] [--format json|csv]
    python -m shared.cli resync loyalty_levels usmf GOLD          # one record, whatever its hash says
    python -m shared.cli conflicts [--template loyalty_cards]
    python -m shared.cli parked [--template loyalty_cards] [--show ROW_KEY]
    python -m shared.cli replay loyalty_cards ROW_KEY [ROW_KEY ...] | --all [--template NAME]
    python -m shared.cli pause loyalty_cards | resume loyalty_cards
    python -m shared.cli approve-deletes loyalty_cards [--company usmf]   # the deletes a run held back
    python -m shared.cli break-lease loyalty_cards [--company usmf] [--direction outbound|inbound|both]
    python -m shared.cli poison list [--template loyalty_cards] [--queue callbacks|pages]
    python -m shared.cli poison show loyalty_cards MESSAGE_ID        # decoded body, insertion time, dequeue count
    python -m shared.cli poison requeue loyalty_cards MESSAGE_ID [...] | --all [--queue callbacks|pages]
    python -m shared.cli provision [--template NAME] [--dry-run]    # create the app-owned Dataverse tables

Reads the same app settings as the Function App (environment variables). With --remote <app URL> it drives a
deployed app through its /api/ops endpoints instead (same output, same exit codes; shared/ops/source.py):

    python -m shared.cli --remote https://<app>.azurewebsites.net --app-id <client id> status
    SYNC_REMOTE_KEY=<master key> python -m shared.cli --remote https://<app>.azurewebsites.net parked
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from azure.core.exceptions import AzureError
from pydantic import ValidationError
from tqdm import tqdm

from shared.commerce.client import LegalEntitiesError
from shared.dataverse.metadata import MetadataClient
from shared.http.errors import ApiError
from shared.mapping.catalog import MappingFileError
from shared.observability import correlation_scope
from shared.ops import drift, queries
from shared.ops.source import Credentials, LocalSource, OpsClient, Refused, RemoteSource, Source, SourceError
from shared.preflight import PreflightError
from shared.provision import KeyProgress, Provisioner, ProvisionError, app_owned
from shared.runtime import Runtime, build_runtime, get_runtime
from shared.settings import ConfigError, describe, get_settings
from shared.state.queues import QueueKind
from shared.sync import operations
from shared.sync.aggregate import AggregateSync
from shared.sync.runs import ALL, DIRECTION_IN, Outcome, RunStatus, RunSummary
from shared.sync.runs import DIRECTION_OUT as DIRECTION


def cell(value: Any) -> str:
    """A table cell: booleans as yes/no, objects as ``name=value`` pairs, None as nothing."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


TABLE_WIDTH: int | None = None  # ``--width``: tables are cut to fit this many columns (None: as wide as they are)
NARROWEST = 12  # a column is never cut below this (or its header)


def fit(widths: dict[str, int], width: int | None) -> dict[str, int]:
    """Column widths that fit ``width`` (two spaces between columns): the widest column is cut first."""
    if width is None:
        return widths
    fitted = dict(widths)
    for narrowest in (NARROWEST, 1):  # first no column below NARROWEST; if that is not enough, down to its header
        while sum(fitted.values()) + 2 * (len(fitted) - 1) > width:
            excess = sum(fitted.values()) + 2 * (len(fitted) - 1) - width
            widest = max(fitted, key=lambda c: fitted[c] - max(len(c), narrowest))
            floor = max(len(widest), narrowest)
            if fitted[widest] <= floor:
                break  # nothing left to cut at this floor
            fitted[widest] = max(floor, fitted[widest] - excess)
    return fitted


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    cells = [{c: cell(r.get(c)) for c in columns} for r in rows]
    widths = fit({c: max(len(c), *(len(r[c]) for r in cells)) for c in columns}, TABLE_WIDTH)
    cells = [{c: v if len(v) <= widths[c] else v[:widths[c] - 1] + "…" for c, v in r.items()} for r in cells]
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in cells:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))


def summary_row(s: RunSummary) -> dict[str, Any]:
    return {"template": s.template, "direction": s.direction, "scope": s.scope, "mode": s.mode, "status": s.status,
            "seen": s.seen, "written": s.written, "unchanged": s.unchanged, "deleted": s.deleted,
            "parked": s.failed, "conflicts": s.conflicts, "seconds": round(s.duration_s, 2), "detail": s.detail}


class ProgressBar:
    """A tqdm bar per scope on an interactive terminal; nothing otherwise (logs carry rate and ETA)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.bar: tqdm[Any] | None = None
        self.scope = ""

    def __call__(self, summary: RunSummary, total: int | None) -> None:
        if not self.enabled:
            return
        scope = f"{summary.template} {summary.scope}" + ("" if summary.direction == DIRECTION else " inbound")
        if summary.mode in (RECONCILE, DRY_RUN):
            scope += f" ({summary.mode})"
        if self.bar is None or scope != self.scope:
            self.close()
            self.bar = tqdm(total=total, desc=scope, unit="rec", leave=True)
            self.scope = scope
        self.bar.update(summary.seen - self.bar.n)
        self.bar.set_postfix(written=summary.written, parked=summary.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class SyncDirection(StrEnum):
    """``sync --direction``: which way a template's records go."""

    OUTBOUND = "outbound"  # Commerce -> Dataverse
    INBOUND = "inbound"  # Dataverse edits -> Commerce
    BOTH = "both"


def sync(runtime: Runtime, templates: Sequence[str], companies: Sequence[str],
         direction: str = SyncDirection.OUTBOUND, *, misconfigured: list[str] | None = None) -> list[RunSummary]:
    """Each template in turn; one whose legal entities cannot be listed is one error line on stderr and a
    failed summary (``status`` shows it with its reason), and the next template still runs. A template whose
    preflight found a setting or its file to fix is added to ``misconfigured``."""
    summaries: list[RunSummary] = []
    bar = ProgressBar()
    for name in templates:
        if direction in (SyncDirection.OUTBOUND, SyncDirection.BOTH):
            try:
                summaries.extend(runtime.scan(name).run(companies or runtime.settings.legal_entities, progress=bar))
            except (LegalEntitiesError, PreflightError) as exc:
                print(f"error: {name}: {exc}", file=sys.stderr)
                if isinstance(exc, PreflightError) and exc.configuration and misconfigured is not None:
                    misconfigured.append(name)
                summaries.append(RunSummary(template=name, scope=ALL, run_id="", direction=DIRECTION, mode="-",
                                            status=RunStatus.FAILED, detail=str(exc)))
            finally:
                bar.close()
        if direction in (SyncDirection.INBOUND, SyncDirection.BOTH):
            try:
                summaries.append(runtime.inbound(name).run(progress=bar))
            except PreflightError as exc:
                print(f"error: {name}: {exc}", file=sys.stderr)
                if exc.configuration and misconfigured is not None:
                    misconfigured.append(name)
                summaries.append(RunSummary(template=name, scope=ALL, run_id="", direction=DIRECTION_IN, mode="-",
                                            status=RunStatus.FAILED, detail=str(exc)))
            finally:
                bar.close()
    return summaries


# -- subcommands: each one a function of the runtime and the parsed arguments ------------------------


# Exit codes (docs/operations.md: Exit codes). 0: nothing failed, nothing parked. EXIT_FAILED (1), EXIT_SKIPPED (3)
# and EXIT_DELETES_HELD (4) are ``sync``'s, below; 2 is argparse's usage error (an unknown template or company too).
EXIT_PARKED = 5  # records were parked (sync, replay), or are (status, parked)
EXIT_CONFIG = 6  # a setting or a template file is invalid: one line each, naming the setting and the fix
EXIT_PAUSED = 7  # sync: a template is paused (``pause`` or SYNC_PAUSED_TEMPLATES) and --force was not given; resume:
# the template stays paused by SYNC_PAUSED_TEMPLATES


def _check_companies(runtime: Runtime, names: Sequence[str], companies: Sequence[str]) -> None:
    """``--company`` names legal entities of company-specific templates, as F&O's ``LegalEntities`` lists them
    (when that can be read: ``SYNC_LEGAL_ENTITIES`` stands in for it otherwise)."""
    if not companies:
        return
    if not any(runtime.catalog.plan(n).company_specific for n in names):
        specific = [t.name for t in runtime.catalog if t.commerce.company_specific]
        raise UsageError(f"--company applies to company-specific templates ({', '.join(specific)}); "
                         f"{', '.join(names)} runs across companies")
    known = runtime.preflight.known_companies() if runtime.preflight is not None else None
    if isinstance(known, list):
        unknown = [c for c in companies if c.lower() not in known]
        if unknown:
            raise UsageError(f"unknown company {unknown[0]!r}; F&O's LegalEntities lists: {', '.join(known)}")


class UsageError(Exception):
    """Bad arguments found once the runtime is known (an unknown template): ``main`` turns it into a usage error."""


@dataclass(frozen=True)
class Report:
    """What a subcommand prints (a table, or JSON with ``--json``) and the exit code."""

    rows: list[dict[str, Any]] | None  # None: the subcommand printed its own output
    exit_code: int = 0


Command = Callable[[Source, argparse.Namespace], Report]


def _check_template(source: Source, name: str | None) -> None:
    if name is None or name not in source.templates():
        raise UsageError(f"unknown template {name!r}")


def _local(source: Source, what: str) -> Runtime:
    """The runtime of a command that runs here only (``--remote`` serves it not)."""
    if not isinstance(source, LocalSource):
        raise UsageError(f"{what} runs where the app's settings are, not with --remote")
    return source.runtime


def cmd_status(source: Source, args: argparse.Namespace) -> Report:
    """Exit code: a scope whose last run failed (1), else one whose deletes are held (4), else records parked now
    (5: whichever run or callback parked them; a run whose parked records have all been replayed since is no
    longer counted)."""
    rows = source.status_rows()
    poisoned = {row["template"]: row["poison"] for row in rows if row["poison"]}
    if poisoned and not args.json:
        print(f"poison messages: {', '.join(f'{t} {n}' for t, n in poisoned.items())}; see python -m shared.cli "
              "poison list", file=sys.stderr)
    if not args.json:
        for refresh in source.refreshes().values():
            if refresh["pending"]:
                print(f"refresh pending: {refresh['template']} ({refresh['requests']} callback(s) since "
                      f"{refresh['first_requested_at']}; starts at most every SYNC_REFRESH_MIN_INTERVAL_S)",
                      file=sys.stderr)
    statuses = {row["status"] for row in rows}
    code = (EXIT_FAILED if RunStatus.FAILED in statuses else EXIT_DELETES_HELD if RunStatus.DELETES_HELD in statuses
            else EXIT_PARKED if any(row.get("parked") for row in rows) else 0)
    return Report(rows, exit_code=code)


def cmd_sync(source: Source, args: argparse.Namespace) -> Report:
    known = source.templates()
    names = known if args.all else [args.template]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown template {unknown[0]!r}; known: {', '.join(known)}")
    if isinstance(source, LocalSource):
        _check_companies(source.runtime, names, args.company)
    if args.dry_run:
        return dry_run(source, names, args)
    runtime = _local(source, "sync (but for --dry-run: a sync runs on its timer in Azure)")
    paused = [] if args.force else [p for p in (queries.pause_state(runtime, n) for n in names) if p.paused]
    for pause in paused:
        print(f"error: {pause.template} is paused ({pause.describe()}); not synced. "
              + (f"Remove it from {queries.PAUSE_SETTING}" if pause.by_setting and not pause.by_command
                 else f"Resume it (python -m shared.cli resume {pause.template})")
              + " or add --force to sync it anyway", file=sys.stderr)
    names = [n for n in names if n not in {p.template for p in paused}]
    if paused and not args.all:
        return Report(None, exit_code=EXIT_PAUSED)
    misconfigured: list[str] = []
    if args.incremental:
        engines = [runtime.outbound(n) for n in names]
        plain = [e.name for e in engines if not isinstance(e, AggregateSync)]
        if plain:
            raise UsageError(f"--incremental is for aggregate templates; {plain[0]!r} is not one")
        summaries = [e.incremental() for e in engines if isinstance(e, AggregateSync)]
    else:
        summaries = sync(runtime, names, args.company, SyncDirection(args.direction), misconfigured=misconfigured)
    for s in summaries:
        explain(s)
    code = EXIT_CONFIG if misconfigured else sync_exit_code(summaries)
    if paused and code in (0, EXIT_PARKED):
        code = EXIT_PAUSED  # sync --all left paused templates out
    return Report([summary_row(s) for s in summaries], exit_code=code)


# ``sync``'s exit codes besides 0: a run failed; a run was skipped (another run holds its scope's lease); a run
# held its deletes (more than the mass-delete guard allows). The first that applies, in this order.
EXIT_FAILED = 1
EXIT_SKIPPED = 3
EXIT_DELETES_HELD = 4


def sync_exit_code(summaries: Sequence[RunSummary]) -> int:
    statuses = {s.status for s in summaries}
    for status, code in ((RunStatus.FAILED, EXIT_FAILED), (RunStatus.SKIPPED, EXIT_SKIPPED),
                         (RunStatus.DELETES_HELD, EXIT_DELETES_HELD)):
        if status in statuses:
            return code
    return EXIT_PARKED if any(s.failed for s in summaries) else 0


def _scope_flags(s: RunSummary) -> str:
    return "" if s.scope == ALL else f" --company {s.scope}"


def explain(s: RunSummary) -> None:
    """One line on stderr for a run that needs an operator: skipped (whose lease, until when, how to break a
    dead run's) or deletes held (how to approve them)."""
    if s.status == RunStatus.SKIPPED:
        direction = "inbound" if s.direction != DIRECTION else "outbound"
        print(f"skipped: {s.template}/{s.scope} ({direction}): {s.detail}. If that run is dead (its process was "
              f"killed), break its lease: python -m shared.cli break-lease {s.template}{_scope_flags(s)}"
              f" --direction {direction}", file=sys.stderr)
    elif s.status == RunStatus.DELETES_HELD:
        print(f"deletes held: {s.template}/{s.scope}: {s.detail}. To delete them: python -m shared.cli "
              f"approve-deletes {s.template}{_scope_flags(s)}", file=sys.stderr)


def cmd_conflicts(source: Source, args: argparse.Namespace) -> Report:
    if args.template:
        _check_template(source, args.template)
    return Report([{"template": e["PartitionKey"], "key": e["key"], "winner": e["winner"],
                    "detected_at": e["detected_at"], "commerce": e["commerce"], "dataverse": e["dataverse"]}
                   for e in source.conflicts(args.template)])


def cmd_parked(source: Source, args: argparse.Namespace) -> Report:
    """Exit code 5 when any record is parked (``--show``: 1 when the record is not)."""
    if args.template:
        _check_template(source, args.template)
    if args.show:
        return show_parked(source, args)
    entries = source.parked(args.template, args.error_class, args.direction)
    code = EXIT_PARKED if entries else 0
    summary = queries.parked_summary(entries)
    if args.summary:
        return Report(summary, exit_code=code)
    rows = [{"template": e["template"], "row_key": e["row_key"], "key": e["key"], "error_class": e["error_class"],
             "attempts": e["attempts"], "last_failed": e["last_failed"], "retry": e["retry"], "error": e["error"][:100]}
            for e in entries]
    if args.json or not rows:
        return Report(rows, exit_code=code)
    print_table(rows)
    print(f"\n{len(rows)} parked, by error class:")
    print_table(summary)
    return Report(None, exit_code=code)


def show_parked(source: Source, args: argparse.Namespace) -> Report:
    """``parked --show KEY``: one record in full, as JSON whatever ``--json`` says; the key as ``parked`` lists it,
    without the ``%in%`` prefix, as key parts or as the JSON key (a key parked in both directions: both, a list)."""
    if not args.template:
        raise UsageError("--show needs --template")
    found = queries.match_parked(source.parked(args.template), args.show)
    if not found:
        print(f"no parked record {' '.join(args.show)!r} in {args.template}", file=sys.stderr)
        return Report(None, exit_code=1)
    print(json.dumps(found[0] if len(found) == 1 else found, indent=2, default=str))
    return Report(None)


def cmd_replay(source: Source, args: argparse.Namespace) -> Report:
    if args.template:
        _check_template(source, args.template)
    if not args.all and not args.row_keys:
        raise UsageError("name ROW_KEYs (see 'parked') or use --all")
    results = source.replay(args.template, None if args.all else args.row_keys)
    # Exit code: a record parked again (5), else one not replayed (1: skipped, or no parked record of that key).
    missed = any(r["outcome"] == "skipped" or (r["outcome"] == Outcome.NOT_FOUND and r["detail"]) for r in results)
    code = EXIT_PARKED if any(r["outcome"] == Outcome.PARKED for r in results) else EXIT_FAILED if missed else 0
    return Report(results, exit_code=code)


def cmd_pause(source: Source, args: argparse.Namespace) -> Report:
    _check_template(source, args.template)
    return Report([source.pause(args.template, by=_operator())])


def cmd_resume(source: Source, args: argparse.Namespace) -> Report:
    """Exit 7 when ``SYNC_PAUSED_TEMPLATES`` still pauses the template: only a change of that setting resumes it
    (a pause by command is lifted all the same; held callbacks stay held)."""
    _check_template(source, args.template)
    try:
        return Report([source.resume(args.template, by=_operator())])
    except Refused as refused:
        held = refused.body.get("held_callbacks", 0)
        print(f"error: {args.template} stays paused: the setting {queries.PAUSE_SETTING} lists it; remove it from "
              f"that app setting to resume ({held} held callbacks stay held until then)", file=sys.stderr)
        return Report([{"template": args.template, "paused": True, "paused_by": f"setting {queries.PAUSE_SETTING}",
                        "requeued": 0}], exit_code=EXIT_PAUSED)


def cmd_check(source: Source, args: argparse.Namespace) -> Report:
    """Everything a run would fail on, checked now and nothing written: one line per problem on stderr (what to
    fix: a setting, or a template and its row; and how), exit 6 when a setting or a template must change, 1 when
    only a service or the network failed; or one ``ok`` line, exit 0."""
    if args.template:
        _check_template(source, args.template)
    problems = source.check(args.template)
    if args.json:
        print(json.dumps(problems, indent=2))
    elif problems:
        for problem in problems:
            line = " ".join(f"{problem['subject']}: {problem['problem']}".split())
            print(f"error: {line}", file=sys.stderr)
    else:
        names = [args.template] if args.template else source.templates()
        print(f"ok: Dataverse, Commerce, Table Storage and {len(names)} template{'s' if len(names) > 1 else ''} "
              f"({', '.join(names)}) checked")
    if not problems:
        return Report(None)
    return Report(None, exit_code=EXIT_CONFIG if any(not p["transient"] for p in problems) else EXIT_FAILED)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def cmd_approve_deletes(source: Source, args: argparse.Namespace) -> Report:
    _check_template(source, args.template)
    try:
        return Report([source.approve_deletes(args.template, args.company, by=args.by or _operator())])
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Report(None, exit_code=1)


def cmd_break_lease(source: Source, args: argparse.Namespace) -> Report:
    _check_template(source, args.template)
    return Report(source.break_lease(args.template, args.company, args.direction, by=args.by or _operator()))


# -- poison messages: what the host gave up on after maxDequeueCount failed deliveries -----------------------


def cmd_poison_list(source: Source, args: argparse.Namespace) -> Report:
    """The poison messages (at most the first 32 of each poison queue: Storage peeks no further), with each
    queue's count; the bodies are cut to 100 characters (``poison show`` prints one whole)."""
    if args.template:
        _check_template(source, args.template)
    return Report([{"template": m["template"], "queue": m["kind"], "id": m["id"], "inserted_on": m["inserted_on"],
                    "dequeue_count": m["dequeue_count"], "body": m["body"] if args.json else m["body"][:100]}
                   for m in source.poison(args.template, args.queue)])


def cmd_poison_show(source: Source, args: argparse.Namespace) -> Report:
    """One poison message in full, as JSON (its body parsed when it is JSON); exit 1 when it is not there."""
    _check_template(source, args.template)
    message = next((m for m in source.poison(args.template, args.queue) if m["id"] == args.message_id), None)
    if message is None:
        print(f"no poison message {args.message_id!r} in {args.template}'s poison queues (see: python -m shared.cli "
              "poison list)", file=sys.stderr)
        return Report(None, exit_code=1)
    shown = dict(message)
    with contextlib.suppress(ValueError):
        shown["body"] = json.loads(message["body"])
    print(json.dumps(shown, indent=2, default=str))
    return Report(None)


def cmd_poison_requeue(source: Source, args: argparse.Namespace) -> Report:
    """Exit 1 when a message named is not (or no longer) in the poison queues; a second requeue sends nothing."""
    _check_template(source, args.template)
    if not args.all and not args.message_ids:
        raise UsageError("name MESSAGE_IDs (see 'poison list') or use --all")
    results = source.requeue_poison(args.template, None if args.all else args.message_ids, args.queue)
    return Report(results, exit_code=EXIT_FAILED if any(r["outcome"] == "not_found" for r in results) else 0)


# -- drift: dry runs, reconcile, resync (shared/ops/drift.py); findings are printed as they are found -----------

RECONCILE, DRY_RUN = "reconcile", "dry_run"  # the modes their progress bars show


def _writer(fmt: str) -> drift.FindingWriter:
    if fmt == "json":
        return drift.JsonWriter(sys.stdout)
    if fmt == "csv":
        return drift.CsvWriter(sys.stdout)
    return drift.TextWriter(sys.stdout)


def _summaries(fmt: str, writer: drift.FindingWriter, rows: list[dict[str, Any]]) -> None:
    """The summaries: inside the JSON document, as a table after text lines, on stderr after a CSV."""
    writer.close(rows)
    if fmt == "text":
        print_table(rows)
    elif fmt == "csv":
        for row in rows:
            print("summary: " + " ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr)


def dry_run(source: Source, names: Sequence[str], args: argparse.Namespace) -> Report:
    """``sync --dry-run``: what each scope's sync would write; nothing is written (no state, no lease either)."""
    if args.direction != SyncDirection.OUTBOUND:
        raise UsageError("--dry-run covers the Commerce -> Dataverse direction only (--direction outbound)")
    fmt = "json" if args.json else "text"
    writer, bar = _writer(fmt), ProgressBar()
    rows: list[dict[str, Any]] = []
    code = 0
    for name in names:
        try:
            rows += source.dry_run(name, args.company, writer, bar)
        except SourceError as exc:
            if exc.usage:
                raise UsageError(str(exc)) from None
            print(f"error: {name}: {exc}", file=sys.stderr)
            code = 1
        finally:
            bar.close()
    _summaries(fmt, writer, rows)
    return Report(None, exit_code=code)


def cmd_reconcile(source: Source, args: argparse.Namespace) -> Report:
    """Exit 0: no drift (or every drift repaired); 1: drift found (or left after --repair), or a failure."""
    _check_template(source, args.template)
    fmt = args.format or ("json" if args.json else "text")
    writer, bar = _writer(fmt), ProgressBar()
    try:
        summaries = source.reconcile(args.template, args.company, args.repair, writer, bar)
    except SourceError as exc:
        if exc.usage:
            raise UsageError(str(exc)) from None
        _summaries(fmt, writer, [])
        print(f"error: {args.template}: {exc}", file=sys.stderr)
        return Report(None, exit_code=1)
    finally:
        bar.close()
    _summaries(fmt, writer, summaries)
    return Report(None, exit_code=1 if any(s["left"] for s in summaries) else 0)


def cmd_resync(source: Source, args: argparse.Namespace) -> Report:
    _check_template(source, args.template)
    result = source.resync(args.template, args.key_parts)
    return Report([result], exit_code=1 if result["outcome"] in ("parked", drift.NOT_FOUND) else 0)


class KeyBar:
    """A tqdm bar of the alternate keys whose index is Active, on an interactive terminal; lines otherwise."""

    def __init__(self) -> None:
        self.bar: tqdm[Any] | None = None
        self.last: list[str] | None = None

    def __call__(self, report: KeyProgress) -> None:
        if not sys.stderr.isatty():
            if report.waiting and report.waiting != self.last:
                print(f"keys active {report.active}/{report.total}; waiting for: {', '.join(report.waiting)}",
                      file=sys.stderr)
            self.last = report.waiting
            return
        if self.bar is None:
            self.bar = tqdm(total=report.total, desc="alternate key indexes", unit="key", leave=True)
        self.bar.update(report.active - self.bar.n)
        self.bar.set_postfix_str(", ".join(report.waiting)[:80])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_provision(source: Source, args: argparse.Namespace) -> Report:
    """Create what the templates' ``dataverse.table`` blocks declare and Dataverse lacks, in the solution of
    ``SYNC_DATAVERSE_SOLUTION``; wait until every key is Active. ``--dry-run``: every metadata request it would send,
    nothing written. Exit 1 on a problem (one line each, what to do), a failed key index or a wait that ran out."""
    runtime = _local(source, "provision")
    if args.template:
        _check_template(source, args.template)
    templates = app_owned(runtime.catalog, [args.template] if args.template else None)
    if args.template and not templates:
        raise UsageError(f"template {args.template!r} declares no app-owned table (dataverse.table)")
    if not templates:
        print("nothing to provision: no template declares an app-owned table (dataverse.table)", file=sys.stderr)
        return Report(None)
    bar = KeyBar()
    provisioner = Provisioner(MetadataClient(runtime.dataverse.core), templates, runtime.settings.dataverse_solution,
                              wait_s=runtime.settings.provision_wait_s, progress=bar,
                              say=(lambda line: print(line, file=sys.stderr)) if args.verbose else None)
    plan = provisioner.plan()
    for problem in plan.problems:
        print(f"error: {problem}", file=sys.stderr)
    if plan.problems:
        return Report(None, exit_code=EXIT_FAILED)
    if args.dry_run:
        if not plan.requests:
            print(f"nothing to create: the tables of {', '.join(t.name for t in templates)} are complete in "
                  "Dataverse (keys are not waited for in a dry run)", file=sys.stderr)
        return Report([{"#": i, **r.as_row()} for i, r in enumerate(plan.requests, 1)])
    try:
        outcome = provisioner.apply(plan)
    except ProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Report(None, exit_code=EXIT_FAILED)
    finally:
        bar.close()
    print(f"{len(outcome.sent)} metadata request{'' if len(outcome.sent) == 1 else 's'} sent (solution "
          f"{runtime.settings.dataverse_solution})", file=sys.stderr)
    for problem in outcome.problems:
        print(f"error: {problem}", file=sys.stderr)
    return Report(outcome.tables, exit_code=EXIT_FAILED if outcome.problems else 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every sync step")
    parser.add_argument("--width", type=int, metavar="COLUMNS",
                        help="cut tables to fit this many columns (default: the terminal's width on a terminal)")
    parser.add_argument("--remote", metavar="APP_URL",
                        help="drive a deployed app through its /api/ops endpoints (https://<app>.azurewebsites.net) "
                             "instead of the local settings: an Entra token for --app-id (or SYNC_REMOTE_APP_ID), or "
                             "the master key in SYNC_REMOTE_KEY (break-glass)")
    parser.add_argument("--app-id", metavar="CLIENT_ID",
                        help="with --remote: the app registration whose token to send (api://<app-id>/.default)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="each template's watermark and last run").set_defaults(func=cmd_status,
                                                                                       read_only=True)
    check_p = sub.add_parser("check", help="check the settings, both services and every template against them")
    check_p.add_argument("--template", help="only this template")
    check_p.set_defaults(func=cmd_check, read_only=True)
    sync_p = sub.add_parser("sync", help="run the Commerce -> Dataverse sync of a template now")
    sync_p.add_argument("template", nargs="?", help="template name (see 'status')")
    sync_p.add_argument("--all", action="store_true", help="every template, in file order")
    sync_p.add_argument("--company", action="append", default=[], help="legal entity (repeatable)")
    sync_p.add_argument("--direction", choices=[d.value for d in SyncDirection], default=SyncDirection.OUTBOUND.value,
                        help="outbound: Commerce -> Dataverse (default); inbound: Dataverse edits -> Commerce")
    sync_p.add_argument("--dry-run", action="store_true",
                        help="list what the sync would write (creates, updates with their columns, deletes); write nothing")
    sync_p.add_argument("--force", action="store_true", help="sync a paused template anyway")
    sync_p.add_argument("--incremental", action="store_true",
                        help="an aggregate template's incremental pass (recent lines, due cards, edits in Dataverse) "
                             "instead of its full build")
    sync_p.set_defaults(func=cmd_sync)
    conflicts_p = sub.add_parser("conflicts", help="records both sides changed, with both values and the winner")
    conflicts_p.add_argument("--template")
    conflicts_p.set_defaults(func=cmd_conflicts, read_only=True)
    parked_p = sub.add_parser("parked", help="records kept after a failed sync, with their reasons")
    parked_p.add_argument("--template")
    parked_p.add_argument("--show", nargs="+", metavar="KEY",
                          help="one record in full (needs --template): the row key as listed, or the key parts "
                               "(LC-1; usmf GOLD), or the JSON key")
    parked_p.add_argument("--error-class", help="only records parked with this error class (e.g. lookup_missing)")
    parked_p.add_argument("--direction", choices=list(queries.PARKED_DIRECTIONS),
                          help="only records of one direction (outbound: Commerce -> Dataverse)")
    parked_p.add_argument("--summary", action="store_true", help="only the counts by error class")
    parked_p.set_defaults(func=cmd_parked, read_only=True)
    replay_p = sub.add_parser("replay", help="re-sync parked records from Commerce's current state")
    replay_p.add_argument("template", nargs="?")
    replay_p.add_argument("row_keys", nargs="*", metavar="ROW_KEY", help="as 'parked' lists them")
    replay_p.add_argument("--all", action="store_true", help="every parked record (of the template, if given)")
    replay_p.set_defaults(func=cmd_replay)
    reconcile_p = sub.add_parser("reconcile", help="compare Commerce and Dataverse record by record: missing, extra "
                                                   "and different records (--repair fixes them)")
    reconcile_p.add_argument("template")
    reconcile_p.add_argument("--company", action="append", default=[], help="legal entity (repeatable)")
    reconcile_p.add_argument("--repair", action="store_true",
                             help="write missing and different records; delete extra ones under SYNC_DELETE_POLICY=delete")
    reconcile_p.add_argument("--format", choices=["json", "csv"], help="JSON or CSV instead of text lines")
    reconcile_p.set_defaults(func=cmd_reconcile)
    resync_p = sub.add_parser("resync", help="re-sync one record from Commerce, whatever its hash says")
    resync_p.add_argument("template")
    resync_p.add_argument("key_parts", nargs="+", metavar="KEY_PART", help="the F&O key, in the template's key order")
    resync_p.set_defaults(func=cmd_resync)
    verbs: dict[str, Command] = {"pause": cmd_pause, "resume": cmd_resume}
    for verb, command in verbs.items():
        p = sub.add_parser(verb, help=f"{verb} a template (callbacks keep being accepted and queued)")
        p.add_argument("template")
        p.set_defaults(func=command)
    approve_p = sub.add_parser("approve-deletes", help="let the next run make the deletes a run held back "
                                                        "(more than SYNC_DELETE_THRESHOLD or _SHARE)")
    approve_p.add_argument("template")
    approve_p.add_argument("--company", help="the legal entity (company-specific templates)")
    approve_p.add_argument("--by", help="who approves (recorded; default cli:<user>)")
    approve_p.set_defaults(func=cmd_approve_deletes)
    lease_p = sub.add_parser("break-lease", help="release the lease of a dead run (killed process); it stays "
                                                 "resumable and the next run takes it over")
    lease_p.add_argument("template")
    lease_p.add_argument("--company", help="the legal entity (company-specific templates)")
    lease_p.add_argument("--direction", choices=list(operations.DIRECTIONS), default="outbound")
    lease_p.add_argument("--by", help="who breaks it (logged; default cli:<user>)")
    lease_p.set_defaults(func=cmd_break_lease)
    poison_p = sub.add_parser("poison", help="messages the Functions host gave up on (<queue>-poison): list, show, "
                                             "requeue")
    poison_sub = poison_p.add_subparsers(dest="poison_command", required=True)
    queue_kinds = [k.value for k in QueueKind]
    list_p = poison_sub.add_parser("list", help="the poison messages of every template (or one), oldest first")
    list_p.add_argument("--template")
    list_p.add_argument("--queue", choices=queue_kinds, help="only the callbacks' or the key ranges' poison queue")
    list_p.set_defaults(func=cmd_poison_list, read_only=True)
    show_p = poison_sub.add_parser("show", help="one poison message: decoded body, insertion time, dequeue count")
    show_p.add_argument("template")
    show_p.add_argument("message_id")
    show_p.add_argument("--queue", choices=queue_kinds)
    show_p.set_defaults(func=cmd_poison_show, read_only=True)
    requeue_p = poison_sub.add_parser("requeue", help="put poison messages back on the queue they came from")
    requeue_p.add_argument("template")
    requeue_p.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID", help="as 'poison list' shows them")
    requeue_p.add_argument("--all", action="store_true", help="every poison message of the template")
    requeue_p.add_argument("--queue", choices=queue_kinds, help="only this queue's poison messages")
    requeue_p.set_defaults(func=cmd_poison_requeue)
    provision_p = sub.add_parser("provision", help="create the app-owned Dataverse tables the templates declare "
                                                   "(dataverse.table): columns, lookups, keys; waits for the keys")
    provision_p.add_argument("--template", help="only this template's table")
    provision_p.add_argument("--dry-run", action="store_true",
                             help="list every metadata request it would send (method, path, key facts); send none")
    provision_p.set_defaults(func=cmd_provision, read_only=True)
    subparsers = [*sub.choices.values(), *poison_sub.choices.values()]
    for subparser in subparsers:  # --json and -v after the subcommand too (SUPPRESS: keep the first)
        subparser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                               help="print JSON instead of a table")
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="log every sync step")
    return parser


EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's convention (128 + SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; Ctrl-C ends it with one line, not a traceback (a sync it stopped keeps its checkpoints:
    the next run, once the lease has expired, resumes it)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted: a sync stopped here resumes from its last checkpoint at the next run, once its lease "
              "has expired (status shows it)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    global TABLE_WIDTH
    TABLE_WIDTH = args.width or (shutil.get_terminal_size().columns if sys.stdout.isatty() else None)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # -v is for the sync's own steps: the Azure SDK logs every storage request's headers at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if args.command == "check" and not args.verbose:
        # check reports each problem once, on one line: not the retries that led to it (-v shows them).
        logging.getLogger("loyaltysync.http").setLevel(logging.ERROR)
    command: Command = args.func
    if args.remote:
        try:
            source: Source = RemoteSource(OpsClient(args.remote, Credentials.from_environment(args.app_id)))
        except SourceError as exc:
            parser.error(str(exc))
        return run(parser, command, source, args)
    try:
        # Read-only commands (status, parked, conflicts, check) create no table or queue.
        settings = get_settings()
        runtime = (build_runtime(settings, ensure_storage=False) if getattr(args, "read_only", False)
                   else get_runtime())
    except ValidationError as exc:  # the settings: one line per problem, naming the setting and the fix
        for line in describe(exc):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigError, MappingFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AzureError as exc:  # creating the tables and queues: Storage cannot be used
        print("error: {}: {}".format(*queries.storage_problem(settings, exc)), file=sys.stderr)
        return EXIT_FAILED
    return run(parser, command, LocalSource(runtime), args)


def run(parser: argparse.ArgumentParser, command: Command, source: Source, args: argparse.Namespace) -> int:
    """Run the command on its source and print its report: the same rendering for local and remote mode."""
    with correlation_scope():
        try:
            report = command(source, args)
        except UsageError as exc:
            parser.error(str(exc))
        except SourceError as exc:  # an expected failure: one line (a usage error: argparse's, exit 2)
            if exc.usage:
                parser.error(str(exc))
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except ApiError as exc:  # a service that cannot be used: one line
            print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
            return EXIT_FAILED
        except AzureError as exc:  # Table or Queue Storage that cannot be used: one line, with check's hint
            assert isinstance(source, LocalSource)
            print("error: {}: {}".format(*queries.storage_problem(source.runtime.settings, exc)), file=sys.stderr)
            return EXIT_FAILED
    if report.rows is not None:
        if args.json:
            print(json.dumps(report.rows, indent=2))
        else:
            print_table(report.rows)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
