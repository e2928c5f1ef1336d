"""The import graph has layers that never loop.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a ``simulator`` or
``advisor`` module, at module level or inside a function (a function-level import that closes a circle works
only by the order of first calls, so it counts). ``from package import name`` counts as an import of the
submodule ``package.name`` where that is a module.

The layers, bottom up: ``simulator`` (simulation, no knowledge of the advisor), the science library of
``advisor`` (recording protocols, statistics, features, classifiers, evaluation, modalities), the application
(search, planning, tracking, reports, figures, workspace) and the command line (``advisor.cli``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("simulator", "advisor")

SCIENCE_PACKAGE = "advisor.science"
"""The science library: what a recording is and how well it identifies the rule."""

APPLICATION_PACKAGE = "advisor.application"
"""The application: design search, plans, MLflow, reports, workspaces and terminal output."""

SHARED = {"advisor", "advisor.__main__", "advisor.errors"}
"""Outside the layers: the package, ``python -m advisor``, and the error type every layer raises."""


def _in(package: str, names: set[str] | dict[str, Path]) -> set[str]:
    return {m for m in names if m == package or m.startswith(package + ".")}


def modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (``simulator.config.GROUPS`` → simulator.config)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module → the modules of the two packages it imports, anywhere in its source."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, up level - 1 more
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _resolve(target, known)
                if resolved and resolved != name:
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader itself, on a made-up tree: a function-level import closes a circle, and it is found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "simulator" / "a.py").write_text("from simulator.b import x\n")
    (tmp_path / "simulator" / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "advisor" / "c.py").write_text("import simulator.a.thing\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    graph = import_graph()
    assert graph["simulator.a"] == {"simulator.b"} and graph["simulator.b"] == {"simulator", "simulator.a"}
    assert graph["advisor.c"] == {"simulator.a"}
    assert cycles(graph) == [["simulator.a", "simulator.b"]]


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_simulator_never_imports_the_advisor() -> None:
    graph = import_graph()
    offending = {m: sorted(t for t in ts if t.startswith("advisor"))
                 for m, ts in graph.items() if m.startswith("simulator")}
    assert {m: ts for m, ts in offending.items() if ts} == {}


def test_the_science_layer_never_imports_the_application_or_the_cli() -> None:
    graph = import_graph()
    science, application = _in(SCIENCE_PACKAGE, graph), _in(APPLICATION_PACKAGE, graph)
    assert {"advisor.science.protocol", "advisor.science.evaluation"} <= science
    assert {"advisor.application.search", "advisor.application.reports"} <= application
    offending = {m: sorted(t for t in graph[m] if t in application or t.startswith("advisor.cli"))
                 for m in science}
    assert {m: ts for m, ts in offending.items() if ts} == {}


def test_the_application_never_imports_the_cli() -> None:
    graph = import_graph()
    offending = {m: sorted(t for t in graph[m] if t.startswith("advisor.cli"))
                 for m in _in(APPLICATION_PACKAGE, graph)}
    assert {m: ts for m, ts in offending.items() if ts} == {}


def test_every_advisor_module_has_a_layer() -> None:
    """A module lives in a layer's folder (science/, application/, cli/), or is one of the few shared ones."""
    known = modules()
    placed = _in(SCIENCE_PACKAGE, known) | _in(APPLICATION_PACKAGE, known) | _in("advisor.cli", known) | SHARED
    assert sorted(m for m in known if m.startswith("advisor") and m not in placed) == []
