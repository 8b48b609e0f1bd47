"""Temporal smoothing of valence and arousal within clips, its window tuned per dimension.

VA is a continuous signal that changes slowly next to the frame rate, and frame-level heads add
frame-to-frame noise; a moving mean within each clip removes some of it. As for the expression
ensemble's smoothing (:mod:`pipeline.scoring.postprocess`), the window shrinks at clip ends and
never crosses into another clip, and it is tuned, never fixed: :func:`fit_windows` picks, for
valence and for arousal separately, the narrowest odd window of the ensemble's ``windows`` (1 =
no smoothing) with the best CCC on the tuning frames. :mod:`pipeline.scoring.va_ensemble`
cross-fits it: each fold of whole videos is smoothed with windows fitted on the other folds, and
the test clips with windows fitted on the whole scored split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.data.frames import clip_offsets, window_bounds
from pipeline.metrics.va import ccc


def smooth_va(values: np.ndarray, offsets: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """float32 ``[N, 2]``: a moving mean of each dimension over ``windows[d]`` frames within each
    clip (the window shrinks at clip ends; 1 leaves the dimension unchanged)."""
    values = np.asarray(values, dtype=np.float32)
    out = values.copy()
    for d, window in enumerate(windows):
        if window <= 1 or len(values) == 0:
            continue
        low, high = window_bounds(len(values), int(window), offsets)
        sums = np.zeros(len(values) + 1, dtype=np.float64)  # float64: long splits
        np.cumsum(values[:, d], dtype=np.float64, out=sums[1:])
        # clipped: the running sums' rounding must not carry a mean of values in [-1, 1] out
        out[:, d] = np.clip((sums[high] - sums[low]) / (high - low), -1.0, 1.0)
    return out


def fit_windows(labels: np.ndarray, values: np.ndarray, offsets: np.ndarray,
                windows: Sequence[int]) -> tuple[int, int]:
    """Per dimension, the narrowest of ``windows`` whose smoothed values score the best CCC
    against ``labels`` (-5 frames left out) on these clips."""
    best = [1, 1]
    best_score = [-np.inf, -np.inf]
    for window in sorted(set(windows) | {1}):  # 1 (off) is always a candidate
        scores = ccc(labels, smooth_va(values, offsets, (window, window)))
        for d in range(2):
            if scores[d] > best_score[d] + 1e-12:
                best[d], best_score[d] = window, float(scores[d])
    return best[0], best[1]


def subset_offsets(offsets: np.ndarray, clip_indices: Sequence[int]) -> np.ndarray:
    """The offsets of the clips ``clip_indices`` concatenated in that order."""
    return clip_offsets([int(offsets[c + 1] - offsets[c]) for c in clip_indices])
