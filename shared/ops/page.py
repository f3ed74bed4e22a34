"""The status page's HTML, rendered on the server from ``queries.Overview``: one self-contained document (inline
CSS, no script, no external asset: it works with no internet), every value escaped.

Escaping is structural: ``h(fmt, *values)`` escapes each value unless it is ``Html`` (markup built here), so
a template key, a parked reason or a poison message's body is text, never markup. Free text is also isolated
(``free``: ``<bdi>``, ``unicode-bidi: isolate``), so a bidirectional override in it reorders only itself.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.ops.queries import NEVER_RUN, PAUSE_SETTING, RUNNING, Overview, TemplateView
from shared.state.keys import split_parked_key
from shared.sync.runs import ALL, DIRECTION_IN, DIRECTION_OUT, RunStatus

ACTIONS_PATH = "/api/ops/dashboard/actions"
PARKED_SHOWN = 100  # parked records listed (every one is counted)
BODY_SHOWN = 160  # characters of a poison message's body shown

DASH = "\u2013"  # an en dash: nothing to show
DIRECTIONS = {DIRECTION_OUT: "Commerce → Dataverse", DIRECTION_IN: "Dataverse → Commerce", "-": DASH}
COUNT_NAMES = {"failed": "parked"}  # a run's counter as the page names it


class Html(str):
    """Markup made here: ``h`` inserts it as it is."""


def esc(value: object) -> Html:
    return value if isinstance(value, Html) else Html(html.escape("" if value is None else str(value), quote=True))


def h(fmt: str, *values: object) -> Html:
    """``fmt`` with each ``{}`` replaced by its value, escaped unless it is ``Html``."""
    return Html(fmt.format(*(esc(v) for v in values)))


def free(value: object) -> Html:
    """Free text (a reason, a key, an error, a message body, a name), escaped and isolated in ``<bdi>``: a
    bidirectional override or isolate in it (U+202E, U+2066, ...) cannot reorder the page text around it."""
    return h("<bdi>{}</bdi>", value)


def join(parts: Iterable[Html]) -> Html:
    return Html("".join(parts))


@dataclass(frozen=True)
class Flash:
    """The outcome of the last action, shown once after its redirect."""

    ok: bool
    text: str


def when(text: str) -> str:
    """An ISO time as ``2026-12-01 02:40:12`` (UTC as stored); the text itself if it is not one."""
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text


def age(text: str, now: datetime) -> str:
    """How long ago an ISO time was: ``42 s``, ``7 min``, ``3 h 5 min``, ``2 d 4 h``."""
    try:
        then = datetime.fromisoformat(text)
    except ValueError:
        return ""
    seconds = max(0, int((now - then).total_seconds())) if then.tzinfo else 0
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def form(action: str, token: str, label: str, fields: dict[str, str], *, css: str = "", template: str = "",
         extra: Html | None = None) -> Html:
    """A POST form for one action: the session's token, hidden fields and one button."""
    hidden = join(h('<input type="hidden" name="{}" value="{}">', k, v) for k, v in fields.items())
    return h('<form method="post" action="{}/{}" class="action" data-action="{}" data-template="{}">'
             '<input type="hidden" name="csrf" value="{}">{}{}<button type="submit" class="{}">{}</button></form>',
             ACTIONS_PATH, action, action, template, token, hidden, extra or Html(""), css, label)


def state_cell(row: dict[str, Any], view: TemplateView) -> Html:
    parts: list[Html] = []
    pause = view.pause
    if pause.paused:
        parts.append(Html('<span class="badge paused">paused</span>'))
        if pause.by_command:
            parts.append(h('<div class="why pause-by">by {} at {}</div>', free(pause.changed_by or "?"),
                           when(pause.changed_at)))
            if pause.reason:
                parts.append(h('<div class="why pause-reason">{}</div>', free(pause.reason)))
        if pause.by_setting:
            parts.append(h('<div class="why pause-by">by the app setting {}</div>', PAUSE_SETTING))
        parts.append(Html("<br>"))
    status = row["status"]
    css = {RunStatus.FAILED: "failed", RUNNING: "running", RunStatus.COMPLETED: "ok", NEVER_RUN: "idle",
           RunStatus.DELETES_HELD: "failed"}.get(status, "warn")
    parts.append(h('<span class="badge {}">{}</span>', css, status.replace("_", " ")))
    if row.get("parked_note"):
        parts.append(h('<div class="why parked-note">{}</div>', free(row["parked_note"])))
    if status == RUNNING and row["progress"]:
        parts.append(h('<div class="why progress">{}</div>', free(row["progress"])))
    if row["reason"]:
        hint, folded = hint_first(row["reason"])
        parts.append(h('<div class="why failure">{}{}</div>', free(hint),
                       Html(f" <span class=\"at\">at {esc(when(row['failed_at']))}</span>") if row["failed_at"]
                       else Html("")))
        if folded:
            parts.append(h('<details class="exception"><summary>details</summary><div class="mono">{}</div>'
                           '</details>', free(row["reason"])))
    return join(parts)


