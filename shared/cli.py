"""Operator command line: each template's watermark and last run, parked records, sync now.

    python -m shared.cli status
    python -m shared.cli sync loyalty_cards [--company usmf]
    python -m shared.cli sync --all
    python -m shared.cli sync loyalty_cards --direction inbound   # Dataverse edits -> Commerce
    python -m shared.cli conflicts [--template loyalty_cards]
    python -m shared.cli parked [--template loyalty_cards] [--show ROW_KEY]
    python -m shared.cli replay loyalty_cards ROW_KEY [ROW_KEY ...] | --all [--template NAME]
    python -m shared.cli pause loyalty_cards | resume loyalty_cards

Reads the same app settings as the Function App (environment variables).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from shared.commerce.client import LegalEntitiesError
from shared.observability import correlation_scope
from shared.runtime import Runtime, get_runtime
from shared.sync import operations
from shared.sync.runs import ALL, RunStatus, RunSummary
from shared.sync.runs import DIRECTION_OUT as DIRECTION


def status_rows(runtime: Runtime) -> list[dict[str, str]]:
    marks = {(m.template, m.direction, m.scope): m for m in runtime.state.list_watermarks()}
    rows: list[dict[str, str]] = []
    for template in runtime.catalog:
        found = [m for (name, _, _), m in marks.items() if name == template.name]
        if not found:
            rows.append({"template": template.name, "direction": "-", "scope": "-", "status": "never run", "runs": "0",
                         "last_run_finished": "", "counts": "", "reason": ""})
        for mark in sorted(found, key=lambda m: m.row_key):
            rows.append({"template": template.name, "direction": mark.direction, "scope": mark.scope,
                         "status": mark.last_status or "running", "runs": str(mark.run_seq),
                         "last_run_finished": mark.last_run_finished, "counts": mark.last_counts,
                         "reason": mark.last_error})
    return rows


def print_table(rows: Sequence[dict[str, str]]) -> None:
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def summary_row(s: RunSummary) -> dict[str, str]:
    return {"template": s.template, "direction": s.direction, "scope": s.scope, "mode": s.mode, "status": s.status,
            "seen": str(s.seen), "written": str(s.written), "unchanged": str(s.unchanged), "deleted": str(s.deleted),
            "parked": str(s.failed), "conflicts": str(s.conflicts), "seconds": f"{s.duration_s:.2f}"}


class ProgressBar:
    """A tqdm bar per scope on an interactive terminal; nothing otherwise (logs carry rate and ETA)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.bar: tqdm[Any] | None = None
        self.scope = ""

    def __call__(self, summary: RunSummary, total: int | None) -> None:
        if not self.enabled:
            return
        scope = f"{summary.template} {summary.scope}"
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


def sync(runtime: Runtime, templates: Sequence[str], companies: Sequence[str],
         direction: str = "outbound") -> list[RunSummary]:
    """Each template in turn; one whose legal entities cannot be listed is one error line on stderr and a
    failed summary (``status`` shows it with its reason), and the next template still runs."""
    summaries: list[RunSummary] = []
    bar = ProgressBar()
    for name in templates:
        if direction in ("outbound", "both"):
            try:
                summaries.extend(runtime.scan(name).run(companies or runtime.settings.legal_entities, progress=bar))
            except LegalEntitiesError as exc:
                print(f"error: {name}: {exc}", file=sys.stderr)
                summaries.append(RunSummary(template=name, scope=ALL, run_id="", direction=DIRECTION, mode="-",
                                            status=RunStatus.FAILED, detail=str(exc)))
            finally:
                bar.close()
        if direction in ("inbound", "both"):
            summaries.append(runtime.inbound(name).run())
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every sync step")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="each template's watermark and last run")
    sync_p = sub.add_parser("sync", help="run the Commerce -> Dataverse sync of a template now")
    sync_p.add_argument("template", nargs="?", help="template name (see 'status')")
    sync_p.add_argument("--all", action="store_true", help="every template, in file order")
    sync_p.add_argument("--company", action="append", default=[], help="legal entity (repeatable)")
    sync_p.add_argument("--direction", choices=["outbound", "inbound", "both"], default="outbound",
                        help="outbound: Commerce -> Dataverse (default); inbound: Dataverse edits -> Commerce")
    conflicts_p = sub.add_parser("conflicts", help="records both sides changed, with both values and the winner")
    conflicts_p.add_argument("--template")
    parked_p = sub.add_parser("parked", help="records kept after a failed sync, with their reasons")
    parked_p.add_argument("--template")
    parked_p.add_argument("--show", metavar="ROW_KEY", help="one record in full (needs --template)")
    replay_p = sub.add_parser("replay", help="re-sync parked records from Commerce's current state")
    replay_p.add_argument("template", nargs="?")
    replay_p.add_argument("row_keys", nargs="*", metavar="ROW_KEY", help="as 'parked' lists them")
    replay_p.add_argument("--all", action="store_true", help="every parked record (of the template, if given)")
    for verb in ("pause", "resume"):
        p = sub.add_parser(verb, help=f"{verb} a template (callbacks keep being accepted and queued)")
        p.add_argument("template")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = get_runtime()
    exit_code = 0
    with correlation_scope():
        if args.command == "status":
            rows = status_rows(runtime)
        elif args.command == "sync":
            names = [t.name for t in runtime.catalog] if args.all else [args.template]
            unknown = [n for n in names if n is None or runtime.catalog.get(n) is None]
            if unknown:
                parser.error(f"unknown template {unknown[0]!r}; known: {', '.join(t.name for t in runtime.catalog)}")
            summaries = sync(runtime, names, args.company, args.direction)
            rows = [summary_row(s) for s in summaries]
            exit_code = 1 if any(s.status == "failed" for s in summaries) else 0
        elif args.command == "conflicts":
            rows = [{"template": e["PartitionKey"], "key": e["key"], "winner": e["winner"],
                     "detected_at": e["detected_at"], "commerce": e["commerce"][:80], "dataverse": e["dataverse"][:80]}
                    for e in runtime.state.list_conflicts(args.template)]
        elif args.command == "parked" and args.show:
            if not args.template:
                parser.error("--show needs --template")
            entity = runtime.state.get_parked(args.template, args.show)
            if entity is None:
                print(f"no parked record {args.show!r} in {args.template}", file=sys.stderr)
                return 1
            print(json.dumps(operations.parked_entry(entity), indent=2, default=str))
            return 0
        elif args.command == "parked":
            rows = [{"template": e["PartitionKey"], "row_key": e["RowKey"], "error_class": e["error_class"],
                     "attempts": str(e["attempts"]), "last_failed": e["last_failed"], "error": e["error"][:100]}
                    for e in runtime.state.list_parked(args.template)]
        elif args.command == "replay":
            if args.template and runtime.catalog.get(args.template) is None:
                parser.error(f"unknown template {args.template!r}")
            if not args.all and not args.row_keys:
                parser.error("name ROW_KEYs (see 'parked') or use --all")
            results = operations.replay(runtime, args.template, None if args.all else args.row_keys)
            rows = [r.as_dict() for r in results]
        else:
            if runtime.catalog.get(args.template) is None:
                parser.error(f"unknown template {args.template!r}")
            if args.command == "pause":
                operations.pause(runtime, args.template, by="cli")
                rows = [{"template": args.template, "paused": "yes"}]
            else:
                requeued = operations.resume(runtime, args.template, by="cli")
                rows = [{"template": args.template, "paused": "no", "requeued": str(requeued)}]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
