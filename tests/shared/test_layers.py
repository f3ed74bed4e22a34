"""The package's import graph: no cycles, and each layer imports only the layers below it.

Read from the source with ``ast`` (every ``import``, at module level or inside a function, except under
``if TYPE_CHECKING:``), so a function-local import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> set[str]:
    """The project modules ``name`` imports (``from a.b import c`` is ``a.b.c`` when that is a module)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_is_no_import_cycle_in_the_package() -> None:
    assert cycles(GRAPH) == []


# What each layer may not import: the lower a layer, the fewer it knows.
FORBIDDEN = {
    "shared.messages": ("shared.",),
    "shared.http": ("shared.sync", "shared.state", "shared.dataverse", "shared.commerce", "shared.mapping"),
    "shared.state": ("shared.sync", "shared.triggers", "shared.cli", "shared.ops", "shared.runtime"),
    "shared.mapping": ("shared.sync", "shared.state", "shared.http"),
    "shared.sync": ("shared.triggers", "shared.cli", "shared.ops", "shared.runtime"),
    # Instruments and spans, recorded from every layer above http; only its storage sampler reads state.
    "shared.telemetry": ("shared.sync", "shared.triggers", "shared.cli", "shared.ops", "shared.runtime",
                         "shared.dataverse", "shared.commerce", "shared.mapping", "shared.preflight"),
    "shared.ops": ("shared.triggers", "shared.cli"),  # the endpoints and the CLI share shared.ops.queries
    # The preflight checks the clients and the templates; runs (sync), the CLI and the runtime call it.
    "shared.preflight": ("shared.state", "shared.sync", "shared.ops", "shared.triggers", "shared.cli", "shared.runtime"),
}
# Application services that act on a whole runtime (the composition root) rather than on one engine.
TAKES_A_RUNTIME = {"shared.sync.operations", "shared.sync.worker"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    offending = sorted(f"{name} -> {target}" for name, targets in GRAPH.items()
                       if name == layer or name.startswith(layer + ".")
                       for target in targets if target.startswith(FORBIDDEN[layer]) and not target.startswith(layer)
                       and not (name in TAKES_A_RUNTIME and target == "shared.runtime"))
    assert offending == []
