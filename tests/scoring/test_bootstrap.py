"""Clip-level bootstrap: one resample matches scikit-learn on the resampled frames, intervals
contain the estimate and shrink with more clips, a paired difference with itself is exactly 0."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.data.labels import NUM_CLASSES
from pipeline.scoring import bootstrap as B
from pipeline.metrics.scores import confusion_matrix, macro_f1


def _clips(rng, n_clips, length=80, accuracy=0.6):
    """Labels in runs and predictions right with probability ``accuracy`` (-1 runs included)."""
    lengths = rng.integers(length // 2, length * 3 // 2, n_clips)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    labels = np.repeat(rng.integers(0, NUM_CLASSES, offsets[-1] // 10 + 1), 10)[:offsets[-1]]
    labels = labels.astype(np.int8)
    labels[rng.random(offsets[-1]) < 0.05] = -1
    predicted = np.where(rng.random(offsets[-1]) < accuracy, labels,
                         rng.integers(0, NUM_CLASSES, offsets[-1]))
    predicted = np.where(predicted < 0, 0, predicted).astype(np.int8)
    return labels, predicted, offsets


def test_clip_confusions_sum_to_the_split_and_count_each_clip():
    labels, predicted, offsets = _clips(np.random.default_rng(0), 7)
    per_clip = B.clip_confusions(labels, predicted, offsets)
    assert per_clip.shape == (7, NUM_CLASSES, NUM_CLASSES)
    np.testing.assert_array_equal(per_clip.sum(axis=0), confusion_matrix(labels, predicted))
    for c in range(7):
        window = slice(offsets[c], offsets[c + 1])
        np.testing.assert_array_equal(per_clip[c], confusion_matrix(labels[window],
                                                                    predicted[window]))


def test_one_resample_matches_scikit_learn_on_the_resampled_frames():
    rng = np.random.default_rng(1)
    labels, predicted, offsets = _clips(rng, 9)
    for c in range(9):  # one class per clip: most resamples leave some class out
        labels[offsets[c]:offsets[c + 1]][labels[offsets[c]:offsets[c + 1]] != -1] = c % 8
    groups = ["a", "b", "c", "c", "d", "e", "f", "g", "h"]  # clips 2 and 3: one video
    counts = B.resample_counts(groups, 50, seed=3)
    assert (counts[:, 2] == counts[:, 3]).all()  # a video's clips are drawn together
    assert (counts[:, [0, 1, 2, 4, 5, 6, 7, 8]].sum(axis=1) == 8).all()  # 8 videos per draw
    values = B.resampled_macro_f1(B.clip_confusions(labels, predicted, offsets), counts)
    left_out = 0
    for r in range(0, 50, 7):
        frames = np.concatenate([np.arange(offsets[c], offsets[c + 1])
                                 for c in range(9) for _ in range(counts[r, c])])
        keep = labels[frames] != -1
        truth, guess = labels[frames][keep], predicted[frames][keep]
        # the classes annotated in the resample, and those the whole split never annotates
        counted = sorted(set(truth.tolist()) | (set(range(NUM_CLASSES)) - set(labels.tolist())))
        expected = f1_score(truth, guess, labels=counted, average="macro", zero_division=0)
        assert values[r] == pytest.approx(expected, abs=1e-12)
        left_out += len(counted) < NUM_CLASSES
    assert left_out  # the rule for classes no drawn clip annotates was exercised


def test_a_resample_of_every_clip_once_is_the_estimate_even_with_a_class_never_annotated():
    labels, predicted, offsets = _clips(np.random.default_rng(6), 6)
    labels[labels == 3] = 2  # class 3 is annotated nowhere but still predicted
    confusions = B.clip_confusions(labels, predicted, offsets)
    once = np.ones((1, 6), dtype=np.int64)
    assert B.resampled_macro_f1(confusions, once)[0] == pytest.approx(macro_f1(labels, predicted))
    # a resample of clips without a single annotated frame scores 0, as metrics does
    empty = np.zeros_like(confusions)
    assert B.resampled_macro_f1(empty, once)[0] == 0.0


def test_interval_contains_the_estimate_and_shrinks_with_more_clips():
    rng = np.random.default_rng(2)
    widths = []
    for n_clips in (12, 48, 192):
        labels, predicted, offsets = _clips(rng, n_clips)
        counts = B.resample_counts([f"v{c}" for c in range(n_clips)], 2000, seed=0)
        ci = B.interval(B.clip_confusions(labels, predicted, offsets), counts)
        assert ci.estimate == pytest.approx(macro_f1(labels, predicted))
        assert ci.low < ci.estimate < ci.high
        assert ci.n_resamples == 2000 and ci.level == 0.95
        widths.append(ci.high - ci.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] > 1.5 * widths[2]  # about sqrt(16) = 4 in theory


def test_paired_difference_of_a_pipeline_with_itself_is_exactly_zero():
    labels, predicted, offsets = _clips(np.random.default_rng(4), 10)
    confusions = B.clip_confusions(labels, predicted, offsets)
    counts = B.resample_counts([f"v{c}" for c in range(10)], 500, seed=1)
    same = B.paired_difference(confusions, confusions, counts)
    assert (same.estimate, same.low, same.high, same.share_positive) == (0.0, 0.0, 0.0, 0.0)


def test_paired_difference_sees_a_real_gain_and_is_seeded():
    rng = np.random.default_rng(5)
    labels, weak, offsets = _clips(rng, 30, accuracy=0.4)
    strong = np.where(rng.random(len(labels)) < 0.5, np.maximum(labels, 0), weak).astype(np.int8)
    groups = [f"v{c}" for c in range(30)]
    first = B.paired_difference(B.clip_confusions(labels, strong, offsets),
                                B.clip_confusions(labels, weak, offsets),
                                B.resample_counts(groups, 1000, seed=7))
    assert first.estimate == pytest.approx(macro_f1(labels, strong) - macro_f1(labels, weak))
    assert 0 < first.low < first.estimate < first.high and first.share_positive == 1.0
    again = B.paired_difference(B.clip_confusions(labels, strong, offsets),
                                B.clip_confusions(labels, weak, offsets),
                                B.resample_counts(groups, 1000, seed=7))
    assert again == first
