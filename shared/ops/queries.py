"""What operators read, the same for the command line (``shared.cli``) and the ``/api/ops`` endpoints:
each template's watermarks and last runs, pause state, parked records and conflicts (callback counts are
metrics: shared/telemetry)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.preflight import Problem
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.checkpoints import PageStatus
from shared.state.queues import PoisonMessage, QueueKind, RequeueResult
from shared.state.store import Watermark, decode_key, split_parked_key
from shared.sync import operations, worker
from shared.sync.runs import ALL, DIRECTION_OUT, RunStatus, scope_of

NEVER_RUN = "never run"  # the status of a template with no watermark yet
RUNNING = "running"  # a run holds the scope's lease now (or a watermark whose first run has not finished)
INTERRUPTED = "interrupted"  # a run stopped (its lease ran out or was broken) before it finished: the next resumes it
T = TypeVar("T")


def _if_created(read: Callable[[], Iterable[T]]) -> list[T]:
    """What ``read`` lists; nothing when its table does not exist yet: nothing has run, and the read-only commands
    create no table."""
    try:
        return list(read())
    except ResourceNotFoundError:
        return []


def known_templates(runtime: Runtime) -> list[str]:
    """Template names in file order."""
    return [t.name for t in runtime.catalog]


def is_known(runtime: Runtime, name: str | None) -> bool:
    return name is not None and runtime.catalog.get(name) is not None


def status_rows(runtime: Runtime, parked_now: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per watermark (template, direction, scope), and one ``never run`` row per template without one;
    each with the template's pause state (``paused``, ``paused_by``), its held callbacks (``held_callbacks``) and
    its poison messages (``poison``: both poison queues). Values are typed: ``runs``, ``held_callbacks`` and
    ``poison`` numbers, ``counts`` an object, ``paused`` a boolean.

    ``parked`` is what is parked *now* in the row's direction and scope (a ``never run`` row: the template's), and
    the status says so: a run that parked records that have since been replayed shows ``completed`` with
    ``parked_note`` ``parked 1, since replayed``; a completed run whose scope has records parked now (a callback
    parked them) shows ``completed_with_parked``."""
    marks = {(m.template, m.direction, m.scope): m for m in _if_created(runtime.state.watermarks.all)}
    entries = parked_entries(runtime) if parked_now is None else parked_now
    now = Counter((e["template"], e["direction_code"], e["scope"]) for e in entries)
    by_template = Counter(e["template"] for e in entries)
    rows: list[dict[str, Any]] = []
    for template in runtime.catalog:
        pause = pause_state(runtime, template.name)
        callbacks = {"paused": pause.paused, "paused_by": pause.describe(),
                     "held_callbacks": held_callbacks(runtime, template.name),
                     "poison": poison_total(runtime.queues.backlog(template.name))}
        found = [m for (name, _, _), m in marks.items() if name == template.name]
        never = {"status": NEVER_RUN, "runs": 0, "parked_note": "", "last_run_finished": "", "counts": {},
                 "reason": "", "failed_at": "", "run": "", "progress": "", "held": "", "approval": "", **callbacks}
        if not found:
            rows.append({"template": template.name, "direction": "-", "scope": "-",
                         "parked": by_template[template.name], **never})
        else:  # records parked (by callbacks) in a direction or scope no run has had yet
            ran = {(m.direction, m.scope) for m in found}
            for (name, direction, scope), n in sorted(now.items()):
                if name == template.name and (direction, scope) not in ran:
                    rows.append({"template": name, "direction": direction, "scope": scope, "parked": n, **never})
        for mark in sorted(found, key=lambda m: m.row_key):
            parked_here = now[(template.name, mark.direction, mark.scope)]
            status, note = status_now(run_status(runtime, mark), mark.counts.get("failed", 0), parked_here)
            rows.append({"template": template.name, "direction": mark.direction, "scope": mark.scope,
                         "status": status, "runs": mark.run_seq, "parked": parked_here, "parked_note": note,
                         "last_run_finished": mark.last_run_finished, "counts": mark.counts,
                         "reason": mark.last_error, "failed_at": mark.last_failed_at,
                         "run": f"{mark.lease_owner} until {mark.lease_until}" if mark.lease_owner else "",
                         "progress": progress(runtime, mark), "held": held(mark), "approval": approval(mark),
                         **callbacks})
    return rows


