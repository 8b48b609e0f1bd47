"""CCC of the VA track against a direct numpy computation and published examples; edge cases;
-5 frames excluded; clip-level bootstrap intervals."""

import numpy as np
import pytest

from pipeline.metrics.va import (VA_INVALID, abaw_multitask_score, ccc, clip_moments, score_va,
                                 va_intervals)
from pipeline.scoring.bootstrap import resample_counts


def direct_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC written out with numpy's population moments (ABAW's evaluation script's form)."""
    rho = np.corrcoef(x, y)[0, 1]
    return 2 * rho * x.std() * y.std() / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_matches_direct_numpy_per_dimension():
    rng = np.random.default_rng(0)
    truth = rng.uniform(-1, 1, (500, 2))
    pred = np.clip(0.6 * truth + rng.normal(0, 0.3, truth.shape) + [0.1, -0.2], -1, 1)
    got = ccc(truth, pred)
    assert got == pytest.approx([direct_ccc(pred[:, 0], truth[:, 0]),
                                 direct_ccc(pred[:, 1], truth[:, 1])], abs=1e-12)
    scores = score_va(truth, pred)
    assert scores.mean_ccc == pytest.approx(got.mean(), abs=1e-15)
    assert scores.n_frames == 500


def test_published_examples():
    # audmetric's concordance_cc docstring: ([0, 1, 2], [0, 1, 1]) -> 0.6666...; the evaluate
    # "agkphysics/ccc" card: references [0.1, 0.3], predictions [0.1, 0.2] -> 0.6667, and
    # references [0.2, 0.1], predictions [0.1, 0.2] -> -1.
    truth = np.array([[0.0, 0.1], [0.5, 0.3], [0.5, 0.3]])  # audmetric scaled by 1/2
    pred = np.array([[0.0, 0.1], [0.5, 0.2], [1.0, 0.2]])
    assert ccc(truth[:, [0, 0]], pred[:, [0, 0]]) == pytest.approx([2 / 3, 2 / 3])
    assert ccc(truth[:2, [1, 1]], pred[:2, [1, 1]]) == pytest.approx([2 / 3, 2 / 3])
    t = np.array([[0.2, 0.2], [0.1, 0.1]])
    assert ccc(t, t[::-1]) == pytest.approx([-1.0, -1.0])
    assert ccc(t, t) == pytest.approx([1.0, 1.0])


def test_invalid_frames_are_excluded_per_dimension():
    rng = np.random.default_rng(1)
    truth = rng.uniform(-1, 1, (200, 2))
    pred = np.clip(truth + rng.normal(0, 0.2, truth.shape), -1, 1)
    marked = truth.copy()
    marked[:30] = VA_INVALID  # whole rows, as the reader writes them
    marked[40:50, 1] = VA_INVALID  # arousal only
    wild = pred.copy()
    wild[:30] = 1e6  # predictions on invalid frames must not count
    got = ccc(marked, wild)
    assert got[0] == pytest.approx(direct_ccc(pred[30:, 0], truth[30:, 0]))
    keep = np.r_[30:40, 50:200]
    assert got[1] == pytest.approx(direct_ccc(pred[keep, 1], truth[keep, 1]))
    assert score_va(marked, wild).n_frames == 170


def test_constant_and_empty_cases_are_finite():
    truth = np.random.default_rng(2).uniform(-1, 1, (50, 2))
    constant = np.full_like(truth, 0.3)
    assert ccc(truth, constant) == pytest.approx([0.0, 0.0], abs=1e-12)  # s_xy = 0
    assert np.isfinite(ccc(constant, constant)).all()
    assert (ccc(constant, constant) == 0).all()  # 0/0: no evidence of agreement
    everything_invalid = np.full((5, 2), VA_INVALID)
    scores = score_va(everything_invalid, np.zeros((5, 2)))
    assert (scores.mean_ccc, scores.n_frames) == (0.0, 0)
    assert (ccc(np.zeros((0, 2)), np.zeros((0, 2))) == 0).all()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="finite"):
        ccc(np.zeros((3, 2)), np.array([[0, 0], [np.nan, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ccc(np.full((3, 2), 2.0), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="want two"):
        ccc(np.zeros((3, 3)), np.zeros((3, 3)))


def test_multitask_score_is_the_sum():
    assert abaw_multitask_score(0.4, 0.5, 0.3) == pytest.approx(1.2)


def test_bootstrap_by_clip():
    rng = np.random.default_rng(3)
    lengths = rng.integers(20, 60, 12)
    offsets = np.r_[0, np.cumsum(lengths)]
    truth = rng.uniform(-1, 1, (offsets[-1], 2))
    pred = np.clip(0.7 * truth + rng.normal(0, 0.3, truth.shape), -1, 1)
    truth[5:9] = VA_INVALID
    m = clip_moments(truth, pred, offsets)
    assert m.shape == (12, 2, 6)
    groups = [f"v{i}" for i in range(12)]
    counts = resample_counts(groups, 300, seed=0)
    out = va_intervals(m, counts)
    whole = ccc(truth, pred)
    assert out["valence"].estimate == pytest.approx(whole[0])
    assert out["mean"].estimate == pytest.approx(whole.mean())
    for row in out.values():
        assert row.low <= row.estimate <= row.high and row.n_resamples == 300
    # a resample that draws every clip once is the estimate exactly
    once = va_intervals(m, np.ones((1, 12), dtype=np.int64))
    assert once["arousal"].low == pytest.approx(whole[1])
    # a resample is the CCC of the drawn clips' frames, repeated as drawn
    draw = counts[7]
    frames = np.concatenate([np.arange(offsets[c], offsets[c + 1])
                             for c in range(12) for _ in range(draw[c])])
    one = va_intervals(m, draw[None])
    assert one["valence"].low == pytest.approx(ccc(truth[frames], pred[frames])[0])
