"""Finding options: every command's help follows click's conventions, ``--describe`` lists the
options of an extractor or head from its config dataclass, ``extract --help`` its defaults."""

import dataclasses
import inspect
import re
from dataclasses import dataclass, field

import pytest
import typer.main

from cli import conventions
from cli.main import app, main
from pipeline.config_doc import describe, field_comments
from pipeline.errors import PipelineError
from pipeline.features import extractors
from pipeline.features.config import DEFAULT_EXTRACTORS, ExtractConfig


def _commands(command, path=()):
    """(path, command) of every command and group below the root, the root included."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # long option lists on one line each
    monkeypatch.setenv("TERMINAL_WIDTH", "250")


def test_every_command_help_follows_click_conventions(capsys, wide):
    root = conventions.apply(typer.main.get_command(app))
    commands = list(_commands(root))
    assert len(commands) > 10
    for path, command in commands:
        for flag in ("-h", "--help"):
            assert main([*path, flag]) == 0, (path, flag)
            out = capsys.readouterr().out
            assert "Usage: fer-pipeline" in out, path
            usage = next(line for line in out.splitlines() if "Usage:" in line)
            assert "{" not in usage, usage  # click: ROOT, not {root}
            for param in command.params:
                if param.param_type_name == "argument":
                    assert param.name.upper() in usage, (path, usage)
            flags = [p for p in command.params if getattr(p, "is_flag", False)]
            for param in flags:  # a flag's row shows no value type: it takes none
                row = next(line for line in out.splitlines() if param.opts[0] + " " in line)
                assert "<bool>" not in row, (path, row)
            assert "<bool>" not in out, path


def test_a_flag_takes_no_value_as_its_help_shows(capsys):
    assert main(["extract", "--manifests", "m", "--store", "s", "--allow-skips", "true"]) == 2
    assert "unexpected extra argument" in capsys.readouterr().err.lower()


def test_extract_help_shows_the_default_extractors(capsys, wide):
    assert main(["extract", "-h"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert f"Default: {', '.join(DEFAULT_EXTRACTORS)}." in text
    # ... and they are the config's defaults, where the stage reads them
    assert ExtractConfig().extractors == list(DEFAULT_EXTRACTORS)


@dataclass
class _Inner:
    # a block above two fields
    # on two lines
    a: int = 1
    b: tuple = (1, 2)
    c: str = "x"  # its own

    d: bool = False


@dataclass
class _Outer:
    """Docstring, not a field comment."""

    lr: float = 1e-3  # learning rate
    inner: _Inner = field(default_factory=_Inner)  # a nested table
    # explained above
    name: str = field(default="n", metadata={"help": "metadata wins"})  # not this
    items: list = field(default_factory=lambda: [1,
                                                 2])  # split over lines


def test_options_come_from_the_dataclass_and_its_comments():
    options = {o.key: o for o in describe(_Outer, "x.")}
    assert list(options) == ["x.lr", "x.inner.a", "x.inner.b", "x.inner.c", "x.inner.d", "x.name",
                             "x.items"]
    assert [f.name for f in dataclasses.fields(_Inner)] == ["a", "b", "c", "d"]
    assert dataclasses.astuple(options["x.lr"]) == ("x.lr", "float", "0.001", "learning rate")
    assert options["x.inner.a"].meaning == options["x.inner.b"].meaning == \
        "a block above two fields on two lines"
    assert options["x.inner.b"].default == "[1, 2]"
    assert options["x.inner.c"].meaning == "its own" and options["x.inner.c"].default == '"x"'
    assert options["x.inner.d"].meaning == "(undocumented)"  # a blank line ends the block
    assert options["x.inner.d"].default == "false"
    assert options["x.name"].meaning == "metadata wins"
    assert options["x.items"].meaning == "split over lines" and options["x.items"].default == "[1, 2]"
    assert field_comments(_Outer)["inner"] == "a nested table"


@pytest.mark.parametrize("name", extractors.names())
def test_describe_lists_every_field_of_every_extractor(name, capsys, wide):
    config_class = extractors.extractor_class(name).Config
    assert main(["extract", "--describe", name]) == 0  # no --manifests/--store needed
    out = capsys.readouterr().out
    defaults = config_class()
    for f in dataclasses.fields(config_class):
        key = f"configs.{name}.{f.name}"
        rows = [line for line in out.splitlines() if f"{key} " in line or f"{key}." in line]
        assert rows, (name, f.name)  # a nested table (a frontend) is listed field by field
        row = rows[0]
        assert "(undocumented)" not in row, f"{name}.{f.name} has no comment in {config_class}"
        value = getattr(defaults, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert re.search(rf"\b{re.escape(repr(value))}\b", row), (row, value)
    assert inspect.getsource(config_class)  # read from the class's own source


def test_describe_a_method_lists_its_head_and_the_shared_options(capsys, wide):
    from pipeline.fusion.config import TrainConfig
    from pipeline.fusion.heads import registry

    for method, head in registry().items():
        assert main(["fuse", "--describe", method, "--all"]) == 0
        out = capsys.readouterr().out
        for f in dataclasses.fields(head.Config):
            assert f"head.{f.name} " in out, (method, f.name)
        for f in dataclasses.fields(TrainConfig):  # a nested table (schedule) field by field
            assert f"train.{f.name} " in out or f"train.{f.name}." in out, f.name
        assert "(undocumented)" not in out, method


def test_describe_the_finetune_lists_every_option(capsys, wide):
    from pipeline.finetune.config import FinetuneConfig

    assert main(["finetune", "--describe", "--all"]) == 0  # no --manifests/--out needed
    out = capsys.readouterr().out
    for option in describe(FinetuneConfig):
        assert f"{option.key} " in out, option.key
    for f in dataclasses.fields(FinetuneConfig):
        assert f.name in out, f.name
    assert "(undocumented)" not in out
    assert "FinetuneConfig(" not in out  # the class's docstring, not the dataclass signature


def test_describe_an_unknown_name_is_one_line(capsys):
    assert main(["extract", "--describe", "nope"]) == 1
    assert "unknown extractor 'nope'" in capsys.readouterr().err
    assert main(["fuse", "--describe", "nope"]) == 1
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_weights_for_an_extractor_not_run_are_refused():
    with pytest.raises(PipelineError, match=r"--weights iresnet=\.\.\.: extractor 'iresnet' is not"
                                            r" run .* add -e iresnet"):
        ExtractConfig(extractors=["swin"], weights={"iresnet": "w.pth"})


def test_weights_for_an_extractor_not_run_is_one_line_from_the_cli(tmp_path, capsys):
    assert main(["extract", "--manifests", str(tmp_path), "--store", str(tmp_path / "s.zarr"),
                 "-e", "swin", "--weights", "iresnet=w.pth"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "add -e iresnet" in err[0]