def status_now(status: str, parked_by_run: int, parked_now: int) -> tuple[str, str]:
    """A finished run's status as it stands now (what is parked now decides), and a note when the two differ."""
    if status == RunStatus.COMPLETED_WITH_PARKED and not parked_now:
        return RunStatus.COMPLETED, f"parked {parked_by_run}, since replayed"
    if status == RunStatus.COMPLETED and parked_now:
        return RunStatus.COMPLETED_WITH_PARKED, f"{parked_now} parked since the run"
    return status, ""


@dataclass(frozen=True)
class PauseState:
    """Whether a template is paused, and by what: the ``pause`` command (or endpoint: who and when) and/or the
    ``SYNC_PAUSED_TEMPLATES`` setting (only a change of the setting lifts that one)."""

    template: str
    by_command: bool
    by_setting: bool
    changed_by: str = ""
    changed_at: str = ""
    reason: str = ""  # why, as the pause row holds it (an auto-pause's count and last error; an operator's words)

    @property
    def paused(self) -> bool:
        return self.by_command or self.by_setting

    def describe(self) -> str:
        """Who paused it: ``pause command by cli:ann at <time>`` (``: <reason>`` when the pause row holds one),
        ``setting SYNC_PAUSED_TEMPLATES``, both, or ``""``."""
        by = f"pause command by {self.changed_by or '?'} at {self.changed_at or '?'}"
        parts = [by + (f": {self.reason}" if self.reason else "")] if self.by_command else []
        return "; ".join(parts + ([f"setting {PAUSE_SETTING}"] if self.by_setting else []))


PAUSE_SETTING = "SYNC_PAUSED_TEMPLATES"
PAUSED_BY_SETTING = f"paused by the setting {PAUSE_SETTING}: remove it from that app setting to resume"


def pause_state(runtime: Runtime, template: str) -> PauseState:
    record = _if_found(lambda: runtime.state.callbacks.pause_record(template))
    return PauseState(template, by_command=bool(record and record["paused"]),
                      by_setting=template in runtime.settings.paused_templates,
                      changed_by=record["changed_by"] if record else "", changed_at=record["changed_at"] if record else "",
                      reason=str(record.get("reason", "")) if record else "")


def held_callbacks(runtime: Runtime, template: str) -> int:
    """Callback work items held while the template is paused (``resume`` puts them back on the queue)."""
    return len(_if_created(lambda: runtime.state.callbacks.held_items(template)))


