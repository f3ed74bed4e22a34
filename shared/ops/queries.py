"""What operators read, the same for the command line (``shared.cli``) and the ``/api/ops`` endpoints:
each template's watermarks and last runs, pause state and counters, parked records and conflicts."""

from __future__ import annotations

from typing import Any

from shared.runtime import Runtime
from shared.sync import operations, worker

NEVER_RUN = "never run"  # the status of a template with no watermark yet
RUNNING = "running"  # a watermark whose first run has not finished


def known_templates(runtime: Runtime) -> list[str]:
    """Template names in file order."""
    return [t.name for t in runtime.catalog]


def is_known(runtime: Runtime, name: str | None) -> bool:
    return name is not None and runtime.catalog.get(name) is not None


def status_rows(runtime: Runtime) -> list[dict[str, str]]:
    """One row per watermark (template, direction, scope), and one ``never run`` row per template without one."""
    marks = {(m.template, m.direction, m.scope): m for m in runtime.state.watermarks.all()}
    rows: list[dict[str, str]] = []
    for template in runtime.catalog:
        found = [m for (name, _, _), m in marks.items() if name == template.name]
        if not found:
            rows.append({"template": template.name, "direction": "-", "scope": "-", "status": NEVER_RUN, "runs": "0",
                         "last_run_finished": "", "counts": "", "reason": ""})
        for mark in sorted(found, key=lambda m: m.row_key):
            rows.append({"template": template.name, "direction": mark.direction, "scope": mark.scope,
                         "status": mark.last_status or RUNNING, "runs": str(mark.run_seq),
                         "last_run_finished": mark.last_run_finished, "counts": mark.last_counts,
                         "reason": mark.last_error})
    return rows


def paused(runtime: Runtime) -> dict[str, bool]:
    """Each template's pause state (an app setting or the state table)."""
    return {t.name: worker.is_paused(runtime, t.name) for t in runtime.catalog}


def counters(runtime: Runtime) -> dict[str, dict[str, int]]:
    return {t.name: runtime.state.callbacks.counters(t.name) for t in runtime.catalog}


def status(runtime: Runtime) -> dict[str, Any]:
    return {"watermarks": status_rows(runtime), "paused": paused(runtime), "counters": counters(runtime)}


def conflicts(runtime: Runtime, template: str | None = None) -> list[dict[str, Any]]:
    """Recorded conflicts (both values and the winner), of one template or all."""
    return [dict(e) for e in runtime.state.conflicts.all(template)]


def parked(runtime: Runtime, template: str | None = None) -> list[dict[str, Any]]:
    """Parked records as operators see them, of one template or all."""
    return [operations.parked_entry(e) for e in runtime.state.parked.all(template)]


def parked_one(runtime: Runtime, template: str, row_key: str) -> dict[str, Any] | None:
    entity = runtime.state.parked.get(template, row_key)
    return None if entity is None else operations.parked_entry(entity)
