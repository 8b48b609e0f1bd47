"""Stage three on runs with AU outputs: AU scores at 0.5 equal scikit-learn's, thresholds are
cross-fitted on other videos only, the leakage guard's clips are left out, and the AU submission
is written and checked."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.data.labels import NUM_AUS, UNLABELED
from pipeline.data.manifest import Clip, write_manifest
from pipeline.metrics.au import fit_au_thresholds
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.runs.predictions import (
    AUPredictionWriter,
    FaceMaskWriter,
    PredictionWriter,
    face_mask_path,
    prediction_path,
)
from pipeline.scoring.submission import check_au_submission
from stages.ensemble import run_ensemble


def _clips(root: Path, rng) -> dict[str, list[Clip]]:
    """val: 4 clips with both labels (val3 excluded from AU scores by the guard), an AU-only val
    clip; train: one clip; test: two clips."""
    clips: dict[str, list[Clip]] = {"train": [], "val": [], "test": [], "au_only": []}
    for split, count in (("train", 1), ("val", 4), ("test", 2), ("au_only", 1)):
        for i in range(count):
            clip_id = f"{split}{i}"
            n = int(rng.integers(40, 60))
            labels = au = au_split = None
            if split != "test":
                labels = rng.integers(0, 8, n).astype(np.int8)
                au = (rng.random((n, NUM_AUS)) < 0.3).astype(np.int8)
                au[:3] = UNLABELED
                au_split = "train" if split == "train" else "val"
            exclude = ("au_val",) if clip_id == "val3" else ()
            real_split = "val" if split == "au_only" else split
            clips[split].append(Clip(clip_id, real_split, clip_id, n, 25.0, None, None, None,
                                     None if split == "au_only" else labels, au, au_split,
                                     exclude))
    for split, items in clips.items():
        write_manifest(root / "manifests" / f"{split}.jsonl", items)
    return clips


def _run(root: Path, name: str, clips, rng, strength: float) -> Path:
    run = root / "runs" / name
    for split in ("val", "test"):
        expr_clips = clips[split]
        au_clips = clips[split] + (clips["au_only"] if split == "val" else [])
        with FaceMaskWriter(face_mask_path(run, split)) as writer:
            for clip in au_clips:
                writer.add(clip.clip_id, np.ones(clip.n_frames, dtype=bool))
        with PredictionWriter(prediction_path(run, split, "main")) as writer:
            for clip in expr_clips:
                p = rng.random((clip.n_frames, 8)) + 0.01
                writer.add(clip.clip_id, p / p.sum(axis=1, keepdims=True))
        with AUPredictionWriter(prediction_path(run, split, "au")) as writer:
            for clip in au_clips:
                logits = rng.normal(size=(clip.n_frames, NUM_AUS))
                if clip.au_labels is not None:
                    logits += strength * np.clip(clip.au_labels, 0, 1) - 1.0
                writer.add(clip.clip_id, 1 / (1 + np.exp(-logits)))
    metrics = {"method": "sequence", "outputs": ["main"], "primary": "main",
               "au_outputs": ["au"], "val_macro_f1": {"main": 0.2}, "history": []}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture()
def project(tmp_path):
    rng = np.random.default_rng(0)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 2.0), _run(tmp_path, "b", clips, rng, 1.0)]
    return tmp_path, clips, runs


def _probs(run, clip_ids, split="val"):
    npz = np.load(prediction_path(run, split, "au"))
    return np.concatenate([npz[c] for c in clip_ids])


def test_au_scores_thresholds_and_submission(project):
    root, clips, runs = project
    out = root / "scores"
    result = run_ensemble(runs, root / "manifests", out, EnsembleConfig(windows=(1,), folds=3))
    scores = json.loads((out / "scores.json").read_text())["au"]
    scored = ["val0", "val1", "val2", "au_only0"]  # val3: excluded by the leakage guard
    by_id = {c.clip_id: c for c in clips["val"] + clips["au_only"]}
    truth = np.concatenate([by_id[c].au_labels for c in scored])
    keep = (truth != UNLABELED).all(axis=1)
    rows = {row["name"]: row for row in scores["rows"]}
    assert [r["name"] for r in scores["rows"]] == ["a/au", "b/au", "mean", "mean+thresholds"]
    for name, run in (("a/au", runs[0]), ("b/au", runs[1])):
        probs = _probs(run, scored)
        expected = f1_score(truth[keep], (probs[keep] >= 0.5).astype(int), average="macro",
                            zero_division=0)
        assert rows[name]["mean_f1"] == pytest.approx(expected)
        assert rows[name]["n_frames"] == int(keep.sum())
        accuracy = ((probs[keep] >= 0.5) == truth[keep]).mean()
        assert rows[name]["accuracy"] == pytest.approx(accuracy)
    # cross-fitting: each fold's thresholds come from the other folds only
    mean = (_probs(runs[0], scored) + _probs(runs[1], scored)) / 2
    offsets = dict(zip(scored, np.cumsum([0] + [by_id[c].n_frames for c in scored])))
    decided = np.zeros_like(truth)
    fits = scores["tuning"]["fits"]
    assert sorted(c for f in fits for c in f["scored_clips"]) == sorted(scored)
    for fit in fits:
        assert not set(fit["scored_clips"]) & set(fit["tuning_clips"])
        tune = np.concatenate([np.arange(offsets[c], offsets[c] + by_id[c].n_frames)
                               for c in fit["tuning_clips"]])
        assert fit["thresholds"] == pytest.approx(
            fit_au_thresholds(truth[tune], mean[tune]).tolist())
        for c in fit["scored_clips"]:
            rows_c = np.arange(offsets[c], offsets[c] + by_id[c].n_frames)
            decided[rows_c] = mean[rows_c] >= np.asarray(fit["thresholds"])
    expected = f1_score(truth[keep], decided[keep], average="macro", zero_division=0)
    assert rows["mean+thresholds"]["mean_f1"] == pytest.approx(expected)
    assert result.au.final.name == "mean+thresholds"
    # the submission: the test clips decided with thresholds fitted on all the scored frames
    path = out / "submission_au.txt"
    assert result.au_submission_path == path
    assert check_au_submission(path, clips["test"]) == []
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + sum(c.n_frames for c in clips["test"])
    thresholds = fit_au_thresholds(truth, mean)
    test_mean = (_probs(runs[0], ["test0"], "test") + _probs(runs[1], ["test0"], "test")) / 2
    first = [int(v) for v in lines[1].split(",")[1:]]
    assert first == (test_mean[0] >= thresholds).astype(int).tolist()


def test_runs_without_au_outputs_have_no_au_scores(project):
    root, clips, runs = project
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        del metrics["au_outputs"]
        (run / "metrics.json").write_text(json.dumps(metrics))
    result = run_ensemble(runs, root / "manifests", root / "scores", EnsembleConfig(windows=(1,)))
    assert result.au is None and json.loads((root / "scores" / "scores.json").read_text())["au"] \
        is None
    assert not (root / "scores" / "submission_au.txt").exists()