# A parenthesised part of a failure's reason that is the exception rather than the advice: a long one, or one that
# names an error, an exception or an HTTP status (``(ServiceRequestError: ...)``, ``(503 : Service Unavailable)``).
_EXCEPTION_LIKE = re.compile(r"Error|Exception|Traceback|\b[45]\d\d\b|0x[0-9a-fA-F]{8}")


def hint_first(reason: str) -> tuple[str, bool]:
    """The reason with the exception text taken out (the advice an operator acts on), and whether anything was
    taken out (then the page folds the whole reason into ``<details>``). Parentheses are matched at any depth."""
    kept: list[str] = []
    taken = False
    i = 0
    while i < len(reason):
        if reason[i] != "(":
            kept.append(reason[i])
            i += 1
            continue
        depth, j = 0, i
        while j < len(reason):
            depth += {"(": 1, ")": -1}.get(reason[j], 0)
            if depth == 0:
                break
            j += 1
        inner = reason[i + 1:j]
        if j < len(reason) and (len(inner) > 80 or _EXCEPTION_LIKE.search(inner)):
            taken = True
            while kept and kept[-1] == " ":
                kept.pop()
        else:
            kept.append(reason[i:j + 1])
        i = j + 1
    hint = "".join(kept)
    return (hint, True) if taken and hint.strip() else (reason, False)


def counts_cell(row: dict[str, Any]) -> Html:
    counts: dict[str, int] = row["counts"] or {}
    if not counts:
        return h('<span class="none">{}</span>', DASH)
    pills = join(h('<span class="count{}">{} <b>{}</b></span>', " bad" if name == "failed" and n else "",
                   COUNT_NAMES.get(name, name), n) for name, n in counts.items())
    finished = h('<div class="at">finished {}</div>', when(row["last_run_finished"])) if row["last_run_finished"] \
        else Html("")
    return join([pills, finished])


def parked_cell(by_class: dict[str, int]) -> Html:
    if not by_class:
        return Html('<span class="none">0</span>')
    return join(h('<div class="parked-class"><b>{}</b> {}</div>', n, cls or "(no class)")
                for cls, n in by_class.items())


def held_cell(row: dict[str, Any]) -> Html:
    """The deletes the mass-delete guard holds (and how to approve them), and the last approval."""
    if not row["held"] and not row["approval"]:
        return esc(DASH)
    company = "" if row["scope"] == ALL else f" --company {row['scope']}"
    approve = h('<div class="at">approve: python -m shared.cli approve-deletes {}{}</div>', row["template"], company) \
        if row["held"] else Html("")
    return join([h("<div>{}</div>", free(row["held"])) if row["held"] else Html(""), approve,
                 h('<div class="at">{}</div>', free(row["approval"])) if row["approval"] else Html("")])


def backlog_cell(view: TemplateView) -> Html:
    callbacks, pages = view.backlog["callbacks"], view.backlog["pages"]
    return h('<div>queue <b class="queued">{}</b> <div class="at">callbacks {}, key ranges {}</div></div>'
             '<div class="{}">poison <b class="poison">{}</b></div><div>held <b class="held">{}</b></div>',
             view.queued, callbacks["queued"], pages["queued"], "bad" if view.poisoned else "", view.poisoned,
             view.held_callbacks)


def actions_cell(view: TemplateView, parked_count: int, token: str) -> Html:
    t = view.name
    parts: list[Html] = []
    if view.pause.paused:
        parts.append(form("resume", token, "Resume", {"template": t}, css="primary", template=t))
    else:
        reason = Html('<input type="text" name="reason" maxlength="300" placeholder="reason (optional)">')
        parts.append(form("pause", token, "Pause", {"template": t}, template=t, extra=reason))
    if parked_count:
        parts.append(form("replay", token, f"Replay {parked_count} parked", {"template": t}, template=t))
    if view.poisoned:
        parts.append(form("requeue-poison", token, f"Requeue {view.poisoned} poison", {"template": t}, template=t))
    return join(parts)


