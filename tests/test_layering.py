"""The import order of the library's wings, as ``pipeline/__init__.py`` states it, read off the code.

``bundle -> {finetune, fusion, scoring} -> training -> runs -> metrics -> features -> data``: a module
of a wing may import its own wing and the tiers to its right, never its own tier's other wings nor a
tier to its left (``finetune``, ``fusion`` and ``scoring`` never import each other: the two training
stages share :mod:`pipeline.training` instead); the shared top-level modules import
no wing; ``pipeline`` never imports ``stages`` or ``cli``, and ``stages`` never imports ``cli``.
Imports inside functions count too, and relative imports are resolved before they are checked.

Inside a wing, no two modules import each other, directly or through others (an import circle),
counting imports inside functions and under ``TYPE_CHECKING`` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
# Each tier may import the tiers after it; the wings of one tier do not import each other.
TIERS = (("bundle",), ("finetune", "fusion", "scoring"), ("training",), ("runs",), ("metrics",),
         ("features",), ("data",))
ORDER = tuple(wing for tier in TIERS for wing in tier)


def _imported_packages(path: Path, package: str) -> set[str]:
    """Top-level-qualified names (``pipeline.x``, ``stages``, ...) a module of ``package`` imports,
    anywhere in it; a relative import (``from ..fusion import x``) is resolved against
    ``package`` first."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                up = parts[:len(parts) - node.level + 1]
                module = ".".join([*up, module] if module else up)
            if module:
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _package(path: Path, root: Path) -> str:
    """The dotted package a module file under ``root`` (pipeline/, stages/) belongs to."""
    return ".".join((root.name, *path.relative_to(root).parent.parts))


def _wing(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in ORDER else None


MODULES = sorted(PIPELINE.rglob("*.py"))


def _wing_order_problems(path: Path, root: Path = PIPELINE) -> list[str]:
    relative = path.relative_to(root).parts
    own = relative[0] if relative[0] in ORDER else None
    tier = next((i for i, wings in enumerate(TIERS) if own in wings), len(TIERS))
    allowed = {own, *(w for wings in TIERS[tier + 1:] for w in wings)} if own else set()
    imported = _imported_packages(path, _package(path, root))
    problems = []
    if {n for n in imported if n.split(".")[0] in ("stages", "cli")}:
        problems.append(f"{'/'.join(relative)}: pipeline imports stages/cli")
    wrong = sorted({w for n in imported if (w := _wing(n)) is not None and w not in allowed})
    if wrong:
        problems.append(f"{'/'.join(relative)} ({own or 'top level'}) imports the wing(s) {wrong}")
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PIPELINE)))
def test_imports_follow_the_wing_order(path):
    assert not _wing_order_problems(path)


STAGES = PIPELINE.parent / "stages"


def _stage_problems(path: Path, root: Path = STAGES) -> list[str]:
    imported = _imported_packages(path, _package(path, root))
    return [f"{path.relative_to(root)} imports {n}" for n in sorted(imported)
            if n.split(".")[0] == "cli"]


@pytest.mark.parametrize("path", sorted(STAGES.rglob("*.py")), ids=lambda p: p.name)
def test_stages_never_import_cli(path):
    assert not _stage_problems(path)


def test_the_checks_catch_a_planted_relative_import_and_a_stage_importing_cli(tmp_path):
    root = tmp_path / "pipeline"
    (root / "data").mkdir(parents=True)
    planted = root / "data" / "planted.py"  # data is the lowest tier: fusion is above it
    planted.write_text("from ..fusion import heads\n")
    assert any("imports the wing(s) ['fusion']" in p for p in _wing_order_problems(planted, root))
    planted.write_text("from . import manifest\n")  # its own wing: allowed
    assert _wing_order_problems(planted, root) == []
    stages = tmp_path / "stages"
    stages.mkdir()
    for text in ("from cli import main\n", "from cli._common import console\n",
                 "import cli.fuse\n", "from ..cli import main\n"):
        (stages / "planted.py").write_text(text)
        assert _stage_problems(stages / "planted.py", stages), text


def test_the_check_catches_finetune_importing_fusion_or_training_importing_either(tmp_path):
    root = tmp_path / "pipeline"
    for wing in ("finetune", "training"):
        (root / wing).mkdir(parents=True)
    planted = root / "finetune" / "planted.py"
    for text in ("from pipeline.fusion.losses import batch_loss\n", "from ..fusion import moe\n",
                 "import pipeline.fusion.config\n"):
        planted.write_text(text)
        assert any("imports the wing(s) ['fusion']" in p
                   for p in _wing_order_problems(planted, root)), text
    planted.write_text("from pipeline.training.losses import batch_loss\n")  # the wing below
    assert _wing_order_problems(planted, root) == []
    below = root / "training" / "planted.py"
    for wing in ("finetune", "fusion"):
        below.write_text(f"from pipeline.{wing} import config\n")
        assert any(f"imports the wing(s) ['{wing}']" in p for p in _wing_order_problems(below, root))


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

