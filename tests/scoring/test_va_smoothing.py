"""VA smoothing tuned by cross-fitting: the moving mean stays within clips; on noisy predictions
of a smooth truth it picks a window > 1 per dimension on each fold's other folds and raises the
CCC; on predictions whose errors are as fast as the truth it picks no smoothing; the test clips'
submission uses the windows fitted on the whole split; scores.json and the CLI table show them."""

import json

import numpy as np
import pytest

from pipeline.data.frames import clip_offsets
from pipeline.metrics.va import score_va
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.va_ensemble import VAData, va_rows
from pipeline.scoring.va_smoothing import fit_windows, smooth_va, subset_offsets

WINDOWS = (1, 5, 11, 25)


def test_moving_mean_stays_within_each_clip():
    values = np.array([[0, 1], [0, 1], [1, -1], [1, -1], [1, -1]], np.float32)
    offsets = np.array([0, 2, 5])
    out = smooth_va(values, offsets, (3, 1))
    np.testing.assert_allclose(out[:, 0], [0, 0, 1, 1, 1])  # no mixing across the clip border
    np.testing.assert_array_equal(out[:, 1], values[:, 1])  # window 1: unchanged
    ramp = np.linspace(-1, 1, 7, dtype=np.float32)[:, None].repeat(2, axis=1)
    out = smooth_va(ramp, np.array([0, 7]), (3, 3))
    np.testing.assert_allclose(out[3], ramp[2:5].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(out[0], ramp[:2].mean(axis=0), atol=1e-6)  # shrinks at the end


def _data(rng, truth_kind: str, clips: int = 6, n: int = 120) -> VAData:
    lengths = [n + 7 * i for i in range(clips)]
    offsets = clip_offsets(lengths)
    labels, values = [], []
    for length in lengths:
        t = np.arange(length)
        if truth_kind == "smooth":  # slow sinusoids; predictions add white noise
            truth = np.stack([0.6 * np.sin(t / 15 + rng.uniform(0, 6)),
                              0.5 * np.cos(t / 11 + rng.uniform(0, 6))], axis=1)
            pred = truth + rng.normal(0, 0.35, truth.shape)
        else:  # a truth as fast as the frames; predictions follow it closely
            truth = rng.uniform(-0.8, 0.8, (length, 2))
            pred = truth + rng.normal(0, 0.05, truth.shape)
        truth[:4] = -5.0  # invalid frames are left out everywhere
        labels.append(truth)
        values.append(np.clip(pred, -1, 1))
    return VAData(tuple(f"c{i}" for i in range(clips)), tuple(f"v{i}" for i in range(clips)),
                  offsets, np.concatenate(values)[None].astype(np.float32),
                  np.concatenate(labels).astype(np.float32))


def test_smoothing_helps_noisy_predictions_of_a_smooth_truth():
    data = _data(np.random.default_rng(0), "smooth")
    outcome = va_rows(data, ["a/va"], EnsembleConfig(windows=WINDOWS, folds=3, bootstrap=0))
    names = [r.name for r in outcome.rows]
    assert names == ["a/va", "a/va+smooth"] and outcome.final.name == "a/va+smooth"
    raw, smoothed = outcome.rows
    assert smoothed.tuned and smoothed.scores.mean_ccc > raw.scores.mean_ccc + 0.1
    assert min(outcome.windows) > 1
    assert outcome.windows == fit_windows(data.labels, data.values[0], data.offsets, WINDOWS)
    # each fold is smoothed with the windows fitted on the other folds' clips only
    index = {c: i for i, c in enumerate(data.clip_ids)}
    expected = np.zeros_like(data.values[0])
    for fit in outcome.folds:
        tune = [index[c] for c in fit["tuning_clips"]]
        score = [index[c] for c in fit["scored_clips"]]
        assert not set(tune) & set(score)
        frames = data.frames(tune)
        win = fit_windows(data.labels[frames], data.values[0][frames],
                          subset_offsets(data.offsets, tune), WINDOWS)
        assert (fit["smoothing"]["valence"], fit["smoothing"]["arousal"]) == win
        rows = data.frames(score)
        expected[rows] = smooth_va(data.values[0][rows], subset_offsets(data.offsets, score), win)
    assert smoothed.scores.mean_ccc == pytest.approx(score_va(data.labels, expected).mean_ccc,
                                                     abs=1e-9)
    assert outcome.to_json()["smoothing"] == {"valence": outcome.windows[0],
                                              "arousal": outcome.windows[1]}


def test_no_smoothing_where_the_truth_is_as_fast_as_the_frames():
    data = _data(np.random.default_rng(1), "fast")
    outcome = va_rows(data, ["a/va"], EnsembleConfig(windows=WINDOWS, folds=3, bootstrap=0))
    raw, smoothed = outcome.rows
    assert outcome.windows == (1, 1)
    assert all(f["smoothing"] == {"valence": 1, "arousal": 1} for f in outcome.folds)
    assert smoothed.scores.mean_ccc == pytest.approx(raw.scores.mean_ccc, abs=1e-12)


def test_smooth_none_or_window_one_leaves_va_unsmoothed():
    data = _data(np.random.default_rng(2), "smooth")
    for config in (EnsembleConfig(windows=WINDOWS, smooth="none", folds=3, bootstrap=0),
                   EnsembleConfig(windows=(1,), folds=3, bootstrap=0)):
        outcome = va_rows(data, ["a/va"], config)
        assert [r.name for r in outcome.rows] == ["a/va"] and outcome.windows == (1, 1)


def test_ensemble_smooths_the_va_submission_and_prints_the_windows(tmp_path, capsys):
    from cli.main import main
    from tests.scoring.test_va_ensemble import _clips, _run, _values
    rng = np.random.default_rng(5)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", clips, rng, 0.3), _run(tmp_path, "b", clips, rng, 0.4)]
    try:
        main(["ensemble", *map(str, runs), "--manifests", str(tmp_path / "manifests"),
              "--out", str(tmp_path / "scores"), "--set", "windows=[1,5,11]",
              "--set", "bootstrap=0"])
    except SystemExit as e:
        assert not e.code
    out = capsys.readouterr().out
    va = json.loads((tmp_path / "scores" / "scores.json").read_text())["va"]
    assert va["final"] == "weighted+smooth"
    windows = (va["smoothing"]["valence"], va["smoothing"]["arousal"])
    assert max(windows) > 1  # the random-walk truth is smoother than the prediction noise
    assert (f"VA smoothing windows (frames) for the test clips: valence {windows[0]}, arousal "
            f"{windows[1]}") in out
    weights = np.array([[va["weights"][m]["valence"], va["weights"][m]["arousal"]]
                        for m in ("a/va", "b/va")])
    test0 = np.stack([_values(r, ["test0"], "test") for r in runs])
    combined = np.einsum("mnd,md->nd", test0.astype(np.float64), weights).astype(np.float32)
    expected = smooth_va(combined, np.array([0, len(combined)]), windows)
    lines = (tmp_path / "scores" / "submission_va.txt").read_text().splitlines()
    first = [[float(v) for v in line.split(",")[1:]] for line in lines[1:len(combined) + 1]]
    np.testing.assert_allclose(first, expected, atol=2e-6)