def status_table(data: Overview, token: str) -> Html:
    by_template: dict[str, list[dict[str, Any]]] = {}
    for row in data.rows:
        by_template.setdefault(row["template"], []).append(row)
    body: list[Html] = []
    for template, rows in by_template.items():
        view = data.templates[template]
        parked_count = sum(1 for e in data.parked if e["template"] == template)
        span = len(rows)
        for i, row in enumerate(rows):
            first = i == 0
            # a break opportunity after each underscore: a long template name wraps there, not anywhere
            name = Html(esc(template).replace("_", "_<wbr>"))
            lead = h('<th scope="rowgroup" rowspan="{}" class="template">{}</th>', span, name) if first else Html("")
            tail = h('<td rowspan="{}" class="backlog">{}</td><td rowspan="{}" class="conflicts">{}</td>'
                     '<td rowspan="{}" class="actions">{}</td>', span, backlog_cell(view), span, view.conflicts,
                     span, actions_cell(view, parked_count, token)) if first else Html("")
            held = held_cell(row)
            body.append(h(
                '<tr class="status-row{}" data-template="{}" data-direction="{}" data-scope="{}">{}'
                '<td class="direction">{}</td><td class="scope">{}</td><td class="state">{}</td>'
                '<td class="last-run">{}</td><td class="age">{}</td><td class="parked">{}</td>'
                '<td class="deletes-held">{}</td>{}</tr>',
                " group-start" if first else "", template, row["direction"], row["scope"], lead,
                DIRECTIONS.get(row["direction"], row["direction"]), row["scope"], state_cell(row, view),
                counts_cell(row), age(row["last_run_finished"], data.read_at) if row["last_run_finished"] else DASH,
                parked_cell(data.parked_by_class(template, row["direction"], row["scope"])), held, tail))
    return h('<table class="status"><thead><tr><th>Template</th><th>Direction</th><th>Scope</th><th>State</th>'
             '<th>Last run</th><th>Watermark age</th><th>Parked by error class</th><th>Deletes held</th>'
             '<th>Backlog</th><th>Conflicts</th><th>Actions</th></tr></thead><tbody>{}</tbody></table>',
             join(body))


def parked_table(data: Overview, token: str) -> Html:
    if not data.parked:
        return Html('<p class="none" id="no-parked">Nothing is parked.</p>')
    rows = join(h('<tr class="parked-row" data-template="{}" data-row-key="{}"><td>{}</td><td class="key">{}</td>'
                  '<td>{}</td><td>{}</td><td class="reason">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
                  e["template"], e["row_key"], e["template"], free(e["key"] or split_parked_key(e["row_key"])[1]),
                  DIRECTIONS.get(e["direction_code"], e["direction_code"]), e["error_class"] or "", free(e["error"] or ""),
                  e["attempts"] or "", when(str(e["last_failed"] or "")),
                  form("replay", token, "Replay", {"template": e["template"], "row_key": e["row_key"]},
                       template=e["template"]))
                for e in data.parked[:PARKED_SHOWN])
    more = h('<p class="at">{} more not listed: python -m shared.cli parked</p>', len(data.parked) - PARKED_SHOWN) \
        if len(data.parked) > PARKED_SHOWN else Html("")
    return h('<table class="list parked-list"><thead><tr><th>Template</th><th>Key</th><th>Direction</th>'
             '<th>Error class</th><th>Reason</th><th>Attempts</th><th>Last failed</th><th></th></tr></thead>'
             '<tbody>{}</tbody></table>{}', rows, more)


def poison_table(data: Overview, token: str) -> Html:
    messages = [m for view in data.templates.values() for m in view.poison]
    if not messages:
        return Html('<p class="none" id="no-poison">No poison messages.</p>')
    rows = join(h('<tr class="poison-row" data-template="{}" data-id="{}"><td>{}</td><td>{}</td><td class="mono">{}'
                  '</td><td>{}</td><td>{}</td><td class="mono body">{}</td><td>{}</td></tr>',
                  m.template, m.id, m.template, m.kind, m.id, when(m.inserted_on), m.dequeue_count,
                  free(m.body[:BODY_SHOWN] + ("…" if len(m.body) > BODY_SHOWN else "")),
                  form("requeue-poison", token, "Requeue", {"template": m.template, "message_id": m.id,
                                                             "kind": m.kind}, template=m.template))
                for m in messages)
    return h('<table class="list poison-list"><thead><tr><th>Template</th><th>Queue</th><th>Message id</th>'
             '<th>Poisoned at</th><th>Dequeue count</th><th>Body</th><th></th></tr></thead><tbody>{}</tbody></table>',
             rows)


