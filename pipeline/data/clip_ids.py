"""Names that become file or folder names: clip ids and store array names.

A clip id names the clip's folder in the feature store (``clips/<id>``), its lock file and its
predictions; an imported array's name (``store import --name``) names an array folder and its
``<name>_valid`` mask. Both are checked where they enter (a manifest line, a dataset's annotation
file, ``store import --name``, ``faces`` output names) by :func:`check_name`, so that no name can
reach outside its folder (``..``, ``a/b``, an absolute path), hide (a leading dot) or be mistaken
for an option (a leading ``-``).

The rule (docs/trust.md): 1 to :data:`MAX_LENGTH` characters from ``A-Z a-z 0-9 _ . + -``, the
first a letter, a digit or ``_``.
"""

from __future__ import annotations

import re

MAX_LENGTH = 200  # well under every filesystem's 255-byte name limit, leaving room for suffixes
CHARACTERS = "A-Z a-z 0-9 _ . + - (first: a letter, digit or _)"
_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


class BadName(ValueError):
    """A clip id or array name outside the rule; the message says which and why."""


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid id or array name, or None when it is."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if not name:
        return "is empty"
    if len(name) > MAX_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_LENGTH})"
    if "/" in name or "\\" in name:
        return "holds a path separator: it must be one path component"
    if name.startswith("."):
        return "starts with a dot"
    if not _PATTERN.fullmatch(name):
        bad = next((c for c in name if not re.fullmatch(r"[A-Za-z0-9_.+-]", c)), name[0])
        return f"holds {bad!r}: use only {CHARACTERS}"
    return None


def check_name(name: object, what: str = "clip id") -> str:
    """``name`` when it is a valid clip id / array name, else :class:`BadName` naming it."""
    problem = name_problem(name)
    if problem is not None:
        shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
        raise BadName(f"{what} {shown} {problem}")
    return name
