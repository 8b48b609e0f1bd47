"""AU metrics against scikit-learn on random multilabel inputs, and the per-AU threshold fit
against a brute-force search scored by scikit-learn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from pipeline.data.labels import AU_NAMES, NUM_AUS
from pipeline.metrics import au as au_metrics


@st.composite
def au_frames(draw):
    """Targets [N, 12] in {0, 1} with whole rows of -1, probabilities [N, 12]; AUs often rare."""
    n = draw(st.integers(1, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rates = rng.choice([0.0, 0.02, 0.3, 0.7, 1.0], size=NUM_AUS)
    targets = (rng.random((n, NUM_AUS)) < rates).astype(np.int8)
    targets[rng.random(n) < draw(st.sampled_from([0.0, 0.2, 1.0]))] = -1
    probs = np.clip(0.6 * targets + rng.random((n, NUM_AUS)) * 0.7, 0, 1)
    if draw(st.booleans()):
        probs = np.round(probs, 1)  # ties at the thresholds
    return targets, probs


@settings(max_examples=100, deadline=None)
@given(au_frames())
def test_au_metrics_equal_scikit_learn(data):
    targets, probs = data
    keep = targets[:, 0] != -1
    t, p = targets[keep], (probs[keep] >= 0.5).astype(int)
    s = au_metrics.score_au(targets, probs)
    assert s.n_frames == int(keep.sum())
    if not keep.any():
        assert (s.mean_f1, s.accuracy, s.abaw2021_score) == (0.0, 0.0, 0.0)
        return
    f1_macro = sk.f1_score(t, p, average="macro", zero_division=0)
    f1_each = sk.f1_score(t, p, average=None, zero_division=0)
    total_accuracy = sk.accuracy_score(t.ravel(), p.ravel())  # ABAW: over the flattened matrix
    assert s.mean_f1 == pytest.approx(f1_macro, abs=1e-12)
    assert au_metrics.mean_au_f1(targets, probs) == pytest.approx(f1_macro, abs=1e-12)
    np.testing.assert_allclose(s.per_au_f1, f1_each, atol=1e-12)
    assert s.accuracy == pytest.approx(total_accuracy, abs=1e-12)
    assert au_metrics.au_accuracy(targets, probs) == pytest.approx(total_accuracy, abs=1e-12)
    # Paper 003 eq. 3: 0.5 * F1 + 0.5 * accuracy.
    assert au_metrics.abaw2021_au_score(targets, probs) \
        == pytest.approx(0.5 * f1_macro + 0.5 * total_accuracy)
    mcm = sk.multilabel_confusion_matrix(t, p)  # [12, 2, 2]: [[TN, FP], [FN, TP]]
    np.testing.assert_array_equal(
        s.counts, np.stack([mcm[:, 1, 1], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 0, 0]], axis=-1))


def test_unannotated_values_are_ignored_element_by_element():
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, (50, NUM_AUS)).astype(np.int8)
    targets[rng.random((50, NUM_AUS)) < 0.2] = -1
    probs = rng.random((50, NUM_AUS))
    s = au_metrics.score_au(targets, probs)
    for k in range(NUM_AUS):
        keep = targets[:, k] != -1
        expected = sk.f1_score(targets[keep, k], probs[keep, k] >= 0.5, zero_division=0)
        assert s.per_au_f1[k] == pytest.approx(expected)
    keep = targets != -1
    assert s.accuracy == pytest.approx(np.mean(targets[keep] == (probs[keep] >= 0.5)))


def test_per_au_thresholds_and_zero_one_predictions():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (40, NUM_AUS)).astype(np.int8)
    probs = rng.random((40, NUM_AUS))
    thresholds = np.linspace(0.1, 0.9, NUM_AUS)
    expected = sk.f1_score(targets, probs >= thresholds, average="macro", zero_division=0)
    assert au_metrics.mean_au_f1(targets, probs, thresholds) == pytest.approx(expected)
    decisions = au_metrics.binarize(probs, thresholds)
    assert au_metrics.mean_au_f1(targets, decisions) == pytest.approx(expected)
    assert au_metrics.mean_au_f1(targets, decisions.astype(bool)) == pytest.approx(expected)
    record = au_metrics.score_au(targets, probs, thresholds).to_json()
    assert list(record["per_au_f1"]) == list(AU_NAMES)
    assert record["thresholds"]["AU26"] == pytest.approx(0.9)


def _brute_force(targets, probs, grid, objective):
    """Per AU, the grid value with the best objective by scikit-learn; ties nearest 0.5, lower."""
    best = []
    total = int((targets != -1).sum())
    for k in range(NUM_AUS):
        keep = targets[:, k] != -1
        if not keep.any():  # scikit-learn refuses empty input; nothing to fit: all equal
            best.append(0.5 if 0.5 in grid else min(grid, key=lambda g: (abs(g - 0.5), g)))
            continue
        values = []
        for threshold in grid:
            predicted = probs[keep, k] >= threshold
            f1 = sk.f1_score(targets[keep, k], predicted, zero_division=0)
            right = int((predicted == targets[keep, k]).sum())
            values.append(f1 if objective == "f1" else 0.5 * f1 / NUM_AUS + 0.5 * right / total)
        top = max(values)
        candidates = [g for g, v in zip(grid, values) if v >= top - 1e-12]
        best.append(min(candidates, key=lambda g: (abs(g - 0.5), g)))
    return np.array(best)


@settings(max_examples=25, deadline=None)
@given(au_frames(), st.sampled_from(au_metrics.OBJECTIVES),
       st.sampled_from([(0.2, 0.4, 0.5, 0.6, 0.8), (0.05, 0.3, 0.7, 0.95)]))
def test_fitted_thresholds_equal_a_brute_force_search(data, objective, grid):
    targets, probs = data
    fitted = au_metrics.fit_au_thresholds(targets, probs, grid, objective)
    np.testing.assert_allclose(fitted, _brute_force(targets, probs, grid, objective))
    tuned = au_metrics.score_au(targets, probs, fitted)
    for threshold in grid:  # per-AU thresholds beat any one threshold for all AUs
        uniform = au_metrics.score_au(targets, probs, threshold)
        if objective == "f1":
            assert tuned.mean_f1 >= uniform.mean_f1 - 1e-12
        else:
            assert tuned.abaw2021_score >= uniform.abaw2021_score - 1e-12


def test_an_au_without_evidence_keeps_the_default_threshold():
    targets = np.zeros((30, NUM_AUS), np.int8)  # no positive anywhere: F1 is 0 at any threshold
    probs = np.random.default_rng(1).random((30, NUM_AUS))
    assert (au_metrics.fit_au_thresholds(targets, probs) == 0.5).all()


@pytest.mark.parametrize("targets, probs, message", [
    (np.zeros((3, 11), int), np.zeros((3, 11)), "want two"),
    (np.zeros((3, 12), int), np.zeros((4, 12)), "want two"),
    (np.full((3, 12), 2), np.zeros((3, 12)), "-1, 0 or 1"),
    (np.zeros((3, 12)), np.zeros((3, 12)), "-1, 0 or 1"),  # float targets
    (np.zeros((3, 12), int), np.full((3, 12), 1.5), r"\[0, 1\]"),
    (np.zeros((3, 12), int), np.full((3, 12), np.nan), r"\[0, 1\]"),
    (np.zeros((3, 12), int), np.full((3, 12), 2), "0 or 1"),
])
def test_bad_inputs_are_rejected(targets, probs, message):
    with pytest.raises(ValueError, match=message):
        au_metrics.score_au(targets, probs)


def test_bad_objective():
    with pytest.raises(ValueError, match="objective 'auc'"):
        au_metrics.fit_au_thresholds(np.zeros((2, 12), int), np.zeros((2, 12)), objective="auc")
