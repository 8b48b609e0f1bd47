"""Confidence fallback (issue 21): low-confidence frames take the smoothed prediction, the
threshold tuned on the fitting clips only, checked against direct computations."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.data.labels import NUM_CLASSES
from pipeline.scoring import crossfit as C
from pipeline.scoring import ensemble as E
from pipeline.scoring import fitting as F
from pipeline.scoring.combiners import Combination
from pipeline.scoring.frames import SplitData

from .splits import make_split


def _noisy_member(rng, labels, strength):
    """Probabilities peaked on the label with frame-to-frame noise: confidence varies."""
    logits = rng.normal(size=(len(labels), NUM_CLASSES)) * 1.5
    logits[np.arange(len(labels)), labels] += strength
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _direct(probs, lengths, kind, window, threshold):
    """Labels by the definition, frame by frame: a frame whose own top probability is below the
    threshold takes the smoothed prediction (moving mean of the clip's probabilities, or the
    majority label of the clip's argmax labels, windows shrinking at clip ends); the others keep
    their own argmax."""
    out, start, half = [], 0, window // 2
    for length in lengths:
        clip = probs[start:start + length]
        own = clip.argmax(axis=1)
        for i in range(length):
            if clip[i].max() >= threshold:
                out.append(own[i])
                continue
            lo, hi = max(0, i - half), min(length, i + half + 1)
            if kind == "mean":
                out.append(clip[lo:hi].mean(axis=0).argmax())
            else:  # mode: majority label, a tie keeps the frame's own label if tied
                votes = np.bincount(own[lo:hi], minlength=NUM_CLASSES)
                tied = np.flatnonzero(votes == votes.max())
                out.append(own[i] if own[i] in tied else tied[0])
        start += length
    return np.array(out)


def _alone(n_members=1):
    return Combination("r/a", "member", (1.0,) + (0.0,) * (n_members - 1))


@pytest.mark.parametrize("kind", ["mean", "mode"])
@pytest.mark.parametrize("window, threshold", [(5, 0.4), (11, 0.6), (3, 0.9), (25, 0.35)])
def test_fallback_matches_a_direct_computation(kind, window, threshold):
    rng = np.random.default_rng(window)
    lengths = [30, 17, 41]
    labels = np.repeat(rng.integers(0, NUM_CLASSES, 20), 5)[:sum(lengths)]
    probs = _noisy_member(rng, labels, 1.5)
    data = make_split([probs], labels, lengths)
    choices = F.Choices(_alone(), "none", kind, window, (0.0,) * NUM_CLASSES,
                        steps=("fallback",), threshold=threshold)
    expected = _direct(probs, lengths, kind, window, threshold)
    low = probs.max(axis=1) < threshold
    assert 0 < low.sum() < len(low)  # the case has frames of both kinds
    np.testing.assert_array_equal(F.predict(data, choices), expected)
    # threshold None is plain smoothing; a threshold no frame reaches leaves every frame as it is
    smooth = F.predict(data, choices, steps=("smooth",))
    np.testing.assert_array_equal(F.predict(data, F.Choices(
        _alone(), "none", kind, window, (0.0,) * NUM_CLASSES, steps=("fallback",))), smooth)
    np.testing.assert_array_equal(
        smooth, _direct(probs, lengths, kind, window, threshold=2.0))


def test_fallback_search_is_the_best_of_the_grid_by_sklearn():
    rng = np.random.default_rng(3)
    lengths = [40, 35, 50, 30]
    labels = np.repeat(rng.integers(0, NUM_CLASSES, 40), 6)[:sum(lengths)]
    probs = _noisy_member(rng, labels, 1.2)
    data = make_split([probs], labels, lengths)
    config = E.EnsembleConfig(fallback=True, fill="none", bias=False, windows=(1, 5, 9, 21),
                              fallback_thresholds=(0.3, 0.5, 0.7))
    choices = F.fit_steps(data, _alone(), config, ["fallback"])
    best, best_f1 = None, -1.0  # the documented order: narrowest window, then lowest threshold
    for window in (1, 5, 9, 21):
        for threshold in (0.3, 0.5, 0.7, 2.0):  # 2.0: every frame smoothed (threshold None)
            f1 = f1_score(labels, _direct(probs, lengths, "mean", window, threshold),
                          average="macro", labels=range(NUM_CLASSES), zero_division=0)
            if f1 > best_f1 + 1e-12:
                best, best_f1 = (window, None if threshold == 2.0 else threshold), f1
    assert (choices.window, choices.threshold) == best
    assert best_f1 > f1_score(labels, probs.argmax(axis=1), average="macro",
                              labels=range(NUM_CLASSES), zero_division=0)  # it does something


def test_fallback_given_smoothing_keeps_its_window_and_tunes_the_threshold():
    rng = np.random.default_rng(4)
    lengths = [40, 35, 50]
    labels = np.repeat(rng.integers(0, NUM_CLASSES, 30), 6)[:sum(lengths)]
    data = make_split([_noisy_member(rng, labels, 1.2)], labels, lengths)
    config = E.EnsembleConfig(fallback=True, fill="none", bias=False)
    assert F.pipeline_steps(config) == ["smooth", "fallback"]
    smoothed = F.fit_steps(data, _alone(), config, ["smooth"])
    both = F.fit_steps(data, _alone(), config, ["smooth", "fallback"])
    assert both.window == smoothed.window and both.threshold in (
        *config.fallback_thresholds, None)
    assert F.pipeline_steps(E.EnsembleConfig(fallback=True, smooth="mode", fill="none")) == [
        "bias", "smooth", "fallback"]
    assert F.pipeline_steps(E.EnsembleConfig(fallback=True, smooth="none")) == ["fill", "bias"]


def test_fallback_threshold_is_fitted_only_on_other_folds():
    rng = np.random.default_rng(5)
    lengths = [40, 50, 45, 35, 40, 50]
    labels = np.repeat(rng.integers(0, NUM_CLASSES, 60), 5)[:sum(lengths)]
    data = make_split([_noisy_member(rng, labels, 1.3), _noisy_member(rng, labels, 1.0)], labels,
                  lengths)
    config = E.EnsembleConfig(folds=3, fallback=True, fill="none", bias=False, nested=False,
                              selection="best", bootstrap=0, fallback_thresholds=(0.3, 0.5, 0.7))
    names = ["r/a", "r/b"]
    outcome = C.cross_fit(data, names, config)
    assert all("fallback" in r.fit.applied.steps for r in outcome.folds)
    thresholds = set()
    for record in outcome.folds:
        # refitted on the tuning clips alone: the same window and threshold
        tuning = data.subset([data.clip_ids.index(c) for c in record.tuning_clips])
        refit = F.fit(tuning, names, config).choices
        assert (refit.window, refit.threshold) == (record.fit.choices.window,
                                                   record.fit.choices.threshold)
        thresholds.add(record.fit.choices.threshold)
    # scrambling one fold's frames changes no choice of that fold's fit, and changes others'
    folds = C.assign_folds(data, 3)
    scrambled = data.probs.copy()
    where = data.frame_index([c for c in range(len(lengths)) if folds[c] == 0])
    scrambled[:, where] = rng.permutation(scrambled[:, where], axis=1)
    other = C.cross_fit(SplitData(data.clip_ids, data.groups, data.offsets, scrambled,
                                  data.labels, data.face), names, config)
    assert other.folds[0].fit.choices == outcome.folds[0].fit.choices
    assert any(a.fit.choices != b.fit.choices
               for a, b in zip(outcome.folds[1:], other.folds[1:]))


@pytest.mark.parametrize("kind", ["mean", "median"])
@pytest.mark.parametrize("steps", [("fallback",), ("smooth", "fallback"),
                                   ("smooth", "fallback", "bias")])
def test_final_probabilities_agree_with_the_labels_under_the_fallback(kind, steps):
    """Issue 31: the probabilities stage three writes (``predict_probs``) take the smoothed values
    only on the low-confidence frames, as the labels do; their argmax is the labels."""
    rng = np.random.default_rng(7)
    lengths = [30, 17, 28]
    labels = np.repeat(rng.integers(0, NUM_CLASSES, 15), 5)[:sum(lengths)]
    probs = _noisy_member(rng, labels, 1.5)
    data = make_split([probs], labels, lengths)
    bias = tuple(float(b) for b in rng.normal(scale=0.3, size=NUM_CLASSES))
    choices = F.Choices(_alone(), "none", kind, 9, bias if "bias" in steps else (0.0,) * 8,
                        steps=steps, threshold=0.5)
    final = F.predict_probs(data, choices)
    low = probs.max(axis=1) < 0.5
    assert 0 < low.sum() < len(low)
    np.testing.assert_array_equal(final.argmax(axis=1), F.predict(data, choices))
    if "bias" not in steps:  # the confident frames keep their own probabilities
        np.testing.assert_array_equal(final[~low], probs[~low])
