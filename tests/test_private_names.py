"""No private name crosses a module in ``pipeline/``, ``stages/`` or ``cli/``: a name with a
leading underscore (not a dunder) is used only by the module that defines it. Read off the code
(:mod:`ast`), as far as it can be seen without running it:

- ``from X import _y`` (relative imports resolved), where X is another module of the project;
- ``import X`` / ``import X as m``, then ``X._y`` / ``m._y``;
- ``from X import name``, then ``name._y`` (a module, a class or any object of another module);
- ``anything._y`` where this module defines no ``_y`` (no function, class, assignment, attribute
  store or argument of that name): ``self.extractor._folder``, a subclass reaching into its base
  class's private attribute of another module. Chains that start at a third-party import
  (``os._exit``) are not the project's business;
- a private module (``cli._common``) imported from outside its own package.

The test plants each kind of violation in a module's source and sees it found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("pipeline", "stages", "cli")

# Private names of third-party objects that have no public equivalent: (file, name) -> why.
ALLOWED = {
    ("pipeline/features/extractors/hf_audio.py", "_get_feat_extract_output_lengths"):
        "transformers' model method: the frame count of its own conv stack, adapters included",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - node.level + 1]
    return ".".join([*parts, node.module] if node.module else parts)


def _ours(module: str) -> bool:
    return module.split(".")[0] in ROOTS


def _private_module_problem(imported: str, module: str) -> str | None:
    """A private component of ``imported`` whose package ``module`` is not inside."""
    parts = imported.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            package = ".".join(parts[:i])
            if not (module == package or module.startswith(package + ".")):
                return f"imports the private module {'.'.join(parts[:i + 1])}"
    return None


def private_name_problems(source: str, module: str, is_package: bool = False,
                          path: str = "") -> list[str]:
    """Every private name ``source`` (the module ``module``) takes from another module."""
    tree = ast.parse(source)
    problems: list[str] = []
    ours: dict[str, str] = {}  # local name -> the project module or object it is bound to
    theirs: set[str] = set()  # local names bound by third-party imports
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                if _ours(alias.name):
                    ours[local] = alias.name if alias.asname else local
                    problem = _private_module_problem(alias.name, module)
                    if problem:
                        problems.append(f"line {node.lineno}: {problem}")
                else:
                    theirs.add(local)
        elif isinstance(node, ast.ImportFrom):
            source_module = _resolve(node, module, is_package)
            if not _ours(source_module):
                theirs.update(alias.asname or alias.name for alias in node.names)
                continue
            problem = _private_module_problem(source_module, module)
            if problem:
                problems.append(f"line {node.lineno}: {problem}")
            for alias in node.names:
                if source_module != module:
                    ours[alias.asname or alias.name] = f"{source_module}.{alias.name}"
                    if _private(alias.name):
                        problems.append(f"line {node.lineno}: from {source_module} import {alias.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.attr)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        if (path, node.attr) in ALLOWED:
            continue
        root = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        rooted = root.id if isinstance(root, ast.Name) else None
        if rooted in ours:
            problems.append(f"line {node.lineno}: {ast.unparse(node)} ({rooted} is "
                            f"{ours[rooted]}, another module)")
        elif node.attr not in defined and rooted not in theirs:
            problems.append(f"line {node.lineno}: {ast.unparse(node)} (no {node.attr} is defined "
                            "in this module)")
    return problems


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


MODULES = sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_private_name_crosses_a_module(path):
    module, is_package = _module_name(path)
    relative = str(path.relative_to(REPO))
    problems = private_name_problems(path.read_text(encoding="utf-8"), module, is_package, relative)
    assert not problems, f"{relative}: " + "; ".join(problems)


PLANTED = {
    "from X import _y": "from pipeline.features.extractors.hf_audio import _ensure_torchvision\n",
    "relative from . import _y": "from .base import _compute_audio\n",
    "import X; X._y": "import pipeline.io\npipeline.io._fsync_dir('.')\n",
    "import X as m; m._y": "import pipeline.io as io\nio._fsync_dir('.')\n",
    "from X import mod; mod._y": "from pipeline import io\nio._fsync_dir('.')\n",
    "from X import Cls; Cls._y": "from pipeline.registry import Registry\nRegistry._built_in\n",
    "obj._y of another module": (
        "class A:\n    def f(self):\n        return self.extractor._folder\n"),
    "a private module from outside its package": "from cli._common import console\n",
}


@pytest.mark.parametrize("planted", PLANTED, ids=str)
def test_a_planted_violation_is_found(planted):
    module = "pipeline.features.extractors.planted" if planted.startswith("relative") \
        else "stages.planted"
    assert private_name_problems(PLANTED[planted], module)


def test_what_a_module_may_do_is_not_a_violation():
    source = (
        "import os\nimport numpy as np\nfrom pipeline import __version__\n"
        "from cli._common import console\n"  # inside cli: its own package's private module
        "_CACHE = {}\n"
        "class A:\n    def __init__(self):\n        self._x = 1\n"
        "    def f(self, other):\n        return self._x + other._x + len(_CACHE)\n"
        "def g():\n    os._exit(0)\n    np._NoValue\n")
    assert private_name_problems(source, "cli.planted") == []
