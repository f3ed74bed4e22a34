"""Loads and validates every template file in ``mappings/`` at start-up."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.mapping.model import Template
from shared.mapping.plan import Plan

DEFAULT_MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"


class MappingFileError(ValueError):
    """A template file is broken; the message names the file, the row and the problem."""


def _describe_location(raw: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into words: ``fields[3] (CARDTENDERTYPE).map_type``."""
    parts: list[str] = []
    node = raw
    for step in loc:
        if isinstance(step, int):
            label = f"[{step}]"
            if isinstance(node, list) and 0 <= step < len(node) and isinstance(node[step], dict):
                row_name = node[step].get("fo_field") or node[step].get("fo")
                if row_name:
                    label += f" ({row_name})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(step))
        node = node[step] if isinstance(node, (dict, list)) and _has(node, step) else None  # type: ignore[index]
    return "".join(parts) or "(file)"


def _has(node: dict[str, Any] | list[Any], step: int | str) -> bool:
    if isinstance(node, list):
        return isinstance(step, int) and 0 <= step < len(node)
    return step in node


def load_template(path: Path) -> Template:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MappingFileError(f"{path.name}: not valid JSON: {exc}") from exc
    try:
        template = Template.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_describe_location(raw, tuple(err['loc']))}: {err['msg']}" for err in exc.errors()
        )
        raise MappingFileError(f"{path.name}: {problems}") from exc
    if template.name != path.stem:
        raise MappingFileError(f"{path.name}: name {template.name!r} must equal the file name {path.stem!r}")
    return template


@dataclass(frozen=True)
class Catalog:
    """Every template, validated and compiled once per process."""

    templates: dict[str, Template]
    plans: dict[str, Plan] = field(repr=False)

    def __iter__(self) -> Iterator[Template]:
        return iter(self.templates.values())

    def get(self, name: str) -> Template | None:
        return self.templates.get(name)

    def plan(self, name: str) -> Plan:
        return self.plans[name]


MAPPINGS_DIR_SETTING = "SYNC_MAPPINGS_DIR"


def load_catalog(directory: Path | None = None) -> Catalog:
    """Every template file of ``directory``; by default ``SYNC_MAPPINGS_DIR`` (read here too, since
    ``function_app.py`` indexes the triggers at import, before settings are validated), else ``mappings/``."""
    configured = os.environ.get(MAPPINGS_DIR_SETTING, "").strip()
    directory = directory or (Path(configured) if configured else DEFAULT_MAPPINGS_DIR)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise MappingFileError(f"{directory}: no template files (*.json) found")
    loaded: dict[str, Template] = {}
    for path in files:
        template = load_template(path)
        loaded[template.name] = template
    templates = {t.name: t for t in dependency_order(list(loaded.values()))}
    return Catalog(templates=templates, plans={name: Plan(t) for name, t in templates.items()})


def dependency_order(templates: list[Template]) -> list[Template]:
    """Templates in file order, except that one whose lookups point at another template's table comes after it
    (``sync --all`` on an empty Dataverse then writes the cards before the balances that look them up)."""
    by_table = {t.dataverse.entity_set: t.name for t in templates}
    needs = {t.name: {by_table[row.lookup.entity_set] for row in t.fields
                      if row.lookup is not None and by_table.get(row.lookup.entity_set) not in (None, t.name)}
             for t in templates}
    ordered: list[Template] = []
    placed: set[str] = set()
    pending = list(templates)
    while pending:
        ready = next((t for t in pending if needs[t.name] <= placed), pending[0])  # a cycle keeps file order
        ordered.append(ready)
        placed.add(ready.name)
        pending.remove(ready)
    return ordered
