"""The package layout holds: generic packages import no domain, imports only go downwards, no import circles.

Imports are read with ``ast`` from every ``src/domainvlm/**.py`` (function-level imports included), so a lazy
``from ..domains.wafer import x`` inside a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "domainvlm"
GENERIC = ("data", "models", "train", "evaluate", "inference", "serve", "webui", "commands")
# Lower layers never import higher ones. The registry (domainvlm.domains itself) is core: generic code finds
# domains through it; the domain sub-packages sit above every generic package but the commands.
LAYERS = [("errors", "io", "config", "taxonomy", "lang", "domains"), ("data",), ("models",), ("inference",),
          ("evaluate",), ("train",), ("serve", "webui"), ("domains.*",), ("commands", "cli", "__main__")]


def _module_name(path: Path) -> str:
    parts = ["domainvlm", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, name: str, known: dict) -> list[tuple[str, int]]:
    """(imported domainvlm module, line) for every import in the file; ``from pkg import mod`` names ``pkg.mod``."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("domainvlm")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("domainvlm"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out += [(m, node.lineno) for m in subs] or [(target, node.lineno)]
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    known = _modules()
    return {name: _imports(path, name, known) for name, path in known.items()}


def _layer(module: str) -> int:
    rel = module.removeprefix("domainvlm").removeprefix(".")
    if rel.startswith("domains."):
        rel = "domains.*"
    top = rel if rel == "domains.*" else (rel.split(".")[0] or "errors")  # the package itself: core
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_generic_packages_import_no_domain_module():
    bad = [f"{m} (line {line}) imports {t}" for m, imps in _graph().items() for t, line in imps
           if m.split(".")[1] in GENERIC and t.startswith("domainvlm.domains.")]
    assert not bad, "generic code must find domains through the registry (domainvlm.domains):\n" + "\n".join(bad)


def test_a_domain_imports_no_other_domain():
    def domain_of(m):
        parts = m.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "domains" else None

    bad = [f"{m} (line {line}) imports {t}" for m, imps in _graph().items() for t, line in imps
           if domain_of(m) and domain_of(t) and domain_of(t) != domain_of(m)]
    assert not bad, "\n".join(bad)


def test_imports_only_go_downwards():
    bad = [f"{m} (line {line}) imports {t}" for m, imps in _graph().items() for t, line in imps
           if _layer(t) > _layer(m)]
    assert not bad, "upward imports (layers: " + " < ".join("/".join(x) for x in LAYERS) + "):\n" + "\n".join(bad)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph = {m: sorted({t for t, _ in imps if t != m}) for m, imps in _graph().items()}
    circles = _cycles(graph)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []


@pytest.mark.parametrize("source, target", [("from ..domains.wafer import head", "domainvlm.domains.wafer.head"),
                                            ("from ..domains import wafer", "domainvlm.domains.wafer"),
                                            ("import domainvlm.domains.radiology.sources",
                                             "domainvlm.domains.radiology.sources")])
def test_the_import_reader_sees_lazy_domain_imports(tmp_path, source, target):
    p = tmp_path / "x.py"
    p.write_text(f"def f():\n    {source}\n")
    known = _modules()
    assert (target, 2) in _imports(p, "domainvlm.evaluate.x", known)
