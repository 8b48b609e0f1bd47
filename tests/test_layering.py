"""The import order of the library's wings, as ``pipeline/__init__.py`` states it, read off the code.

``bundle -> finetune -> {fusion, scoring} -> training -> runs -> metrics -> features -> data``: a module of a wing may
import its own wing and the tiers to its right, never its own tier's other wing nor a tier to its
left (``fusion`` and ``scoring`` never import each other); the shared top-level modules import
no wing; ``pipeline`` never imports ``stages`` or ``cli``. Imports inside functions count too.

Inside a wing, no two modules import each other, directly or through others (an import circle),
counting imports inside functions and under ``TYPE_CHECKING`` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
# Each tier may import the tiers after it; the wings of one tier do not import each other.
TIERS = (("bundle",), ("finetune",), ("fusion", "scoring"), ("training",), ("runs",), ("metrics",),
         ("features",), ("data",))
ORDER = tuple(wing for tier in TIERS for wing in tier)


def _imported_packages(path: Path) -> set[str]:
    """Top-level-qualified names (``pipeline.x``, ``stages``, ...) a module imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _wing(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in ORDER else None


MODULES = sorted(PIPELINE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PIPELINE)))
def test_imports_follow_the_wing_order(path):
    relative = path.relative_to(PIPELINE).parts
    own = relative[0] if relative[0] in ORDER else None
    tier = next((i for i, wings in enumerate(TIERS) if own in wings), len(TIERS))
    allowed = {own, *(w for wings in TIERS[tier + 1:] for w in wings)} if own else set()
    imported = _imported_packages(path)
    assert not {n for n in imported if n.split(".")[0] in ("stages", "cli")}, "pipeline imports stages/cli"
    wrong = sorted({w for n in imported if (w := _wing(n)) is not None and w not in allowed})
    assert not wrong, f"{'/'.join(relative)} ({own or 'top level'}) imports the wing(s) {wrong}"


def _module_name(path: Path) -> str:
    parts = ("pipeline", *path.relative_to(PIPELINE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Each module of ``pipeline`` -> the modules of ``pipeline`` it imports, anywhere in it (a
    ``from package import name`` counts as the submodule ``name`` where there is one)."""
    names = {_module_name(path): path for path in MODULES}

    def module(name: str) -> str | None:  # the longest prefix of a dotted name that is a module
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(module(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                imported.update(module(f"{base}.{alias.name}") or module(base)
                                for alias in node.names)
        graph[name] = imported - {None, name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [frozenset({"a", "b", "c"})]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    circles = [sorted(c) for c in _circles(_import_graph())]
    assert not circles, f"import circles: {circles}"

