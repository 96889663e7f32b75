"""The import picture docs/architecture.md draws, checked on the source: layers point downward only,
no circle between modules or packages, and a function-local import is allowed only for a heavy
dependency and says so (`# heavy: ...` on its line or the line above)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "complai"

# lowest first; a package may import its own layer (without a circle) and the layers below
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundation",
        {"config", "errors", "events", "clock", "files", "inputs", "store", "crypto", "ledger", "taxonomy", "datasets"}
        | {"logs", "spark"},
    ),
    ("governance", {"vault", "access"}),
    ("engines", {"deid", "dp", "federated"}),
    ("assurance", {"compliance"}),
    ("front door", {"app", ""}),  # "" is the package itself (complai/__init__.py: the public API)
    ("interfaces", {"cli", "quickstart", "service"}),
]
RANK = {pkg: i for i, (_, pkgs) in enumerate(LAYERS) for pkg in pkgs}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".")
        if node.level:
            keep = len(base) - node.level + (1 if MODULES[module].name == "__init__.py" else 0)
            prefix = ".".join(base[:keep] + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
    out = []
    for name in names:
        while name and name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != module:
            out.append(name)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    local: list[tuple[str, int, str]] = []
    for module, path in MODULES.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges[module].update(_targets(module, node))
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        here = lines[node.lineno - 1]
                        above = lines[node.lineno - 2] if node.lineno > 1 else ""
                        if "heavy:" not in here and "heavy:" not in above:
                            local.append((module, node.lineno, ast.unparse(node)))
    return edges, sorted(set(local))


EDGES, LOCAL = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer():
    assert sorted({_package(m) for m in MODULES} - set(RANK)) == []


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{a} -> {b}" for a, bs in EDGES.items() for b in bs if RANK[_package(b)] > RANK[_package(a)])
    assert upward == []


def test_no_circle_between_modules():
    assert _cycles(EDGES) == []


def test_no_circle_between_packages():
    packages: dict[str, set[str]] = defaultdict(set)
    for a, bs in EDGES.items():
        for b in bs:
            if _package(a) != _package(b):
                packages[_package(a)].add(_package(b))
    assert _cycles(packages) == []


def test_function_local_imports_are_heavy_and_say_so():
    assert [f"{m}:{line}: {code}" for m, line, code in LOCAL] == []


def test_the_checker_sees_a_circle_and_an_upward_arrow():
    """The checks above can fail: a made-up graph with both faults is caught."""
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert RANK["vault"] < RANK["app"]


@pytest.mark.parametrize("package", sorted(p for p in RANK if p))
def test_architecture_doc_names_every_package(package):
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    assert f"{package}/" in doc or f"{package}.py" in doc
