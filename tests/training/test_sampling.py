"""Majority subsampling, class balance, and that -1 frames never train."""

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.training.sampling import SamplingConfig, class_counts, class_rates, draw, purity_rule


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


# Kim et al. 2023, Table 1: training frames per class (Neutral, Anger, Disgust, Fear, Happiness,
# Sadness, Surprise, Other), 597,361 in all.
TABLE1_TRAIN = np.array([180227, 17153, 10978, 9110, 97302, 80671, 32033, 169887])


def test_papers_subsampling_cuts_happiness_on_table1():
    assert TABLE1_TRAIN.sum() == 597361  # the table's total: the counts are copied right
    # Sorted, the counts' middle pair is Surprise 32,033 and Sadness 80,671: median 56,352.
    cap = (32033 + 80671) / 2
    rates = class_rates(TABLE1_TRAIN, SamplingConfig(balance="subsample"))  # the default: 1x
    cut = rates < 1
    assert cut.tolist() == [True, False, False, False, True, True, False, True]
    np.testing.assert_allclose(rates[cut], cap / TABLE1_TRAIN[cut])
    assert rates[4] == pytest.approx(0.579, abs=1e-3)  # Happiness keeps 58% of its frames
    np.testing.assert_allclose(rates[cut] * TABLE1_TRAIN[cut], cap)  # each cut class: the cap
    assert rates[~cut].tolist() == [1.0] * 4  # every frame of Anger, Disgust, Fear, Surprise
    # The same frames drawn per epoch: Happiness ~56k of 97k frames, minorities whole.
    labels = np.repeat(np.arange(8), TABLE1_TRAIN)
    drawn = draw(labels, np.ones(labels.size, bool), rates, np.random.default_rng(0))
    per_class = np.bincount(labels, weights=drawn, minlength=8)
    np.testing.assert_allclose(per_class[cut], cap, rtol=0.01)
    assert (per_class[~cut] == TABLE1_TRAIN[~cut]).all()


def test_a_cap_of_twice_the_median_leaves_happiness_whole():
    # The earlier default: only Neutral and Other exceed 112,704 frames.
    rates = class_rates(TABLE1_TRAIN, SamplingConfig(balance="subsample", majority_cap=2.0))
    assert (rates < 1).tolist() == [True, False, False, False, False, False, False, True]
    np.testing.assert_allclose(rates[[0, 7]], (32033 + 80671) / TABLE1_TRAIN[[0, 7]])


def test_kim2023_preset_subsamples_happiness_and_uses_the_papers_purity():
    from pipeline.fusion.presets import preset_overrides

    sampling = SamplingConfig(**{k: v for k, v in
                                 preset_overrides("kim2023", "mfm")["sampling"].items()})
    assert sampling.purity and sampling.purity_over == "window"
    assert class_rates(TABLE1_TRAIN, sampling)[4] < 1  # Happiness is subsampled


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
    assert purity_rule(("tdnn_w64", "tdnn_w32"), config) == ((64, 32), (0.5, 0.8), "window")
    lenient = SamplingConfig(purity=True, purity_over="labelled")
    assert purity_rule(("tdnn_w32",), lenient) == ((32,), (0.8,), "labelled")
    assert purity_rule(("tdnn_w32",), SamplingConfig(purity=False)) is None
    with pytest.raises(PipelineError, match="tdnn_w40"):
        purity_rule(("tdnn_w40",), config)
    with pytest.raises(PipelineError, match="'embedding'"):
        purity_rule(("embedding",), config)


def test_bad_sampling_config_is_one_line():
    with pytest.raises(PipelineError, match="balance"):
        SamplingConfig(balance="oversample")
    with pytest.raises(PipelineError, match="purity_over"):
        SamplingConfig(purity_over="labeled")
