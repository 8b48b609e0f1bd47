"""Configs are dataclasses with commented defaults, read from TOML, overridable, saved beside outputs.

Every stage has a config dataclass (defined next to the code it configures) that validates itself
in ``__post_init__``. This module converts between those dataclasses and TOML, and :func:`build`
is the one way every command makes its config: the defaults, then a preset's tables, then a TOML
file, then ``--set key=value`` overrides, then the command's explicit options (later wins), so
that a run can always be reproduced from the ``config.toml`` saved with it. Values are checked
against the fields' types: a bad one is a one-line error naming the key and the expected type.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import tomli_w

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.suggest import did_you_mean

T = TypeVar("T")


def to_dict(config: Any) -> dict:
    """A dataclass as plain TOML-able values (tuples become lists, None values are left out)."""

    def clean(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if getattr(value, f.name) is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, enum.Enum):
            return value.value
        return value

    return clean(config)


def _coerce(kind: Any, value: Any, where: str) -> Any:
    """Convert a TOML value to the annotated field type (nested dataclasses, tuples, Paths)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return None if value is None else _coerce(options[0], value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table, got {value!r}")
        return from_dict(kind, value, where)
    if origin in (tuple, list) and not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    if origin is tuple:
        args = typing.get_args(kind)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where) for v in value)
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        return [_coerce(item, v, where) for v in value]
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table, got {value!r}")
    return _scalar(kind, value, where)


def _scalar(kind: Any, value: Any, where: str) -> Any:
    """Check (and convert) a scalar value against ``kind``: bool, int, float, str, Path, an Enum."""
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(member.value) for member in kind)
            hint = did_you_mean(str(value), [str(member.value) for member in kind])
            raise ValueError(f"{where}: {value!r} is not one of {choices}{hint}") from None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if kind is int and not (is_number and isinstance(value, int)):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if kind is float and not is_number:
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if kind in (str, Path) and not isinstance(value, (str, Path)):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    if kind is float:
        return float(value)
    if kind is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with the key's name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        hint = _hint(cls, unknown[0], names) if len(unknown) == 1 else ""
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)} for {cls.__name__}{hint}")
    values = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def _hint(cls: type, word: str, names: set[str]) -> str:
    """"did you mean" for an unknown key: a close name of ``cls``, else the same name inside one
    of its tables (``lr`` -> ``train.lr``: the section left out)."""
    hint = did_you_mean(word, names)
    if hint:
        return hint
    inside = [key for key in _nested_keys(cls) if key.rsplit(".", 1)[-1] == word]
    return f"; did you mean {' or '.join(inside[:3])}?" if inside else ""


def _nested_keys(cls: type, prefix: str = "") -> list[str]:
    """The dotted keys of the fields of ``cls``'s nested dataclass tables."""
    keys = []
    for name, kind in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(kind) and name in {f.name for f in dataclasses.fields(cls)}:
            keys += [f"{prefix}{name}.{f.name}" for f in dataclasses.fields(kind)]
            keys += _nested_keys(kind, f"{prefix}{name}.")
    return keys


def load_toml(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, read_toml(path), str(path))


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict (a one-line error naming the file when it cannot be read)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read config ({' '.join(str(e).split())})") from None


def save_toml(config: Any, path: str | Path) -> None:
    io.write_text(path, tomli_w.dumps(to_dict(config)))


def merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, tables recursively (neither is changed)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def assign(data: dict, assignment: str) -> dict:
    """``data`` with one ``key=value`` or ``section.key=value`` set; the value is parsed as TOML
    (a bare word is a string)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {assignment!r}: expected key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    *parents, leaf = key.strip().split(".")
    update: dict = {leaf: value}
    for part in reversed(parents):
        update = {part: update}
    return merge(data, update)


def override(config: T, assignments: Sequence[str]) -> T:
    """Apply ``key=value`` or ``section.key=value`` overrides to a built config."""
    data = to_dict(config)
    for assignment in assignments:
        data = assign(data, assignment)
    return from_dict(type(config), data)


def build(cls: type[T], file: str | Path | None = None, preset: dict | None = None,
          sets: Sequence[str] = (), options: dict | None = None) -> T:
    """The config of a command: ``cls``'s defaults < ``preset`` (tables of values) < ``file``
    (TOML) < ``sets`` (``key=value``) < ``options`` (the command's explicit options; None values
    are left out). Any bad key or value is a :class:`PipelineError` naming it.
    """
    data: dict = {}
    try:
        if preset:
            data = merge(data, preset)
        if file is not None:
            data = merge(data, read_toml(file))
        for assignment in sets:
            data = assign(data, assignment)
        if options:
            data = merge(data, {k: v for k, v in options.items() if v is not None})
        return from_dict(cls, data, cls.__name__)
    except (ValueError, TypeError) as e:
        raise PipelineError(" ".join(str(e).split())) from None
