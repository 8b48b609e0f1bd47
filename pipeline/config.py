"""Configs are dataclasses with commented defaults, read from TOML, overridable, saved beside outputs.

Every stage has a config dataclass (defined next to the code it configures). This module only
converts between those dataclasses and TOML, and applies ``key=value`` overrides, so that a run
can always be reproduced from the ``config.toml`` saved with it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

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
    if origin is tuple:
        args = typing.get_args(kind)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where) for v in value)
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        return [_coerce(item, v, where) for v in value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
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
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)} for {cls.__name__}")
    values = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def load_toml(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read config ({e})") from None
    return from_dict(cls, data, str(path))


def save_toml(config: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(to_dict(config)), encoding="utf-8")


def override(config: T, assignments: list[str]) -> T:
    """Apply ``key=value`` or ``section.key=value`` overrides; values are parsed as TOML."""
    data = to_dict(config)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"override {assignment!r}: expected key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        target = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return from_dict(type(config), data)
