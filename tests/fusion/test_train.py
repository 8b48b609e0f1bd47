"""The training loop: deterministic, resumable, refusing a changed config, complete run
directories, the faceless-frame rule, and fusion beating single modalities on demo-like data."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from pipeline.config import load_toml
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.train import train
from pipeline.data.frames import nearest_face as nearest_valid
from pipeline.runs.predictions import Predictions, face_mask_path, prediction_path

from .synthetic import make_dataset

FAST = ["train.epochs=3", "train.patience=10", "train.batch_size=32"]
SMALL = {
    "mfm": ["head.dim=16", "head.heads=2", "head.context=2"],
    "sequence": ["head.dim=16", "head.heads=2", "head.ff=32", "head.length=10", "head.eval_stride=5",
                 "head.train_stride=5"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train"), splits={"train": 3, "val": 1, "test": 1},
                        frames=40, faceless=0.15)


def _config(data, method, *sets, seed=None):
    return build_config(method, data.store, data.manifests, sets=[*FAST, *SMALL.get(method, []),
                                                                  *sets], seed=seed)


def _run(data, method, run_dir, *sets, **kwargs):
    return train(_config(data, method, *sets, seed=kwargs.pop("seed", None)), run_dir, data.clips,
                 FeatureStore(data.store), **kwargs)


def _interrupt_after(epoch):
    """A progress callback that interrupts the run (like Ctrl-C) once ``epoch`` is done."""

    def progress(event):
        if event.task == "epochs" and event.info.get("epoch") == epoch:
            raise KeyboardInterrupt

    return progress


def _predictions(run_dir, outputs, split="val"):
    return {name: dict(Predictions(prediction_path(run_dir, split, name))) for name in outputs}


def _same(a, b):
    return a.keys() == b.keys() and all(
        a[o].keys() == b[o].keys() and all(np.array_equal(a[o][c], b[o][c]) for c in a[o]) for o in a)


@pytest.mark.slow
def test_same_seed_same_predictions(data, tmp_path):
    outputs = ("fusion", "image", "audio")
    _run(data, "mfm", tmp_path / "a", "train.epochs=2")
    _run(data, "mfm", tmp_path / "b", "train.epochs=2")
    _run(data, "mfm", tmp_path / "c", "train.epochs=2", seed=1)
    a, b, c = (_predictions(tmp_path / x, outputs) for x in "abc")
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("method", ["mfm", "sequence"])
def test_interrupted_run_resumes_to_the_same_result(data, tmp_path, method):
    outputs = ("fusion", "image", "audio") if method == "mfm" else ("main",)
    whole = _run(data, method, tmp_path / "whole", "train.epochs=4")
    with pytest.raises(KeyboardInterrupt):
        _run(data, method, tmp_path / "cut", "train.epochs=4", progress=_interrupt_after(2))
    assert not (tmp_path / "cut" / "metrics.json").exists()
    # resumed streaming without the cache: a performance knob that changes no result
    resumed = _run(data, method, tmp_path / "cut", "train.epochs=4", "train.cache_mb=0")
    assert resumed.resumed_from == 2 and resumed.epochs_run == 4
    assert _same(_predictions(tmp_path / "whole", outputs), _predictions(tmp_path / "cut", outputs))
    strip = lambda history: [{k: v for k, v in h.items() if "seconds" not in k} for h in history]
    assert strip(resumed.metrics.history) == strip(whole.metrics.history)


def test_more_epochs_extend_a_finished_run(data, tmp_path):
    whole = _run(data, "image", tmp_path / "whole", "train.epochs=4")
    short = _run(data, "image", tmp_path / "grown", "train.epochs=2")
    assert short.epochs_run == 2
    grown = _run(data, "image", tmp_path / "grown", "train.epochs=4")
    assert grown.resumed_from == 2 and grown.val_macro_f1 == whole.val_macro_f1
    assert _same(_predictions(tmp_path / "whole", ["main"]), _predictions(tmp_path / "grown", ["main"]))
    again = _run(data, "image", tmp_path / "grown", "train.epochs=4")
    assert again.already_complete and again.val_macro_f1 == whole.val_macro_f1


def test_changed_config_is_refused_unless_restart_or_force(data, tmp_path):
    _run(data, "image", tmp_path / "run", "train.epochs=1")
    with pytest.raises(PipelineError, match=r"another config \(train.lr differ\).*--restart"):
        _run(data, "image", tmp_path / "run", "train.epochs=1", "train.lr=0.01")
    forced = _run(data, "image", tmp_path / "run", "train.epochs=2", "train.lr=0.01", force=True)
    assert forced.resumed_from == 1 and forced.epochs_run == 2
    fresh = _run(data, "image", tmp_path / "run", "train.epochs=1", "train.lr=0.01", restart=True)
    assert fresh.resumed_from == 0 and fresh.epochs_run == 1
    saved = load_toml(FuseConfig, tmp_path / "run" / "config.toml")
    assert saved.train.lr == 0.01 and saved.method == "image"


def test_run_directory_holds_everything(data, tmp_path):
    result = _run(data, "mfm", tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.toml", "checkpoint.pt", "best.pt", "metrics.json", "curve.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["outputs"] == ["fusion", "image", "audio"] and metrics["primary"] == "fusion"
    assert metrics["val_macro_f1"] == result.val_macro_f1
    assert len(metrics["history"]) == 3 and 1 <= metrics["best_epoch"] <= 3
    # selected on the training split's dev slice (the default): its best epoch is the best dev score
    assert metrics["selected_on"] == "train-dev" and metrics["dev_clips"]
    assert metrics["dev_macro_f1"]["fusion"] == max(h["dev_macro_f1"]["fusion"]
                                                    for h in metrics["history"])
    lengths = {c.clip_id: c.n_frames for c in data.clips}
    for split in ("val", "test"):
        for output in metrics["outputs"]:
            predictions = Predictions(prediction_path(run, split, output))
            assert sorted(predictions) == sorted(c.clip_id for c in data.clips if c.split == split)
            for clip_id, probs in predictions.items():
                assert probs.shape == (lengths[clip_id], 8) and probs.dtype == np.float32
                np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_faceless_frames_take_the_nearest_face_prediction(data, tmp_path):
    _run(data, "mfm", tmp_path / "run", "train.epochs=1")
    store = FeatureStore(data.store)
    for clip in data.clips:
        if clip.split not in ("val", "test"):
            continue
        valid = store.read(clip.clip_id, "valid")
        assert not valid.all()
        # the face mask stage three reads is written beside the predictions: the store's flags
        written = Predictions(face_mask_path(tmp_path / "run", clip.split))[clip.clip_id]
        assert written.dtype == bool and np.array_equal(written, valid.astype(bool))
        source = nearest_valid(valid)
        for output, filled in (("fusion", True), ("image", True), ("audio", False)):
            probs = Predictions(prediction_path(tmp_path / "run", clip.split, output))[clip.clip_id]
            assert np.array_equal(probs, probs[source]) == filled, output


def test_proportional_keeps_its_grid_and_applies_its_rule(data, tmp_path):
    # selected on val, so that the grid can be recomputed from the written val predictions
    result = _run(data, "proportional", tmp_path / "run", "train.select_on=val")
    grid = result.metrics.grid
    assert grid["fitted_on"] == "val" and result.metrics.selected_on == "val"
    assert grid["m"] == grid["n"] == [1, 2, 3, 4, 5]
    f1 = np.array(grid["macro_f1"])
    assert f1.shape == (5, 5) and result.val_macro_f1["fusion"] == pytest.approx(f1.max())
    m, n = grid["best"]
    assert f1[m - 1, n - 1] == f1.max()
    fused, image, audio = _predictions(tmp_path / "run", ("fusion", "image", "audio")).values()
    labels = np.concatenate([c.labels for c in data.clips if c.split == "val"])
    keep = labels != -1
    image_all = np.concatenate([image[c] for c in sorted(image)])
    audio_all = np.concatenate([audio[c] for c in sorted(audio)])
    for i in range(5):  # the grid, recomputed from the written predictions with scikit-learn
        for j in range(5):
            choice = ((i + 1) * audio_all + (j + 1) * image_all).argmax(axis=1)
            assert f1[i, j] == pytest.approx(f1_score(labels[keep], choice[keep], labels=range(8),
                                                      average="macro", zero_division=0))
    for clip_id in fused:
        np.testing.assert_allclose(fused[clip_id], (m * audio[clip_id] + n * image[clip_id]) / (m + n),
                                   atol=1e-6)


@pytest.mark.slow
def test_fusion_beats_each_single_modality(tmp_path):
    # The demo's shape: 7 training clips of 120 frames, 3 validation clips, default heads.
    data = make_dataset(tmp_path / "data", splits={"train": 7, "val": 3}, frames=120, seed=1)
    store = FeatureStore(data.store)
    scores = {}
    for method in ("image", "audio", "mfm", "sequence"):
        config = build_config(method, data.store, data.manifests)
        result = train(config, tmp_path / method, data.clips, store)
        scores[method] = result.val_macro_f1[result.primary]
    single = max(scores["image"], scores["audio"])
    assert scores["mfm"] >= single + 0.10, scores
    assert scores["sequence"] >= single + 0.10, scores
    assert torch.are_deterministic_algorithms_enabled() is False  # the loop restores the flag
