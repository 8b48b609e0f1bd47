"""Options that help: ``--describe`` without a name lists the names, ``faces --describe``, a short
grouped view by default and every option with ``--all``, and "did you mean" for heads,
extractors, presets, combiners and ``--set`` keys."""

import dataclasses
import re

import pytest

from cli import describe as describe_cli
from cli.main import main
from pipeline.config_doc import describe
from pipeline.errors import PipelineError


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per table row
    monkeypatch.setenv("TERMINAL_WIDTH", "250")


def _row(out, key):
    """Whether ``out`` has a table row for option ``key`` (boxed or compact)."""
    return re.search(rf"^[│ ]*{re.escape(key)} ", out, re.M) is not None


def _out(capsys, *args):
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_describe_without_a_name_lists_the_names(capsys, wide):
    from pipeline.features import extractors
    from pipeline.fusion.heads import registry
    from pipeline.fusion.presets import PRESETS

    for args in (["extract", "--describe"], ["extract", "--describe", "--all"]):
        out = _out(capsys, *args)
        assert all(_row(out, name) for name in extractors.names()), out
    for args in (["fuse", "--describe"], ["fuse", "--all", "--describe"]):
        out = _out(capsys, *args)
        assert all(_row(out, name) for name in [*registry(), *PRESETS]), out
    out = _out(capsys, "finetune", "--describe")
    assert "backbones (--backbone): timm, iresnet" in out and "presets (--preset): kim2023" in out


def test_faces_describe_short_and_all(capsys, wide):
    from pipeline.data.faces.config import FacesConfig

    short = _out(capsys, "faces", "--describe")  # no VIDEOS or --out needed
    every = _out(capsys, "faces", "--describe", "--all")
    assert "FacesConfig(" not in short  # its docstring, not the dataclass signature
    common = {k for keys in describe_cli.FACES_COMMON.values() for k in keys}
    for f in dataclasses.fields(FacesConfig):
        assert _row(every, f.name), f.name
        assert _row(short, f.name) == (f.name in common), f.name
    assert "(undocumented)" not in every


@pytest.mark.parametrize("order", ["describe first", "all first"])
def test_finetune_describe_is_short_and_all_gives_everything(capsys, wide, order):
    short = _out(capsys, "finetune", "--describe")
    every = _out(capsys, *(["finetune", "--describe", "--all"] if order == "describe first"
                          else ["finetune", "--all", "--describe"]))
    options = describe_cli.finetune_options()
    common = {k for keys in describe_cli.FINETUNE_COMMON.values() for k in keys}
    for option in options:
        assert _row(every, option.key), option.key
        assert _row(short, option.key) == (option.key in common), option.key
    assert f"{len(common)} of {len(options)} options shown" in short
    assert 2 * len(short.splitlines()) < len(every.splitlines())
    for group in describe_cli.FINETUNE_COMMON:
        assert group in short


def test_fuse_describe_method_shows_its_own_options_and_the_common_shared_ones(capsys, wide):
    from pipeline.fusion.heads import head_class

    short = _out(capsys, "fuse", "--describe", "mfm")
    for f in dataclasses.fields(head_class("mfm").Config):
        assert _row(short, f"head.{f.name}"), f.name
    assert _row(short, "train.lr") and _row(short, "log.tensorboard")
    assert not _row(short, "train.buffer_mb")  # rarely changed: only under --all
    assert _row(_out(capsys, "fuse", "--describe", "mfm", "--all"), "train.buffer_mb")


def test_every_common_option_is_an_option():
    from pipeline.data.faces.config import FacesConfig

    _, _, shared = describe_cli.method_options("image")
    describe_cli.common(shared, describe_cli.FUSE_COMMON)  # (asserts each key is there)
    describe_cli.common(describe_cli.finetune_options(), describe_cli.FINETUNE_COMMON)
    describe_cli.common(describe(FacesConfig), describe_cli.FACES_COMMON)
    with pytest.raises(AssertionError, match="train.nope"):
        describe_cli.common(shared, {"x": ("train.nope",)})


def test_optional_name_only_for_commands_that_take_one():
    assert describe_cli.optional_name(["fuse", "--describe"]) == ["fuse", "--describe", ""]
    assert describe_cli.optional_name(["--debug", "extract", "--describe", "--all"]) == \
        ["--debug", "extract", "--describe", "", "--all"]
    assert describe_cli.optional_name(["fuse", "--describe", "mfm"]) == ["fuse", "--describe", "mfm"]
    assert describe_cli.optional_name(["finetune", "--describe"]) == ["finetune", "--describe"]


def test_did_you_mean_for_heads_extractors_presets_combiners(capsys):
    assert main(["fuse", "--describe", "mfn"]) == 1
    assert "did you mean mfm?" in capsys.readouterr().err
    assert main(["extract", "--describe", "tim"]) == 1
    assert "did you mean timm?" in capsys.readouterr().err
    assert main(["fuse", "--method", "imag", "--store", "s", "--manifests", "m", "--out", "o"]) != 0
    assert "did you mean image?" in capsys.readouterr().err
    assert main(["fuse", "--method", "mfm", "--preset", "kim2032", "--store", "s",
                 "--manifests", "m", "--out", "o"]) != 0
    assert "did you mean kim2023?" in capsys.readouterr().err

    from pipeline.features.config import ExtractConfig
    from pipeline.finetune.presets import preset_tables
    from pipeline.fusion.heads import head_class
    from pipeline.fusion.presets import preset_overrides
    from pipeline.scoring.combiners import combiner
    from pipeline.scoring.combiners import options as combiner_options

    for call, hint in [(lambda: head_class("sequense"), "sequence"),
                       (lambda: preset_overrides("yu2052", "gcsa"), ".*yu2025"),
                       (lambda: preset_tables("jin2012"), "jin2021"),
                       (lambda: combiner("membr"), "member"),
                       (lambda: combiner_options({"weigted": {}}), "weighted"),
                       (lambda: ExtractConfig(extractors=("swim",)), "swin")]:
        with pytest.raises(PipelineError, match=f"did you mean {hint}"):
            call()
    with pytest.raises(PipelineError) as nothing_close:
        head_class("zzzzzz")
    assert "did you mean" not in str(nothing_close.value)


def test_did_you_mean_for_set_keys_and_values():
    from pipeline.finetune.config import build_config as finetune_config
    from pipeline.fusion.config import build_config

    with pytest.raises(PipelineError, match=r"unknown option\(s\) lrr .*did you mean lr\?"):
        build_config("image", "s", "m", sets=["train.lrr=0.1"])
    with pytest.raises(PipelineError, match=r"unknown option\(s\) trian .*did you mean train\?"):
        build_config("image", "s", "m", sets=["trian.lr=0.1"])
    with pytest.raises(PipelineError, match=r"unknown option\(s\) dimm .*did you mean dim\?"):
        build_config("mfm", "s", "m", sets=["head.dimm=8"])
    with pytest.raises(PipelineError, match=r"unknown option\(s\) epoch .*did you mean epochs\b"):
        finetune_config("m", sets=["epoch=2"])
    with pytest.raises(PipelineError, match=r"unknown option\(s\) lr .*did you mean train.lr\?"):
        build_config("image", "s", "m", sets=["lr=0.1"])  # the section left out
    with pytest.raises(PipelineError, match=r"unknown option\(s\) hflip .*did you mean augment.hflip"):
        finetune_config("m", sets=["hflip=0"])
