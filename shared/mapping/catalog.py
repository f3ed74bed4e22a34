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
    templates: dict[str, Template] = {}
    for path in files:
        template = load_template(path)
        templates[template.name] = template
    templates = {t.name: t for t in lookup_order(list(templates.values()))}
    return Catalog(templates=templates, plans={name: Plan(t) for name, t in templates.items()})


def lookup_order(templates: list[Template]) -> list[Template]:
    """``templates`` (by name) with each after the templates whose tables its lookups point at, so that iterating
    the catalog (``sync --all``, the demo) writes a card before the tier rows that look it up. A cycle keeps the
    name order for what is left."""
    writes = {t.dataverse.entity_set: t.name for t in templates}
    needs = {t.name: {writes[r.lookup.entity_set] for r in t.fields if r.lookup is not None
                      and r.lookup.entity_set in writes and writes[r.lookup.entity_set] != t.name} for t in templates}
    ordered: list[Template] = []
    left = sorted(templates, key=lambda t: t.name)
    while left:
        done = {t.name for t in ordered}
        ready = [t for t in left if needs[t.name] <= done] or left[:1]
        ordered.append(ready[0])
        left.remove(ready[0])
    return ordered
