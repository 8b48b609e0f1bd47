"""Dataclass configs <-> TOML: round trip, key=value overrides, unknown keys named."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.config import load_toml, override, save_toml


@dataclass
class Inner:
    rate: float = 1.0
    names: tuple[str, ...] = ("a", "b")


@dataclass
class Outer:
    epochs: int = 3
    out: Path | None = None
    inner: Inner = field(default_factory=Inner)


def test_round_trip_keeps_types(tmp_path):
    config = Outer(epochs=7, out=Path("runs/x"), inner=Inner(rate=2, names=("c",)))
    save_toml(config, tmp_path / "c.toml")
    loaded = load_toml(Outer, tmp_path / "c.toml")
    assert loaded == config
    assert isinstance(loaded.inner.rate, float) and isinstance(loaded.out, Path)


def test_overrides_reach_nested_fields_and_parse_values():
    config = override(Outer(), ["epochs=12", "inner.rate=0.5", 'inner.names=["x", "y"]'])
    assert config == Outer(epochs=12, inner=Inner(rate=0.5, names=("x", "y")))


def test_unknown_keys_are_named(tmp_path):
    (tmp_path / "bad.toml").write_text("epochs = 2\n[inner]\nrat = 3\n")
    with pytest.raises(ValueError, match=r"bad.toml.inner: unknown option\(s\) rat for Inner"):
        load_toml(Outer, tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="expected key=value"):
        override(Outer(), ["epochs"])
