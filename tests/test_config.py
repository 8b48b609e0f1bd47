"""Dataclass configs <-> TOML: round trip, key=value overrides, unknown keys named, the builder."""

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest

from pipeline.config import build, load_toml, override, save_toml
from pipeline.errors import PipelineError


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


class Colour(str, Enum):
    red = "red"
    blue = "blue"


@dataclass
class Choices:
    colour: Colour = Colour.red
    on: bool = True


def test_build_applies_preset_file_sets_options_in_order(tmp_path):
    (tmp_path / "c.toml").write_text("epochs = 5\n[inner]\nrate = 2.0\nnames = [\"f\"]\n")
    preset = {"epochs": 4, "inner": {"rate": 9.0, "names": ["p"]}, "out": "from-preset"}
    config = build(Outer, file=tmp_path / "c.toml", preset=preset,
                   sets=["inner.rate=3", "epochs=6"], options={"epochs": 7, "out": None})
    # epochs: options beat --set beat the file beat the preset; a None option changes nothing
    assert config == Outer(epochs=7, out=Path("from-preset"), inner=Inner(rate=3.0, names=("f",)))
    assert build(Outer) == Outer()


@pytest.mark.parametrize("assignment, message", [
    ("inner.rate=abc", "Outer.inner.rate: expected a number, got 'abc'"),
    ("epochs=2.5", "Outer.epochs: expected an integer, got 2.5"),
    ("epochs=true", "Outer.epochs: expected an integer, got True"),
    ("inner.names=3", "Outer.inner.names: expected a list, got 3"),
    ("inner=3", "Outer.inner: expected a table, got 3"),
    ("inner.size=3", r"Outer.inner: unknown option\(s\) size for Inner"),
])
def test_bad_values_name_the_key_and_the_type(assignment, message):
    with pytest.raises(PipelineError, match=message):
        build(Outer, sets=[assignment])


def test_enum_and_bool_fields_are_checked():
    assert build(Choices, sets=["colour=blue", "on=false"]) == Choices(Colour.blue, False)
    with pytest.raises(PipelineError, match="Choices.colour: 'green' is not one of red, blue"):
        build(Choices, sets=["colour=green"])
    with pytest.raises(PipelineError, match="Choices.on: expected true or false, got 'yes'"):
        build(Choices, sets=["on=yes"])


def test_fuse_command_rejects_a_bad_set_in_one_line(tmp_path):
    from pipeline.fusion.config import build_config

    with pytest.raises(PipelineError, match=r"^FuseConfig.train.lr: expected a number, got 'abc'$"):
        build_config("image", tmp_path, tmp_path, sets=["train.lr=abc"])
