"""The import graph of the four packages keeps its layers: the core names no package above it,
tools and planners never reach into evals, and no two modules import each other in a circle.

Read from the source with `ast` rather than from `sys.modules`, so an import inside a function or
under `TYPE_CHECKING` counts as much as one at the top: each is a dependency the layering must
allow, whether or not it runs on import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "agentflow": ROOT / "agentflow",
    "agentflow_planners": ROOT / "planners" / "agentflow_planners",
    "agentflow_tools": ROOT / "tools" / "agentflow_tools",
    "agentflow_evals": ROOT / "evals" / "agentflow_evals",
}
ABOVE = {
    "agentflow": {"agentflow_planners", "agentflow_tools", "agentflow_evals"},
    "agentflow_planners": {"agentflow_evals"},
    "agentflow_tools": {"agentflow_evals"},
    "agentflow_evals": set(),
}
"""For each package, the packages it must not import."""


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four packages."""
    found = {}
    for package, directory in PACKAGES.items():
        for path in sorted(directory.rglob("*.py")):
            parts = path.relative_to(directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name `module` imports, relative imports resolved; `from X import Y` gives
    `X.Y` (which `_target` shortens to `X` when Y is not a module)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _target(name: str, modules: dict[str, Path]) -> str:
    """The module of ours that importing `name` names: its longest prefix that is one of
    `modules`, else `name` itself (an import of ours that does not exist still counts)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return name


def _import_graph() -> nx.DiGraph[str]:
    """Module -> module edges between modules of the four packages. The implicit import of a
    parent package when a submodule is imported is not an edge: every module would otherwise
    import its own package's `__init__`, which imports it back."""
    modules = _modules()
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for name in _imported_names(module, path):
            if name.split(".")[0] not in PACKAGES:
                continue
            target = _target(name, modules)
            if target != module and not module.startswith(f"{target}."):
                graph.add_edge(module, target)
    return graph


def test_the_walk_sees_imports_in_functions_type_checking_and_relative(tmp_path: Path) -> None:
    source = tmp_path / "__init__.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from .sub.mod import name\n"
        "if TYPE_CHECKING:\n"
        "    import agentflow_evals.runner\n"
        "def f():\n"
        "    from agentflow_tools.search import LocalIndex\n",
        encoding="utf-8",
    )
    names = set(_imported_names("agentflow.pkg", source))
    assert {"agentflow.pkg.sibling", "agentflow.pkg.sub.mod", "agentflow_evals.runner"} <= names
    assert "agentflow_tools.search.LocalIndex" in names
    modules = _modules()
    assert _target("agentflow_tools.search.LocalIndex", modules) == "agentflow_tools.search"
    assert {name.split(".")[0] for name in modules} == set(PACKAGES)
    assert _import_graph().number_of_edges() > 100


def test_no_package_imports_a_package_above_it() -> None:
    graph = _import_graph()
    offending = sorted(
        f"{source} -> {target}"
        for source, target in graph.edges
        if target.split(".")[0] in ABOVE[source.split(".")[0]]
    )
    assert not offending, "imports against the layering:\n" + "\n".join(offending)


def test_no_import_cycle() -> None:
    graph = _import_graph()
    cycles = sorted(" -> ".join([*cycle, cycle[0]]) for cycle in nx.simple_cycles(graph))
    assert not cycles, f"{len(cycles)} import cycles:\n" + "\n".join(cycles[:20])
