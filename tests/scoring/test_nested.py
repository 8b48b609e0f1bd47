"""Nested decisions: a step is applied only when it helps on held-out inner folds, and the
decisions made for a scored fold never see that fold's labels (poisoning)."""

import numpy as np

from pipeline.data.labels import NUM_CLASSES
from pipeline.scoring import crossfit as C
from pipeline.scoring import ensemble as E
from pipeline.scoring.frames import SplitData


def _data(labels, probs, lengths, face=None):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SplitData(tuple(f"c{i}" for i in range(len(lengths))),
                     tuple(f"v{i}" for i in range(len(lengths))), offsets,
                     np.stack(probs).astype(np.float32), np.asarray(labels, dtype=np.int8),
                     np.ones(offsets[-1], dtype=bool) if face is None else face)


def _runs(rng, n, run=20):
    return np.repeat(rng.integers(0, NUM_CLASSES, n // run + 1), run)[:n].astype(np.int8)


def _noisy(rng, labels, signal):
    probs = rng.random((len(labels), NUM_CLASSES)) + signal * np.eye(NUM_CLASSES)[labels]
    return probs / probs.sum(axis=1, keepdims=True)


def test_helpful_smoothing_is_applied_and_harmful_fill_is_not():
    rng = np.random.default_rng(0)
    lengths = [60] * 8
    labels = _runs(rng, sum(lengths))
    smooth = _data(labels, [_noisy(rng, labels, 0.6)], lengths)
    config = E.EnsembleConfig(folds=4, fill="none", bias=False, windows=(1, 11))
    outcome = C.cross_fit(smooth, ["r/a"], config)
    assert outcome.final.name == "final: ensemble+smooth(mean)"
    rows = {r.name: r.scores.macro_f1 for r in outcome.rows}
    assert rows["ensemble+smooth(mean)"] > rows["ensemble"] + 0.2
    for record in outcome.folds:
        (trial,) = record.fit.decision["trials"]
        assert trial["applied"] and trial["with"] > trial["without"]

    # frames with no face predicted right, inside runs of another class: filling them hurts
    labels = _runs(rng, sum(lengths))
    face = np.ones(len(labels), dtype=bool)
    odd = np.flatnonzero(np.arange(len(labels)) % 20 == 10)
    for start in odd:
        labels[start:start + 3] = (labels[start] + 1) % NUM_CLASSES
        face[start:start + 3] = False
    fill = _data(labels, [_noisy(rng, labels, 5.0)], lengths, face)
    config = E.EnsembleConfig(folds=4, smooth="none", bias=False)
    outcome = C.cross_fit(fill, ["r/a"], config)
    assert outcome.final.name == "final: ensemble"
    rows = {r.name: r.scores.macro_f1 for r in outcome.rows}
    assert rows["ensemble+fill"] < rows["ensemble"] == outcome.final.scores.macro_f1
    assert all(record.fit.applied.steps == () and record.fit.applied.fill == "none"
               for record in outcome.folds)


def test_decisions_for_a_fold_never_see_its_labels():
    rng = np.random.default_rng(1)
    lengths = [50, 40, 60, 45, 55, 50, 40, 60]
    labels = _runs(rng, sum(lengths), run=15)
    probs = [_noisy(rng, labels, 0.5), _noisy(rng, labels, 0.3)]
    config = E.EnsembleConfig(folds=4, inner_folds=3, windows=(1, 5, 11), bias_rounds=1)
    data = _data(labels, probs, lengths)
    clean = C.cross_fit(data, ["r/a", "r/b"], config)
    for fold in range(4):
        scored = [int(c[1:]) for c in clean.folds[fold].scored_clips]
        poisoned_labels = labels.copy()
        where = data.frame_index(scored)
        poisoned_labels[where] = rng.integers(-1, NUM_CLASSES, len(where))
        poisoned = C.cross_fit(_data(poisoned_labels, probs, lengths), ["r/a", "r/b"], config)
        before, after = clean.folds[fold], poisoned.folds[fold]
        assert after.scored_clips == before.scored_clips
        assert after.to_json(["r/a", "r/b"]) == before.to_json(["r/a", "r/b"])
        assert after.fit.decision["checked"] and after.fit.decision["inner_folds"] == 3
        # the poison did reach the other folds' fits and the scores
        assert poisoned.final.scores.macro_f1 != clean.final.scores.macro_f1
        assert any(p.to_json(["r/a", "r/b"]) != c.to_json(["r/a", "r/b"])
                   for p, c in zip(poisoned.folds, clean.folds) if p.fold != fold)


def test_too_few_videos_apply_no_step_unless_nested_is_off():
    rng = np.random.default_rng(2)
    labels = _runs(rng, 100)
    data = _data(labels, [_noisy(rng, labels, 0.5)], [100])
    steps, record = C.decide_steps(data, ["r/a"], E.EnsembleConfig())
    assert steps == () and record["checked"] is False
    steps, record = C.decide_steps(data, ["r/a"], E.EnsembleConfig(nested=False))
    assert steps == ("fill", "smooth", "bias") and record["why"] == "nested off"
