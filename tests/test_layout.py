"""The package's layout as a test: its import graph has no cycles, its layers point one way,
and no module is over 400 lines.

The graph is read from the source with `ast`, so it holds every import, at module level and
inside functions (a lazy import is still an arrow: it only moves the cycle to run time), and
imports under `if TYPE_CHECKING:` too (a type-only cycle is still two modules that cannot be
understood apart). `from pkg import name` is an arrow to the module `pkg.name` when there is
one, else to `pkg` itself. Importing `a.b.c` runs `a/__init__` and `a/b/__init__` first;
those implicit arrows to parent packages are not counted (every module would be in a cycle
with its package's re-exports otherwise).
"""
from __future__ import annotations

import ast
import pathlib

PKG = "replicate_jupyter"
ROOT = pathlib.Path(__file__).resolve().parent.parent / PKG
MAX_LINES = 400

#: folders (and modules) whose code must never import the notebook layer: data, models,
#: cost, backends and the API sit below it; the notebook uses them, never the reverse
BELOW_NOTEBOOK = ("prediction", "model", "cost", "runners", "serve", "hf", "api", "errors", "progress")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _absolute(mod: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(mod: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Every module of the package that `mod` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PKG or alias.name.startswith(PKG + "."):
                    out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(mod, path.name == "__init__.py", node)
            if base != PKG and not base.startswith(PKG + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    out.discard(mod)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each given as one
    concrete cycle through it, so a failure names the arrows to cut."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[set[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for v in sorted(g):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(old)
    return [_one_cycle(g, comp) for comp in sccs]


def circles(g: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Each import circle as (one concrete cycle, every module caught in it)."""
    out = []
    for cyc in cycles(g):
        members: set[str] = set(cyc)
        grew = True
        while grew:  # the whole strongly connected component the cycle lies in
            grew = False
            for v in list(g):
                if v not in members and g[v] & members and _reaches(g, members, v):
                    members.add(v)
                    grew = True
        out.append((cyc, sorted(members)))
    return out


def _reaches(g: dict[str, set[str]], targets: set[str], start: str) -> bool:
    """Whether `start` is reached from `targets` (so, with an arrow into them, it is in their circle)."""
    seen, todo = set(), list(targets)
    while todo:
        v = todo.pop()
        for w in g.get(v, ()):
            if w == start:
                return True
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


def _one_cycle(g: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of `comp` (breadth first, inside comp)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """The reader itself, on a module with every form of import (so the tests below cannot
    pass by reading nothing)."""
    src = (
        "import replicate_jupyter.a\n"
        "from replicate_jupyter import b\n"
        "from replicate_jupyter.c import thing\n"
        "from . import d\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from replicate_jupyter.e import T\n"
        "def f():\n"
        "    from replicate_jupyter.f import g\n"
    )
    path = tmp_path / "x.py"
    path.write_text(src)
    known = {f"{PKG}.{n}" for n in "abcdef"} | {PKG}
    assert imports_of(f"{PKG}.x", path, known) == known - {PKG}
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"a"}, "a2": {"e"}}
    g["a"] = {"b", "a2"}
    assert cycles(g) == [["a", "a2", "e", "a"]]
    assert circles(g) == [(["a", "a2", "e", "a"], ["a", "a2", "b", "c", "e"])]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_holds_the_arrows_the_design_draws():
    g = graph()
    assert len(g) > 40
    assert f"{PKG}.prediction.events" in g[f"{PKG}.prediction.prediction"]
    assert f"{PKG}.api" in g[f"{PKG}.notebook.forms.form"]  # the notebook uses the API


def test_no_import_cycles():
    found = circles(graph())
    assert not found, "import cycles (cut one arrow of each):\n" + "\n".join(
        " -> ".join(c) + f"\n    (modules in this circle: {', '.join(m)})" for c, m in found)


def test_layers_point_one_way():
    g = graph()
    bad = []
    for mod, targets in sorted(g.items()):
        rel = mod[len(PKG) + 1:] if mod != PKG else ""
        if rel.split(".")[0] not in BELOW_NOTEBOOK:
            continue
        for t in sorted(targets):
            if t == f"{PKG}.notebook" or t.startswith(f"{PKG}.notebook."):
                bad.append(f"{mod} -> {t}")
    assert not bad, "imports of the notebook layer from below it:\n" + "\n".join(bad)


def test_data_objects_never_import_rendering():
    g = graph()
    for mod in ("prediction.prediction", "prediction.files", "prediction.events", "cost.ledger"):
        assert not {t for t in g[f"{PKG}.{mod}"] if ".notebook" in t}, mod


def test_no_module_is_over_400_lines():
    """Python modules only: the embedded models' weights, tokenizer and config are data."""
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, "modules over 400 lines: " + ", ".join(f"{m} ({n})" for m, n in sorted(long.items()))
