"""Stage three on runs with VA outputs: each member's CCC equals the direct computation, the
weighted mean's weights are cross-fitted on other videos only, CIs bracket the estimates, the
ABAW VA submission is written and checked, the multi-task score is the sum, and scores.json of
runs without VA has no VA section."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.labels import NUM_AUS
from pipeline.data.manifest import Clip, write_manifest
from pipeline.metrics.va import ccc, score_va
from pipeline.runs.predictions import (
    AUPredictionWriter,
    FaceMaskWriter,
    PredictionWriter,
    VAPredictionWriter,
    face_mask_path,
    prediction_path,
)
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.va_ensemble import (VA_SUBMISSION_HEADER, check_va_submission,
                                          fit_weights, weighted)
from stages.ensemble import run_ensemble


def _clips(root: Path, rng) -> dict[str, list[Clip]]:
    clips: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    for split, count in (("train", 1), ("val", 5), ("test", 2)):
        for i in range(count):
            clip_id = f"{split}{i}"
            n = int(rng.integers(40, 60))
            labels = va = va_split = au = au_split = None
            if split != "test":
                labels = rng.integers(0, 8, n).astype(np.int8)
                au = (rng.random((n, NUM_AUS)) < 0.3).astype(np.int8)
                au_split = split
                va = np.cumsum(rng.normal(0, 0.1, (n, 2)), axis=0).clip(-1, 1).astype(np.float32)
                va[:3] = -5.0
                va_split = split
            clips[split].append(Clip(clip_id, split, clip_id, n, 25.0, None, None, None, labels,
                                     au, au_split, (), va, va_split))
        write_manifest(root / "manifests" / f"{split}.jsonl", clips[split])
    return clips


def _run(root: Path, name: str, clips, rng, noise: float, va: bool = True) -> Path:
    run = root / "runs" / name
    for split in ("val", "test"):
        with FaceMaskWriter(face_mask_path(run, split)) as writer:
            for clip in clips[split]:
                writer.add(clip.clip_id, np.ones(clip.n_frames, dtype=bool))
        with PredictionWriter(prediction_path(run, split, "main")) as writer:
            for clip in clips[split]:
                p = rng.random((clip.n_frames, 8)) + 0.01
                writer.add(clip.clip_id, p / p.sum(axis=1, keepdims=True))
        with AUPredictionWriter(prediction_path(run, split, "au")) as writer:
            for clip in clips[split]:
                writer.add(clip.clip_id, rng.random((clip.n_frames, NUM_AUS)))
        if va:
            with VAPredictionWriter(prediction_path(run, split, "va")) as writer:
                for clip in clips[split]:
                    truth = (np.zeros((clip.n_frames, 2)) if clip.va_labels is None
                             else np.where(clip.va_labels == -5, 0, clip.va_labels))
                    writer.add(clip.clip_id,
                               np.clip(truth + rng.normal(0, noise, truth.shape), -1, 1))
    metrics = {"method": "sequence", "outputs": ["main"], "primary": "main",
               "au_outputs": ["au"], "val_macro_f1": {"main": 0.2}, "history": [],
               **({"va_outputs": ["va"]} if va else {})}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def _values(run, clip_ids, split="val"):
    npz = np.load(prediction_path(run, split, "va"))
    return np.concatenate([npz[c] for c in clip_ids])


def test_va_scores_weights_cis_submission_and_multitask(tmp_path):
    rng = np.random.default_rng(0)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 0.1), _run(tmp_path, "b", clips, rng, 0.4)]
    out = tmp_path / "scores"
    result = run_ensemble(runs, tmp_path / "manifests", out,
                          EnsembleConfig(windows=(1,), folds=3, bootstrap=200))
    record = json.loads((out / "scores.json").read_text())
    va = record["va"]
    scored = [c.clip_id for c in clips["val"]]
    truth = np.concatenate([c.va_labels for c in clips["val"]])
    rows = {row["name"]: row for row in va["rows"]}
    assert [r["name"] for r in va["rows"]] == ["a/va", "b/va", "mean", "weighted"]
    for name, run in (("a/va", runs[0]), ("b/va", runs[1])):
        expected = ccc(truth, _values(run, scored))
        assert rows[name]["ccc_valence"] == pytest.approx(expected[0])
        assert rows[name]["mean_ccc"] == pytest.approx(expected.mean())
        ci = rows[name]["ci"]["mean"]
        assert ci["low"] <= ci["estimate"] <= ci["high"] and ci["n_resamples"] == 200
    mean = (_values(runs[0], scored) + _values(runs[1], scored)) / 2
    assert rows["mean"]["mean_ccc"] == pytest.approx(score_va(truth, mean).mean_ccc, abs=1e-6)
    # cross-fitting: each fold's weights come from the other folds' frames only
    offsets = dict(zip(scored, np.cumsum([0] + [c.n_frames for c in clips["val"]])))
    n = {c.clip_id: c.n_frames for c in clips["val"]}
    both = np.stack([_values(runs[0], scored), _values(runs[1], scored)])
    assert len(va["fits"]) == 3
    combined = np.zeros_like(mean)
    for fit in va["fits"]:
        assert not set(fit["scored_clips"]) & set(fit["tuning_clips"])
        tune = np.concatenate([np.arange(offsets[c], offsets[c] + n[c])
                               for c in fit["tuning_clips"]])
        weights = fit_weights(truth[tune], both[:, tune])
        np.testing.assert_allclose(fit["weights"], weights, atol=1e-12)
        for c in fit["scored_clips"]:
            rows_c = np.arange(offsets[c], offsets[c] + n[c])
            combined[rows_c] = weighted(both[:, rows_c], weights)
    assert rows["weighted"]["mean_ccc"] == pytest.approx(score_va(truth, combined).mean_ccc,
                                                         abs=1e-6)
    assert rows["weighted"]["tuned"] and va["final"] == "weighted"
    # the better member gets the larger weight on the whole split (the test clips' weights)
    assert va["weights"]["a/va"]["valence"] > va["weights"]["b/va"]["valence"]
    assert va["weights"]["a/va"]["valence"] == pytest.approx(fit_weights(truth, both)[0, 0])
    # the submission: ABAW VA format, every test frame, the whole-split weights
    sub = out / "submission_va.txt"
    lines = sub.read_text().splitlines()
    assert lines[0] == VA_SUBMISSION_HEADER == "image_location,valence,arousal"
    assert len(lines) - 1 == sum(c.n_frames for c in clips["test"])
    assert lines[1].startswith("test0/00001.jpg,")
    assert check_va_submission(sub, clips["test"]) == []
    test_values = np.stack([_values(r, ["test0"], "test") for r in runs])
    first = [float(v) for v in lines[1].split(",")[1:]]
    assert first == pytest.approx(weighted(test_values, fit_weights(truth, both))[0].tolist(),
                                  abs=1e-6)
    # the ABAW multi-task score: EXPR F1 + AU F1 + VA mean CCC of the final rows
    assert record["abaw_multitask"] == pytest.approx(
        record["macro_f1"] + record["au"]["mean_f1"] + va["mean_ccc"])
    assert result.va is not None and result.va_submission_path == sub


def test_check_va_submission_finds_problems(tmp_path):
    clip = Clip("c", "test", "c", 3, 25.0, None, None, None, None)
    path = tmp_path / "s.txt"
    path.write_text("image_location,valence,arousal\nc/00001.jpg,0.1,2\nc/00001.jpg,0.1,0.2\n"
                    "x/00001.jpg,0,0\n")
    problems = check_va_submission(path, [clip])
    assert problems == ["line 2: want two values in [-1, 1]",
                        "line 4: x/00001.jpg is no frame of a test clip",
                        "clip c: 2 frames missing"]


def test_runs_without_va_have_no_va_section(tmp_path):
    rng = np.random.default_rng(1)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 0.1, va=False)]
    out = tmp_path / "scores"
    run_ensemble(runs, tmp_path / "manifests", out, EnsembleConfig(windows=(1,), folds=3,
                                                                   bootstrap=0))
    record = json.loads((out / "scores.json").read_text())
    assert "va" not in record and "abaw_multitask" not in record
    assert not (out / "submission_va.txt").exists()


def test_ensemble_cli_prints_the_va_table(tmp_path, capsys):
    from cli.main import main
    rng = np.random.default_rng(2)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 0.1)]
    try:
        main(["ensemble", *map(str, runs), "--manifests", str(tmp_path / "manifests"),
              "--out", str(tmp_path / "scores")])
    except SystemExit as e:
        assert not e.code
    out = capsys.readouterr().out
    assert "VA val scores (CCC)" in out and "VA submission:" in out


def test_the_report_lists_the_va_rows(tmp_path):
    rng = np.random.default_rng(3)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 0.1), _run(tmp_path, "b", clips, rng, 0.3)]
    out = tmp_path / "scores"
    run_ensemble(runs, tmp_path / "manifests", out, EnsembleConfig(windows=(1,), folds=3,
                                                                   bootstrap=50))
    html = (out / "report.html").read_text()
    assert "VA weighted (weights fitted on other folds): mean CCC" in html
    assert "ABAW multi-task score" in html


def test_the_report_shows_va_timelines_against_truth(tmp_path):
    rng = np.random.default_rng(4)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 0.1)]
    out = tmp_path / "scores"
    result = run_ensemble(runs, tmp_path / "manifests", out,
                          EnsembleConfig(windows=(1,), folds=3, bootstrap=0))
    assert 'id="va-timelines"' in (out / "report.html").read_text()
    assert (out / "va_timelines.png").stat().st_size > 1000
    clip_id, values, labels = result.va.timelines[0]
    by_id = {c.clip_id: c for c in clips["val"]}
    np.testing.assert_array_equal(labels, by_id[clip_id].va_labels)
    np.testing.assert_array_equal(values, np.load(prediction_path(runs[0], "val", "va"))[clip_id])
