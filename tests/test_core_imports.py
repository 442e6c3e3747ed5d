"""The import graph of nestkit's modules has no cycle, and no module outgrows one concept.

Edges are the imports Python executes: module-level ones and those inside functions (a
function-level import is still a dependency, just a later one). Imports under
``if TYPE_CHECKING:`` never run and are not edges, nor is the implicit import of a module's
parent package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nestkit"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The nestkit modules that ``name`` imports (innermost known module of each import)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in child.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path (first == last), or [] when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := walk(start)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_nestkit_modules() -> None:
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert "nestkit.registry" in graph["nestkit.plugins"]  # the graph is really built
    cycle = _cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_registry_depends_on_nothing_but_the_errors() -> None:
    modules = _modules()
    # plugin_errors words the errors a component's own code raises, field_errors those of a config;
    # both import only nestkit.errors
    assert _imported("nestkit.registry", modules["nestkit.registry"], modules) == {
        "nestkit.errors", "nestkit.plugin_errors", "nestkit.field_errors"}
    assert _imported("nestkit.plugin_errors", modules["nestkit.plugin_errors"], modules) == {"nestkit.errors"}
    assert _imported("nestkit.field_errors", modules["nestkit.field_errors"], modules) == {"nestkit.errors"}
    assert _imported("nestkit.hookspecs", modules["nestkit.hookspecs"], modules) == set()


# Issue 12's limits: a module longer than this holds more than one concept and should be split.
MAX_LINES = 400
MAX_LINES_IN_TRAIN = 250


def test_no_module_outgrows_its_line_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert sizes["nestkit.train.loop"] > 100  # the sizes are really read
    too_long = {name: n for name, n in sizes.items()
                if n > (MAX_LINES_IN_TRAIN if name.startswith("nestkit.train.") else MAX_LINES)}
    assert not too_long, f"split these modules (lines): {too_long}"
