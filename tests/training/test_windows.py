"""Dynamic windows, label purity, sequence windows and the faceless-frame rule, against loops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.frames import nearest_face as nearest_valid
from pipeline.training.windows import (
    purity,
    sequence_starts,
    window_bounds,
    window_passes,
)


def _purity_loop(labels, length, rule):
    out = np.zeros(len(labels))
    for t, label in enumerate(labels):
        if label == -1:
            continue
        window = labels[max(0, t - length // 2): t - length // 2 + length]
        counted = window if rule == "window" else window[window != -1]
        out[t] = np.mean(counted == label)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-1, 7), min_size=1, max_size=120), st.integers(1, 70),
       st.sampled_from(["window", "labelled"]))
def test_purity_equals_a_loop(labels, length, rule):
    labels = np.array(labels)
    np.testing.assert_allclose(purity(labels, length, rule), _purity_loop(labels, length, rule))


def test_window_is_the_papers_centred_range():
    # t_s = {t_c - 16, ..., t_c + 15} for 32 frames; clipped at the clip's ends.
    start, stop = window_bounds(100, 32)
    assert (start[50], stop[50]) == (34, 66)
    assert (start[0], stop[0]) == (0, 16)
    assert (start[99], stop[99]) == (83, 100)


def test_thresholds_decide_which_windows_train():
    # Frame 40 of 80: label 1 on frames 0..44, then 2. Its windows hold 21/32 = 0.656 (frames
    # 24..55), 29/48 = 0.604 (16..63) and 37/64 = 0.578 (8..71) frames of class 1.
    labels = np.r_[np.ones(45, int), np.full(35, 2)]
    passes = window_passes(labels, (32, 48, 64), (0.8, 0.65, 0.5))
    assert [purity(labels, n)[40] for n in (32, 48, 64)] == pytest.approx([21 / 32, 29 / 48, 37 / 64])
    assert passes[40].tolist() == [False, False, True]
    assert window_passes(labels, (32,), (21 / 32,))[40, 0]  # a threshold met exactly passes
    assert passes[10].all()  # far from the boundary every window is pure
    assert not window_passes(np.full(10, -1), (32,), (0.8,)).any()  # unlabelled frames never train


def test_papers_rule_counts_unlabelled_frames_against_the_window():
    # Section 2.2: t_s is dropped when "less than 80% of the frames in the window" share the
    # centre frame's label. Frame 50's 32-frame window is frames 34..65; 12 of them are -1 and the
    # other 20 share its label: 20/32 = 0.625 < 0.8, dropped. The lenient rule sees 20/20.
    labels = np.full(100, 4)
    labels[40:52] = -1
    labels[50] = 4  # the centre frame itself is labelled ...
    labels[52] = -1  # ... and the window still holds 12 unlabelled frames
    start, stop = window_bounds(100, 32)
    window = labels[start[50]:stop[50]]
    assert (window.size, (window == -1).sum(), (window == 4).sum()) == (32, 12, 20)
    assert purity(labels, 32)[50] == pytest.approx(0.625)  # the default is the paper's rule
    assert purity(labels, 32, "labelled")[50] == 1.0
    assert not window_passes(labels, (32,), (0.8,))[50, 0]
    assert window_passes(labels, (32,), (0.8,), "labelled")[50, 0]
    # 48 and 64 frames around frame 50 hold the same 12 unlabelled frames: 36/48 = 0.75 >= 0.65
    # and 52/64 = 0.8125 >= 0.5, so those windows train under either rule.
    assert window_passes(labels, (32, 48, 64), (0.8, 0.65, 0.5))[50].tolist() == [False, True, True]
    assert purity(labels, 48)[50] == pytest.approx(36 / 48)


def test_lenient_rule_ignores_unlabelled_frames():
    # Frame 5's window is frames 0..20: ten of class 3, ten unlabelled, one of class 5.
    labels = np.r_[np.full(10, 3), np.full(10, -1), np.full(2, 5)]
    assert purity(labels, 32, "labelled")[5] == pytest.approx(10 / 11)
    assert purity(labels, 32, "window")[5] == pytest.approx(10 / 21)  # clipped at the clip's start
    with pytest.raises(ValueError, match="'lenient'"):
        purity(labels, 32, "lenient")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_nearest_valid_equals_a_loop(valid):
    valid = np.array(valid)
    got = nearest_valid(valid)
    where = np.flatnonzero(valid)
    for t in range(valid.size):
        if where.size == 0:
            assert got[t] == t
        else:
            distance = np.abs(where - t)
            assert got[t] == where[np.argmin(distance)]  # argmin: the earlier one on ties


@pytest.mark.parametrize("n", [1, 29, 30, 31, 100])
def test_sequence_windows_cover_every_frame(n):
    starts = sequence_starts(n, 30, 15)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s:s + 30] = True
    assert covered.all()
    assert starts.max() == max(n - 30, 0)
    assert sequence_starts(100, 30, 10, phase=7)[0] == 7
