"""Partitions by whole videos (CV folds, the dev slice, bootstrap resamples), and selection on the
dev slice: a head selected on train-dev never reads a validation label."""

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.data.manifest import Clip, write_manifest
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.training import folds
from pipeline.fusion.config import build_config
from pipeline.fusion.train import train
from pipeline.runs.predictions import Predictions, prediction_path

from .synthetic import make_dataset


def _clips(n_videos, seed=0, pairs=(3, 7)):
    """Clips of random lengths and labels; videos in ``pairs`` have a _left and a _right clip."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n_videos):
        sides = ("_left", "_right") if v in pairs else ("",)
        for side in sides:
            n = int(rng.integers(20, 200))
            labels = rng.choice(8, size=n, p=[.3, .05, .02, .03, .25, .15, .1, .1]).astype(np.int8)
            out.append(Clip(clip_id=f"v{v}{side}", split="train", video_id=f"v{v}", n_frames=n,
                            fps=10.0, frames_dir=None, video_path=None, audio_path=None,
                            labels=labels))
    return out


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_partition_the_clips_with_whole_videos(k):
    clips = _clips(17)
    assigned = folds.assign_folds(clips, k, seed=4)
    assert assigned.shape == (len(clips),) and set(assigned.tolist()) == set(range(k))
    by_video = {}
    for clip, fold in zip(clips, assigned):
        by_video.setdefault(clip.video_id, set()).add(int(fold))
    assert all(len(f) == 1 for f in by_video.values())  # _left/_right together
    assert np.array_equal(assigned, folds.assign_folds(clips, k, seed=4))  # deterministic
    assert any(not np.array_equal(folds.assign_folds(clips, k, seed=s), assigned) for s in range(5))
    # stratified: every fold holds about 1/k of the labelled frames (whole videos allow 1/k +- 0.1)
    frames = np.bincount(assigned, weights=[c.n_frames for c in clips], minlength=k)
    assert np.all(np.abs(frames / frames.sum() - 1 / k) < 0.1), frames


def test_folds_spread_a_rare_class():
    # class 3 lives in only 4 of 12 videos: the 4 folds each get one of them
    clips = _clips(12, pairs=())
    for i, clip in enumerate(clips):
        clip.labels[clip.labels == 3] = 0
        if i in (1, 4, 6, 9):
            clip.labels[:5] = 3
    assigned = folds.assign_folds(clips, 4, seed=0)
    assert sorted(assigned[[1, 4, 6, 9]].tolist()) == [0, 1, 2, 3]


def test_dev_slice_and_bootstrap():
    clips = _clips(10)
    kept, dev = folds.dev_slice(clips, 0.2, seed=0)
    assert {c.clip_id for c in kept}.isdisjoint(c.clip_id for c in dev) and dev
    assert len(kept) + len(dev) == len(clips)
    assert {c.video_id for c in kept}.isdisjoint(c.video_id for c in dev)
    share = sum(c.n_frames for c in dev) / sum(c.n_frames for c in clips)
    assert 0.08 < share < 0.35, share
    with pytest.raises(PipelineError, match="1 training video"):
        folds.dev_slice(clips[:1], 0.2, seed=0)
    resample = folds.bootstrap(clips, seed=1)
    assert resample == folds.bootstrap(clips, seed=1) and resample != folds.bootstrap(clips, seed=2)
    videos = [c.video_id for c in resample]
    # whole videos, as many draws as videos, with replacement
    draws = {v: sum(1 for c in resample if c.video_id == v and not c.clip_id.endswith("_right"))
             for v in set(videos)}
    assert sum(draws.values()) == 10 and max(draws.values()) >= 2
    for v in ("v3", "v7"):
        left = sum(c.clip_id == f"{v}_left" for c in resample)
        assert left == sum(c.clip_id == f"{v}_right" for c in resample)


# ---- selection on the dev slice never reads validation labels -----------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("select"), splits={"train": 4, "val": 2, "test": 1},
                        frames=40)


def _poisoned(data, root):
    """The same clips with every validation label replaced by a random class."""
    rng = np.random.default_rng(9)
    clips = [dataclasses.replace(c, labels=rng.integers(0, 8, c.n_frames).astype(np.int8))
             if c.split == "val" else c for c in data.clips]
    for split in ("train", "val", "test"):
        write_manifest(root / f"{split}.jsonl", [c for c in clips if c.split == split])
    return clips


@pytest.mark.parametrize("method", ["proportional", "image"])
def test_selection_on_train_dev_never_reads_validation_labels(data, tmp_path, method):
    poisoned = _poisoned(data, tmp_path / "manifests")
    sets = ["train.epochs=3", "train.patience=1", "train.batch_size=32"]
    results = []
    for name, clips, manifests in (("clean", data.clips, data.manifests),
                                   ("poisoned", poisoned, tmp_path / "manifests")):
        config = build_config(method, data.store, data.manifests, sets=sets)
        results.append(train(config, tmp_path / name, clips, FeatureStore(data.store)))
    clean, poison = results
    assert clean.metrics.selected_on == "train-dev"
    assert clean.best_epoch == poison.best_epoch
    timing = ("seconds", "data_seconds")
    assert [{k: v for k, v in h.items() if k not in timing} for h in clean.metrics.history] == \
        [{k: v for k, v in h.items() if k not in timing} for h in poison.metrics.history]
    for name in ("best.pt", "checkpoint.pt"):
        a, b = (torch.load(tmp_path / run / name, weights_only=True)["model"]
                for run in ("clean", "poisoned"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for output in clean.outputs:
        p, q = (Predictions(prediction_path(tmp_path / run, "val", output))
                for run in ("clean", "poisoned"))
        assert sorted(p) == sorted(q) and all(np.array_equal(p[c], q[c]) for c in p)
    if method == "proportional":
        assert clean.metrics.grid == poison.metrics.grid
        assert clean.metrics.grid["fitted_on"] == "train-dev"
    # the val scores themselves do read the (poisoned) labels: the report is honest about them
    assert clean.val_macro_f1 != poison.val_macro_f1
