"""``fer-pipeline fuse``: the command end to end on a tiny synthetic store, its presets, reruns,
and one-line errors (naming the clip or file) on bad input."""

import json

import numpy as np
import pytest

from cli.main import main
from fusion.synthetic import make_dataset
from pipeline.config import load_toml
from pipeline.data.manifest import Clip, write_manifest
from pipeline.errors import PipelineError
from pipeline.fusion.config import FuseConfig, build_config
from pipeline.fusion.heads import registry
from stages.fuse import fuse

QUICK = ["--set", "train.epochs=2", "--set", "head.dim=16", "--set", "head.heads=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("fuse"), splits={"train": 2, "val": 1, "test": 1},
                        frames=40)


def _fuse(data, out, *args):
    return main(["fuse", "--store", str(data.store), "--manifests", str(data.manifests),
                 "--out", str(out), *args])


def test_command_trains_prints_and_resumes(data, tmp_path, capsys):
    assert _fuse(data, tmp_path, "--method", "mfm", *QUICK, "--seed", "3", "--name", "m3") == 0
    out = capsys.readouterr().out
    assert "epoch   1  loss" in out and "epoch   2  loss" in out
    assert "fusion (primary)" in out and "val macro-F1" in out
    run = tmp_path / "m3"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["epochs_run"] == 2
    # why the loop ended, from the record's own field (not the head's extra)
    assert f"best epoch {metrics['best_epoch']} of 2 ({metrics['stopped']})" in out
    assert metrics["stopped"] in ("early", "epochs")
    assert (run / "predictions" / "test" / "audio.npz").is_file()
    assert _fuse(data, tmp_path, "--method", "mfm", *QUICK, "--seed", "3", "--name", "m3") == 0
    assert "already complete" in " ".join(capsys.readouterr().out.split())


def test_changed_config_is_refused_in_one_line(data, tmp_path, capsys):
    assert _fuse(data, tmp_path, "--method", "image", "--set", "train.epochs=1") == 0
    capsys.readouterr()
    assert _fuse(data, tmp_path, "--method", "image", "--set", "train.epochs=1",
                 "--set", "loss.kind=focal") == 1
    err = capsys.readouterr().err
    assert "loss.kind differ" in err and "--restart" in err and "Traceback" not in err
    assert _fuse(data, tmp_path, "--method", "image", "--set", "train.epochs=1",
                 "--set", "loss.kind=focal", "--restart") == 0


def test_presets_set_the_papers_choices(data, tmp_path):
    kim = build_config("mfm", data.store, data.manifests, preset="kim2023")
    assert kim.sampling.purity and kim.sampling.balance == "subsample"
    assert kim.head.audio == ("swin_audio_w32", "swin_audio_w48", "swin_audio_w64")
    jin = build_config("sequence", data.store, data.manifests, preset="jin2021")
    assert (jin.head.length, jin.head.layers, jin.loss.kind, jin.train.optimizer,
            jin.train.lr) == (30, 1, "focal", "sgd", 0.01)
    yu = build_config("proportional", data.store, data.manifests, preset="yu2025",
                      sets=["train.lr=0.01"], seed=4)
    assert (yu.head.max_weight, yu.head.dropout, yu.train.lr, yu.seed) == (5, 0.2, 0.01, 4)
    with pytest.raises(PipelineError, match="preset jin2021 .* not image"):
        build_config("image", data.store, data.manifests, preset="jin2021")
    # a run's config.toml is a valid --config file
    (tmp_path / "run.toml").write_text('method = "mfm"\n[head]\ndim = 32\n[train]\nlr = 0.002\n')
    from_file = build_config("mfm", data.store, data.manifests, preset="kim2023",
                             config_file=tmp_path / "run.toml", sets=["head.layers=1"])
    assert (from_file.head.dim, from_file.head.layers, from_file.train.lr) == (32, 1, 0.002)
    assert from_file.sampling.purity  # the preset still applies underneath


def test_stage_saves_absolute_paths(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data.store.parent)
    config = build_config("audio", "features.zarr", "manifests", sets=["train.epochs=1"])
    result = fuse(config, tmp_path)
    saved = load_toml(FuseConfig, result.run_dir / "config.toml")
    assert saved.store == str(data.store.resolve()) and saved.method == "audio"


def _bad_manifests(data, tmp_path, clip_id, n_frames):
    manifests = tmp_path / "manifests"
    clips = [c for c in data.clips if c.split != "val"]
    clips.append(Clip(clip_id=clip_id, split="val", video_id=clip_id, n_frames=n_frames, fps=10.0,
                      frames_dir=None, video_path=None, audio_path=None,
                      labels=np.zeros(n_frames, np.int8)))
    for split in ("train", "val", "test"):
        write_manifest(manifests / f"{split}.jsonl", [c for c in clips if c.split == split])
    return manifests


@pytest.mark.parametrize("case, message", [
    ("no store", "no such feature store"),
    ("clip not in store", "clip stranger (val): not in the store"),
    ("length mismatch", "clip val00: 41 frames in the manifest but 40 in the store"),
    ("missing array", "clip train00: no array 'iresnet'"),
    ("unknown option", "unknown option(s) colour"),
    ("bad value", "train.optimizer 'adam'"),
])
def test_bad_input_is_one_line_naming_the_thing(data, tmp_path, capsys, case, message):
    store, manifests, extra = str(data.store), str(data.manifests), []
    if case == "no store":
        store = str(tmp_path / "nowhere.zarr")
    elif case == "clip not in store":
        manifests = str(_bad_manifests(data, tmp_path, "stranger", 40))
    elif case == "length mismatch":
        manifests = str(_bad_manifests(data, tmp_path, "val00", 41))
    elif case == "missing array":
        extra = ["--set", "head.image=iresnet"]
    elif case == "unknown option":
        extra = ["--set", "head.colour=1"]
    else:
        extra = ["--set", "train.optimizer=adam"]
    code = main(["fuse", "--method", "image", "--store", store, "--manifests", manifests,
                 "--out", str(tmp_path / "runs"), *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert message in " ".join(err.split())
    assert err.count("error:") == 1 and "Traceback" not in err


def test_method_choices_come_from_the_registry(capsys):
    assert main(["fuse", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("kim2023", "jin2021", "yu2025", "--method", "--set"))
    assert main(["fuse", "--method", "nonsense", "--store", "s", "--manifests", "m",
                 "--out", "o"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "choose from " + ", ".join(sorted(registry())) in err and "mfm, " in err
