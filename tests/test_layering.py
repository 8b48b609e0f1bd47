"""The import order of the library's wings, as ``pipeline/__init__.py`` states it, read off the code.

``finetune -> {fusion, scoring} -> runs -> metrics -> features -> data``: a module of a wing may
import its own wing and the tiers to its right, never its own tier's other wing nor a tier to its
left (``fusion`` and ``scoring`` never import each other); the shared top-level modules import
no wing; ``pipeline`` never imports ``stages`` or ``cli``. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
# Each tier may import the tiers after it; the wings of one tier do not import each other.
TIERS = (("finetune",), ("fusion", "scoring"), ("runs",), ("metrics",), ("features",), ("data",))
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
