"""What each option of a config dataclass means, read from the dataclass itself.

Every config dataclass in this project has a comment on every field (STYLE.md): on the field's own
line (``lr: float = 1e-3  # learning rate``) or on the comment lines just above it. This module
reads those comments from the class's source (``tokenize``, nothing is executed), so that
``extract --describe NAME`` and ``fuse --describe METHOD`` list each option, its type, default and
meaning without a second, hand-written list that could drift. A field's ``metadata={"help": ...}``
wins over its comment. Nested dataclasses (``train``, ``sampling``, ...) are listed field by field
under their dotted key, as ``--set`` takes them.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "describe", "field_comments"]


@dataclass(frozen=True)
class Option:
    """One settable option: its dotted key, type, default (as TOML would write it) and meaning."""

    key: str
    type: str
    default: str
    meaning: str


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment (the trailing one, else the comment lines just above it) for
    the fields defined in ``cls``'s own body and in its dataclass bases'."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(klass) and klass is not object:
            comments.update(_own_comments(klass))
    return comments


def _own_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a REPL or a string: no source to read
        return {}
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    comments: dict[str, str] = {}
    above: list[str] = []  # comment lines since the last statement of the class body
    # A comment block above several fields with no blank line between them covers them all.
    block: str | None = None
    depth = 0  # bracket depth: a field's default may span lines
    field_name: str | None = None  # the field whose line is being read
    inherited = False  # whether field_name's comment is the block above an earlier field
    # The body's indent: comments before its first statement come before the INDENT token.
    class_indent = next((len(t.string) for t in tokens if t.type == tokenize.INDENT), None)
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if field_name is not None:  # on the field's line (or its continuation)
                if inherited:  # its own comment, not the block above its neighbours
                    comments[field_name], block, inherited = text, None, False
                else:  # after the comment lines above it, or a second line of its own
                    comments[field_name] = " ".join(filter(None, [comments.get(field_name), text]))
            elif tok.start[1] == class_indent:
                above.append(text)
            continue
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        if (tok.type == tokenize.NAME and tok.start[1] == class_indent and depth == 0
                and i + 1 < len(tokens) and tokens[i + 1].string == ":"
                and field_name is None):
            field_name = tok.string
            inherited = not above and block is not None
            if above:
                block = " ".join(above)
            if block is not None:
                comments[field_name] = block
            above = []
        elif tok.type == tokenize.NEWLINE and depth == 0:
            if field_name is None:  # a statement that is not a field (a method, a docstring)
                block = None
            field_name = None
            above = []
        elif tok.type == tokenize.NL and depth == 0 and field_name is None and not _is_comment_line(
                tokens, i):
            above, block = [], None  # a blank line ends a comment block
    return comments


def _is_comment_line(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    return i > 0 and tokens[i - 1].type == tokenize.COMMENT


def _type_name(kind: Any) -> str:
    if isinstance(kind, str):
        return kind
    if isinstance(kind, type) and typing.get_origin(kind) is None:
        return kind.__name__
    return str(kind).replace("typing.", "")


def _default(f: dataclasses.Field) -> tuple[bool, Any]:
    if f.default is not dataclasses.MISSING:
        return True, f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return True, f.default_factory()  # type: ignore[misc]
    return False, None


def _toml(value: Any) -> str:
    """A default as the user would type it after ``--set key=``."""
    if dataclasses.is_dataclass(value):
        return "(table)"
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):  # an Enum
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "(none)"
    return repr(value)


def describe(cls: type, prefix: str = "", expand: bool = True) -> list[Option]:
    """The options of dataclass ``cls``, keys prefixed with ``prefix`` (e.g. ``"head."``).

    With ``expand``, a field whose default is a dataclass is listed field by field under
    ``key.``; a field without a comment says so (it is a defect of that config to fix).
    """
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    options: list[Option] = []
    for f in dataclasses.fields(cls):
        has_default, default = _default(f)
        meaning = f.metadata.get("help") or comments.get(f.name) or "(undocumented)"
        if expand and has_default and dataclasses.is_dataclass(default):
            options.extend(describe(type(default), f"{prefix}{f.name}.", expand))
            continue
        options.append(Option(f"{prefix}{f.name}", _type_name(hints.get(f.name, f.type)),
                              _toml(default) if has_default else "(required)", meaning))
    return options
