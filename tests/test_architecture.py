"""The package's layering is a rule, not a habit (docs/architecture.md draws it).

import-linter checks the contracts in pyproject.toml: the shells (cli, serve) on top, then
analysis, then training and recognition side by side over a core that imports none of them;
recognition without PyTorch; no cycles between siblings. A second check walks the whole import
graph (function-level imports included) and refuses any cycle between two modules.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

importlinter_cli = pytest.importorskip("importlinter.cli")
grimp = pytest.importorskip("grimp")


@pytest.fixture
def fervid_on_path(monkeypatch):
    """import-linter reads the fervid of this tree, whichever one is installed."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)


def test_import_contracts_are_kept(fervid_on_path, capsys):
    rc = importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert rc == importlinter_cli.EXIT_STATUS_SUCCESS, out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_module_imports_itself_through_others(fervid_on_path):
    graph = grimp.build_graph("fervid", cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    cycles = _cycles(edges)
    detail = [" <-> ".join(c) for c in cycles]
    assert not cycles, "import cycles: " + "; ".join(detail)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.skipif(os.name != "posix", reason="line counts only")
def test_modules_stay_readable():
    """No module of the package grows much past 400 lines (split it by job instead)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "fervid").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 410}
    assert not long, long