def render(data: Overview, operator: str, token: str, flash: Flash | None, *, local: bool) -> str:
    """The whole page."""
    banner = h('<div class="flash {}" role="status" id="flash">{}</div>', "ok" if flash.ok else "error",
               free(flash.text)) if flash else Html("")
    mode = Html(' <span class="badge idle">local: no sign-in</span>') if local else Html("")
    paused = sum(1 for v in data.templates.values() if v.pause.paused)
    failed = sum(1 for r in data.rows if r["status"] == RunStatus.FAILED)
    poisoned = sum(v.poisoned for v in data.templates.values())
    summary = h('<p class="summary"><span>{} templates</span><span class="{}">{} paused</span>'
                '<span class="{}">{} failed</span><span class="{}">{} parked</span><span class="{}">{} poison</span>'
                '</p>', len(data.templates), "warn" if paused else "", paused, "bad" if failed else "", failed,
                "warn" if data.parked else "", len(data.parked), "bad" if poisoned else "", poisoned)
    return h(PAGE, Html(CSS), data.read_at.strftime("%Y-%m-%d %H:%M:%S UTC"), free(operator), mode, banner, summary,
             status_table(data, token), parked_table(data, token), poison_table(data, token))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Loyalty sync: status</title><style>{}</style></head>
<body><header><h1>Loyalty sync</h1><p class="meta">read at <span id="read-at">{}</span> · signed in as
<span id="operator">{}</span>{}</p></header>
<main>{}{}
<h2>Templates</h2>{}
<h2>Parked records</h2>{}
<h2>Poison messages</h2>{}
<p class="at foot">The same from the command line: python -m shared.cli status | parked | poison list.
Reload the page to refresh it.</p></main></body></html>"""

CSS = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d8dee4;--bg:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;
--run:#0969da;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;font-size:14px;color:var(--fg)}
body{margin:0;background:#fff}header{background:#24292f;color:#fff;padding:12px 24px;display:flex;
align-items:baseline;gap:24px}h1{font-size:18px;margin:0}.meta{margin:0;color:#c9d1d9}main{padding:12px 24px}
h2{font-size:15px;margin:22px 0 8px}table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid var(--line);
padding:6px 8px;text-align:left;vertical-align:top}thead th{background:var(--bg);font-weight:600;font-size:12px;
color:var(--muted);text-transform:uppercase;letter-spacing:.02em}tr.group-start>*{border-top:2px solid #afb8c1}
th.template{font-family:ui-monospace,"DejaVu Sans Mono",monospace;background:#fff}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff;margin-right:4px}
.badge.ok{background:var(--ok)}.badge.warn,.badge.paused{background:var(--warn)}.badge.failed{background:var(--bad)}
.badge.running{background:var(--run)}.badge.idle{background:#6e7781}.badge.badge{color:#fff;white-space:nowrap}
table.status th,table.status td{padding:6px 6px;overflow-wrap:anywhere}table.status thead th{overflow-wrap:normal}
td.scope,td.age,td.conflicts{white-space:nowrap}td.parked{min-width:80px;overflow-wrap:normal}
td.direction{min-width:70px}td.state{min-width:150px;max-width:260px}td.last-run{min-width:110px;max-width:200px}
td.deletes-held{min-width:110px;max-width:200px}td.backlog{min-width:90px}td.actions{min-width:150px}
.why{color:var(--muted);font-size:12px;margin-top:3px;max-width:340px;overflow-wrap:anywhere}
details.exception{font-size:12px;color:var(--muted);margin-top:3px}details.exception summary{cursor:pointer}
.failure{color:var(--bad)}.at{color:var(--muted);font-size:12px}
.count{display:inline-block;margin:0 6px 2px 0;font-size:12px;color:var(--muted)}.count b{color:var(--fg)}
.bad,.count.bad b{color:var(--bad)}.warn{color:var(--warn)}.none{color:#8c959f}.mono,.key{font-family:ui-monospace,
"DejaVu Sans Mono",monospace;font-size:12px;overflow-wrap:anywhere}.reason{max-width:420px;overflow-wrap:anywhere}
.body{max-width:380px}form.action{display:inline-block;margin:0 4px 4px 0}button{font:inherit;font-size:12px;
padding:3px 10px;border:1px solid #afb8c1;border-radius:6px;background:var(--bg);cursor:pointer}
button.primary{background:var(--ok);color:#fff;border-color:var(--ok)}input[type=text]{font:inherit;font-size:12px;
padding:2px 6px;width:130px;margin-right:4px;border:1px solid #afb8c1;border-radius:6px}
.flash{padding:8px 12px;border-radius:6px;margin:4px 0 8px}.flash.ok{background:#dafbe1;border:1px solid #aceebb}
.flash.error{background:#ffebe9;border:1px solid #ffcecb}.summary{display:flex;gap:18px;margin:6px 0 0}
.summary span{font-weight:600}.foot{margin-top:24px}bdi{unicode-bidi:isolate}
"""