def _if_found(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except ResourceNotFoundError:
        return None


def run_status(runtime: Runtime, mark: Watermark) -> str:
    """``running`` while a run holds the lease; ``interrupted`` when a run stopped without finishing (it left
    an open run and no failure); else the last run's status."""
    if mark.lease_live(runtime.state.clock.now()):
        return RUNNING
    if mark.open_run and mark.last_status != RunStatus.FAILED:
        return INTERRUPTED
    return mark.last_status or RUNNING


def progress(runtime: Runtime, mark: Watermark) -> str:
    """How far the open full scan of a scope got: key ranges done of those planned (``+``: planning goes on),
    records seen (of Commerce's ``$count``), and the step of its delete search."""
    if mark.direction != DIRECTION_OUT or not mark.open_run:
        return ""
    checkpoints = runtime.state.checkpoints
    plan = checkpoints.get_plan(mark.template, mark.scope, mark.open_run)
    if plan is None:
        return ""
    done = [p for p in checkpoints.pages(plan) if p.status == PageStatus.DONE]
    seen = sum(p.counts.get("seen", 0) for p in done)
    text = (f"ranges {len(done)}/{plan.planned}{'' if plan.planning_done else '+'}, seen {seen}"
            + (f" of {plan.total}" if plan.total >= 0 else ""))
    if plan.decision and plan.delete_passes:
        passes = checkpoints.delete_passes(plan)
        text += f", delete passes {sum(p.status == PageStatus.DONE for p in passes)}/{plan.delete_passes}"
    elif plan.delete_checks:
        checks = checkpoints.delete_checks(plan)
        text += f", delete checks {sum(c.status == PageStatus.DONE for c in checks)}/{plan.delete_checks}"
    elif plan.finalizing:
        text += ", delete search"
    return text


def held(mark: Watermark) -> str:
    """The deletes the last full scan held back (the mass-delete guard), until a run closes without a hold."""
    if not mark.held_deletes:
        return ""
    return f"{mark.held_deletes} deletes of {mark.held_states} records held by run {mark.held_run} at {mark.held_at}"


def approval(mark: Watermark) -> str:
    """The last approval of held deletes: who, when, and whether a run has used it."""
    if not mark.approved_at:
        return ""
    used = f"used by run {mark.approval_spent_by}" if mark.approval_spent_by else "pending: the next run deletes"
    return f"{mark.approved_deletes} deletes approved by {mark.approved_by} at {mark.approved_at}; {used}"


def paused(runtime: Runtime) -> dict[str, bool]:
    """Each template's pause state (an app setting or the state table)."""
    return {t.name: worker.is_paused(runtime, t.name) for t in runtime.catalog}


def status(runtime: Runtime) -> dict[str, Any]:
    return {"watermarks": status_rows(runtime), "paused": paused(runtime),
            "queues": queues(runtime), "refreshes": refreshes(runtime)}


def refreshes(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each template's refresh row (``shared.state.refresh``): whether one is pending, since when, how many
    callbacks asked for it, and when the last one started; templates that never asked for one are left out."""
    known = {t.name for t in runtime.catalog}
    return {r.template: r.as_dict() for r in _if_created(runtime.state.refresh.all) if r.template in known}


def queues(runtime: Runtime) -> dict[str, dict[str, dict[str, int]]]:
    """Each template's backlog: ``{"callbacks": {"queued": n, "poison": m}, "pages": {...}}`` (queues not created
    yet count 0; Storage's counts are approximate)."""
    return {t.name: runtime.queues.backlog(t.name) for t in runtime.catalog}


def poison_total(backlog: dict[str, dict[str, int]]) -> int:
    return sum(q["poison"] for q in backlog.values())


# -- poison messages: what the host gave up on (``<queue>-poison``) ------------------------------------------


def _kinds(kind: str | None) -> list[QueueKind]:
    return [QueueKind(kind)] if kind else list(QueueKind)


def poison(runtime: Runtime, template: str | None = None, kind: str | None = None) -> list[PoisonMessage]:
    """The poison messages of one template or all, of one queue kind or both (at most the first 32 per poison
    queue: a peek takes nothing, and Storage peeks no further)."""
    names = [template] if template else known_templates(runtime)
    return [m for name in names for k in _kinds(kind) for m in runtime.queues.peek_poison(name, k)]


def poison_one(runtime: Runtime, template: str, message_id: str, kind: str | None = None) -> PoisonMessage | None:
    return next((m for m in poison(runtime, template, kind) if m.id == message_id), None)


def requeue_poison(runtime: Runtime, template: str, ids: Sequence[str] | None, kind: str | None = None) -> list[
        RequeueResult]:
    """Requeue poison messages of a template: every one (``ids`` None) or those named, looked for in both of
    its poison queues unless ``kind`` says which; a named message found in neither is ``not_found``."""
    if ids is None:
        return [r for k in _kinds(kind) for r in runtime.queues.requeue_poison(template, k)]
    results: list[RequeueResult] = []
    left = list(dict.fromkeys(ids))
    for k in _kinds(kind):
        found = [r for r in runtime.queues.requeue_poison(template, k, left) if r.outcome != "not_found"]
        results += found
        left = [i for i in left if i not in {r.id for r in found}]
        if not left:
            break
    return results + [RequeueResult(template, kind or "", i, "not_found") for i in left]


def conflicts(runtime: Runtime, template: str | None = None) -> list[dict[str, Any]]:
    """Recorded conflicts (both values and the winner), of one template or all."""
    return [dict(e) for e in _if_created(lambda: runtime.state.conflicts.all(template))]


# ``parked --direction``: the operator's names of the two directions, as parked records store them.
PARKED_DIRECTIONS = {"outbound": "fo_to_dataverse", "inbound": "dataverse_to_fo"}


def parked(runtime: Runtime, template: str | None = None, *, error_class: str | None = None,
           direction: str | None = None) -> list[dict[str, Any]]:
    """Parked records as operators see them, of one template or all; only those of an error class and of a
    direction (``outbound`` or ``inbound``), when given."""
    wanted = PARKED_DIRECTIONS.get(direction, direction) if direction else None
    entries = [operations.parked_entry(e) for e in _if_created(lambda: runtime.state.parked.all(template))]
    return [e for e in entries if (error_class is None or e["error_class"] == error_class)
            and (wanted is None or split_parked_key(e["row_key"])[0] == wanted)]


def parked_summary(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """How many records are parked per template, direction and error class (most first)."""
    counts = Counter((e["template"], _direction_name(e["row_key"]), e["error_class"] or "") for e in entries)
    return [{"template": t, "direction": d, "error_class": c, "count": n}
            for (t, d, c), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _direction_name(row_key: str) -> str:
    stored = split_parked_key(row_key)[0]
    return next((name for name, value in PARKED_DIRECTIONS.items() if value == stored), stored)


def parked_one(runtime: Runtime, template: str, row_key: str) -> dict[str, Any] | None:
    entity = runtime.state.parked.get(template, row_key)
    return None if entity is None else operations.parked_entry(entity)


def find_parked(runtime: Runtime, template: str, typed: Sequence[str]) -> list[dict[str, Any]]:
    return match_parked(parked(runtime, template), typed)


def match_parked(entries: Sequence[dict[str, Any]], typed: Sequence[str]) -> list[dict[str, Any]]:
    """The parked records (of one template) that a key as an operator types it names, in either direction: the
    row key as ``parked`` lists it (``%in%`` prefix and all), or without the prefix, or the key parts (``LC-1``;
    ``usmf GOLD`` or ``usmf|GOLD``), or the JSON key ``parked`` shows (``["usmf", "GOLD"]``)."""
    wanted: set[tuple[str, ...]] = set()
    text = " ".join(typed)
    if len(typed) == 1:
        wanted.add(decode_key(split_parked_key(text)[1]))
        wanted.add((text,))
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            wanted.add(tuple(str(p) for p in parsed))
        elif isinstance(parsed, dict):
            wanted.add(tuple(str(p) for p in parsed.values()))
    else:
        wanted.add(tuple(typed))
    exact = [e for e in entries if e["row_key"] == text]
    if exact:
        return exact
    return [e for e in entries if decode_key(split_parked_key(e["row_key"])[1]) in wanted]


# -- the status page: everything it shows, read in one place -------------------------------------------------


@dataclass(frozen=True)
class TemplateView:
    """What belongs to a template as a whole: its pause, its queues, its conflicts, its poison messages."""

    name: str
    pause: PauseState
    backlog: dict[str, dict[str, int]]  # queries.queues: {"callbacks": {"queued", "poison"}, "pages": {...}}
    held_callbacks: int
    conflicts: int
    poison: list[PoisonMessage]

    @property
    def queued(self) -> int:
        return sum(q["queued"] for q in self.backlog.values())

    @property
    def poisoned(self) -> int:
        return poison_total(self.backlog)


@dataclass(frozen=True)
class Overview:
    """The status page's data: one row per template x direction x scope (``status_rows``), each template's
    view, the parked records (with the scope each belongs to) and when it was read."""

    read_at: datetime
    rows: list[dict[str, Any]]
    templates: dict[str, TemplateView]
    parked: list[dict[str, Any]]

    def parked_by_class(self, template: str, direction: str, scope: str) -> dict[str, int]:
        """Parked records of one row, counted by error class (most first)."""
        counts = Counter(e["error_class"] or "" for e in self.parked
                         if (e["template"], e["direction_code"], e["scope"]) == (template, direction, scope))
        return dict(counts.most_common())


def parked_entries(runtime: Runtime) -> list[dict[str, Any]]:
    """Every parked record with its direction's code and the run scope it belongs to."""
    return [{**e, "direction_code": split_parked_key(e["row_key"])[0], "scope": parked_scope(runtime, e)}
            for e in parked(runtime)]


def overview(runtime: Runtime) -> Overview:
    entries = parked_entries(runtime)
    conflict_counts = Counter(e["PartitionKey"] for e in conflicts(runtime))
    views = {}
    for name in known_templates(runtime):
        views[name] = TemplateView(name, pause_state(runtime, name), runtime.queues.backlog(name),
                                   held_callbacks(runtime, name), conflict_counts.get(name, 0),
                                   poison(runtime, name))
    return Overview(runtime.state.clock.now(), status_rows(runtime, entries), views, entries)


def parked_scope(runtime: Runtime, entry: dict[str, Any]) -> str:
    """The run scope a parked record belongs to: its legal entity for a company-specific template's Commerce ->
    Dataverse record, else ``all``."""
    direction, key = split_parked_key(entry["row_key"])
    if direction != DIRECTION_OUT or runtime.catalog.get(entry["template"]) is None:
        return ALL
    try:
        return scope_of(runtime.catalog.plan(entry["template"]).company_of(decode_key(key)))
    except (IndexError, ValueError):  # parked under a digest (no usable key)
        return ALL


def check(runtime: Runtime, template: str | None = None) -> list[Problem]:
    """``check``: every problem a run would fail on, found afresh (nothing cached, nothing written): the preflight
    of every template (or one) with the companies of ``SYNC_LEGAL_ENTITIES``, and Table Storage."""
    problems: list[Problem] = []
    if runtime.preflight is not None:
        problems += runtime.preflight.problems([template] if template else None, runtime.settings.legal_entities,
                                               fresh=True, list_companies=True)
    return problems + storage_problems(runtime)


def storage_problems(runtime: Runtime) -> list[Problem]:
    """Table Storage answers (one query for the watermarks table; a table not created yet is no problem)."""
    name = f"{runtime.settings.table_prefix}watermarks"
    try:
        next(iter(runtime.state.service.query_tables("TableName eq @name", parameters={"name": name})), None)
    except AzureError as exc:
        setting, detail = storage_problem(runtime.settings, exc)
        return [Problem(setting, detail, transient=True)]
    return []


AZURITE_MARKERS = ("usedevelopmentstorage=true", "devstoreaccount1", "127.0.0.1", "localhost")


def storage_problem(settings: Settings, exc: AzureError) -> tuple[str, str]:
    """The setting to check and what to do when Table or Queue Storage cannot be used: one line, the same for
    ``check`` and for every other command that meets it (``is Azurite running?`` for a local connection string)."""
    connection = settings.storage_connection.get_secret_value() if settings.storage_connection is not None else ""
    setting = "AzureWebJobsStorage" if connection else "SYNC_STORAGE_TABLE_ENDPOINT"
    reason = " ".join(str(exc).split())[:300]
    local = any(marker in connection.lower() for marker in AZURITE_MARKERS)
    hint = ("is Azurite running? (./dev demo and the tests start it; by hand: npx azurite --location .azurite) "
            if local else "")
    return setting, (f"cannot reach Table Storage ({type(exc).__name__}: {reason}); {hint}check {setting} (the storage "
                     "account's connection string, or its table endpoint with the managed identity) and the network")
