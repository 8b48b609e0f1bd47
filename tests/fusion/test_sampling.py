"""Majority subsampling, class balance, and that -1 frames never train."""

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.fusion.sampling import SamplingConfig, class_counts, class_rates, draw, purity_rule


def _labels():
    # class 0: 1000 frames, class 1: 100, class 2: 10, and 50 unlabelled
    return np.r_[np.zeros(1000, int), np.ones(100, int), np.full(10, 2), np.full(50, -1)]


def test_subsampling_keeps_minorities_and_caps_majorities():
    labels = _labels()
    trainable = labels != -1
    counts = class_counts(labels, trainable)
    assert counts[:3].tolist() == [1000, 100, 10]
    rates = class_rates(counts, SamplingConfig(balance="subsample", majority_cap=2.0))
    # median of present counts is 100: cap 200 frames per class
    assert rates[0] == pytest.approx(0.2)
    assert rates[1] == rates[2] == 1.0
    drawn = np.stack([draw(labels, trainable, rates, np.random.default_rng(s)) for s in range(50)])
    assert (drawn[:, 1000:1110] == 1).all()  # every minority frame, every epoch
    assert drawn[:, :1000].sum(axis=1).mean() == pytest.approx(200, rel=0.05)
    assert (drawn[:, 1110:] == 0).all()  # unlabelled frames never


def test_balanced_draws_every_class_equally_often():
    labels = _labels()
    trainable = labels != -1
    rates = class_rates(class_counts(labels, trainable), SamplingConfig(balance="balanced"))
    drawn = np.stack([draw(labels, trainable, rates, np.random.default_rng(s)) for s in range(200)])
    per_class = [drawn[:, labels == c].sum(axis=1).mean() for c in range(3)]
    np.testing.assert_allclose(per_class, 1110 / 3, rtol=0.05)


def test_no_balance_draws_each_trainable_frame_once():
    labels = _labels()
    trainable = (labels != -1) & (np.arange(labels.size) % 2 == 0)
    drawn = draw(labels, trainable, class_rates(class_counts(labels, trainable), SamplingConfig()),
                 np.random.default_rng(0))
    assert (drawn == trainable).all()


def test_same_seed_same_draw():
    labels = _labels()
    rates = np.full(8, 0.5)
    a = draw(labels, labels != -1, rates, np.random.default_rng(3))
    b = draw(labels, labels != -1, rates, np.random.default_rng(3))
    assert (a == b).all() and 0 < a.sum() < labels.size


def test_purity_rule_reads_window_lengths_from_names():
    config = SamplingConfig(purity=True)
    assert purity_rule(("tdnn_w64", "tdnn_w32"), config) == ((64, 32), (0.5, 0.8))
    assert purity_rule(("tdnn_w32",), SamplingConfig(purity=False)) is None
    with pytest.raises(PipelineError, match="tdnn_w40"):
        purity_rule(("tdnn_w40",), config)
    with pytest.raises(PipelineError, match="'embedding'"):
        purity_rule(("embedding",), config)


def test_bad_sampling_config_is_one_line():
    with pytest.raises(PipelineError, match="balance"):
        SamplingConfig(balance="oversample")
