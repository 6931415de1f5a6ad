"""The package's import structure: no cycles between modules (the layer contracts themselves are
import-linter's, run by CI: `lint-imports`, contracts in pyproject.toml)."""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")  # import-linter's graph library (the test extra)


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles():
    graph = grimp.build_graph("alexcompress", exclude_type_checking_imports=True)
    ours = {m for m in graph.modules if m.startswith("alexcompress.")}
    assert "alexcompress.api" in ours and "alexcompress.codec.container" in ours
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in ours} for m in ours}
    assert find_cycles(edges) == []


def test_a_cycle_is_found():
    """The check can fail: the old `dcz` -> `runtime` -> `dcz` pair is reported."""
    edges = {"dcz": {"runtime", "container"}, "runtime": {"dcz"}, "container": set()}
    assert find_cycles(edges) == [["dcz", "runtime"]]
