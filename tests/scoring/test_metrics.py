"""Metrics against scikit-learn on random inputs, including absent classes and -1 targets."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from pipeline.data.labels import CLASSES, NUM_CLASSES, UNLABELED
from pipeline.metrics import scores as metrics

LABELS = list(range(NUM_CLASSES))


@st.composite
def frames(draw):
    """Targets in -1..7 and predictions in 0..7, often drawn from a few classes only."""
    n = draw(st.integers(1, 300))
    true_classes = draw(st.lists(st.integers(-1, 7), min_size=1, max_size=9, unique=True))
    pred_classes = draw(st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    y_true = rng.choice(true_classes, size=n).astype(np.int8)
    y_pred = rng.choice(pred_classes, size=n).astype(np.int64)
    return y_true, y_pred


def _sklearn(y_true, y_pred):
    keep = y_true != UNLABELED
    return y_true[keep], y_pred[keep]


@settings(max_examples=150, deadline=None)
@given(frames())
def test_metrics_equal_scikit_learn(data):
    y_true, y_pred = data
    t, p = _sklearn(y_true, y_pred)
    s = metrics.score(y_true, y_pred)
    assert s.n_frames == t.size
    if t.size == 0:  # every frame unlabeled: everything is 0 by our convention
        assert (s.macro_f1, s.accuracy, s.abaw2021_score) == (0.0, 0.0, 0.0)
        assert not s.confusion.any()
        return
    f1_macro = sk.f1_score(t, p, labels=LABELS, average="macro", zero_division=0)
    f1_each = sk.f1_score(t, p, labels=LABELS, average=None, zero_division=0)
    acc = sk.accuracy_score(t, p)
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(f1_macro, abs=1e-12)
    assert s.macro_f1 == pytest.approx(f1_macro, abs=1e-12)
    np.testing.assert_allclose(metrics.per_class_f1(y_true, y_pred), f1_each, atol=1e-12)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(acc, abs=1e-12)
    assert metrics.abaw2021_score(y_true, y_pred) == pytest.approx(0.67 * f1_macro + 0.33 * acc)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred),
                                  sk.confusion_matrix(t, p, labels=LABELS))


def test_absent_class_counts_as_zero_in_the_macro_mean():
    # Only classes 0 and 1 occur; both perfectly predicted: macro-F1 = 2/8, not 1.
    y = np.array([0, 1, 1, 0, -1])
    assert metrics.macro_f1(y, np.array([0, 1, 1, 0, 5])) == pytest.approx(2 / 8)


def test_stacked_confusions_score_like_single_ones():
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 20, size=(4, 3, 8, 8))
    expected = [[metrics.Scores.from_confusion(c).macro_f1 for c in row] for row in stack]
    np.testing.assert_allclose(metrics.macro_f1_from_confusion(stack), expected)


def test_scores_json_names_classes():
    s = metrics.score(np.array([4, 4, 2]), np.array([4, 2, 2]))
    record = s.to_json()
    assert list(record["per_class_f1"]) == list(CLASSES)
    assert record["n_frames"] == 3 and record["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("y_true, y_pred", [
    (np.array([0, 8]), np.array([0, 1])),  # target out of range
    (np.array([0, -2]), np.array([0, 1])),  # a negative target other than -1
    (np.array([0, 1]), np.array([0, 8])),  # prediction out of range
    (np.array([0, 1]), np.array([0.0, 1.0])),  # float predictions
    (np.array([0, 1]), np.array([0, 1, 2])),  # lengths differ
])
def test_bad_inputs_are_rejected(y_true, y_pred):
    with pytest.raises(ValueError):
        metrics.confusion_matrix(y_true, y_pred)


def test_predictions_at_unlabeled_frames_are_not_checked():
    assert metrics.accuracy(np.array([3, -1]), np.array([3, 99])) == 1.0


@settings(max_examples=150, deadline=None)
@given(frames())
def test_seven_class_score_equals_scikit_learn_without_other(data):
    """ABAW 2021 scored 7 classes: frames annotated Other (7) are left out, and a prediction of
    Other counts as a miss, as scikit-learn does with ``labels=range(7)``."""
    y_true, y_pred = data
    keep = (y_true != UNLABELED) & (y_true != CLASSES.index("Other"))
    t, p = y_true[keep], y_pred[keep]
    s = metrics.score(y_true, y_pred)
    if t.size == 0:
        assert s.abaw2021_score_7class == 0.0
        return
    f1 = sk.f1_score(t, p, labels=list(range(7)), average="macro", zero_division=0)
    expected = 0.67 * f1 + 0.33 * sk.accuracy_score(t, p)
    assert s.abaw2021_score_7class == pytest.approx(expected, abs=1e-12)
    assert metrics.abaw2021_score_7class(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    assert s.to_json()["abaw2021_score_7class"] == s.abaw2021_score_7class
