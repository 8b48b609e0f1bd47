"""Per-clip post-processing of combined per-frame probabilities: fill, smooth, fallback, bias.

Every operation takes the frames of a split concatenated clip after clip (clip c is frames
``offsets[c]:offsets[c + 1]``) and never lets one clip's frames affect another's:

* :func:`fill_no_face`: a frame with no face image takes the probabilities of the nearest face
  frame of its clip (the earlier on a tie: :func:`pipeline.data.frames.nearest_face`);
* :func:`smooth_probs`: moving mean (the window shrinks at clip ends) or per-class moving median
  (clip ends padded with the clip's first/last frame) of the probabilities;
* :func:`mode_filter`: majority vote over predicted labels (shrinking window; a tie keeps the
  frame's own label when it is among the tied, else the lowest class index);
* :func:`low_confidence`: the frames whose top probability is below a threshold, the ones that
  take the smoothed prediction under the confidence fallback (the other frames keep their own);
* :func:`biased_labels`: per-class offsets added to log-probabilities before the argmax.

The order in which they are applied and how each is tuned: :mod:`pipeline.scoring.ensemble`; the
searches that tune them: :mod:`pipeline.metrics.search`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.data.frames import nearest_face, window_bounds
from pipeline.data.labels import NUM_CLASSES
from pipeline.metrics.scores import argmax_labels

EPS = 1e-7  # added before the log so that a probability of exactly 0 stays finite
MEDIAN_CHUNK = 4096  # frames per block in the median filter (bounds its [8, block, window] copy)


def fill_no_face(probs: np.ndarray, offsets: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Copy into each frame with no face the probabilities of the nearest face frame of its clip."""
    n = len(face)
    if face.all() or n == 0:
        return probs
    return probs[nearest_face(face, offsets)]


def smooth_probs(probs: np.ndarray, offsets: np.ndarray, kind: str, window: int) -> np.ndarray:
    """Moving mean or median of [N, 8] probabilities within each clip (window 1 = unchanged)."""
    if window <= 1 or kind in ("none", "mode") or len(probs) == 0:
        return probs
    if kind == "mean":
        low, high = window_bounds(len(probs), window, offsets)
        # float64 running sums: float32 would lose precision over a split of millions of frames
        sums = np.zeros((len(probs) + 1, NUM_CLASSES), dtype=np.float64)
        np.cumsum(probs, axis=0, dtype=np.float64, out=sums[1:])
        return ((sums[high] - sums[low]) / (high - low)[:, None]).astype(np.float32)
    if kind == "median":
        out = np.empty_like(probs)
        half = window // 2
        for c in range(len(offsets) - 1):
            # class-major and np.partition: several times faster than np.median over [T, 8, w]
            clip = np.pad(probs[offsets[c]:offsets[c + 1]].T, ((0, 0), (half, half)), mode="edge")
            for s in range(0, clip.shape[1] - 2 * half, MEDIAN_CHUNK):
                block = sliding_window_view(clip[:, s:s + MEDIAN_CHUNK + 2 * half], window, axis=1)
                middle = np.partition(block, half, axis=-1)[..., half]  # [8, frames]
                out[offsets[c] + s:offsets[c] + s + middle.shape[1]] = middle.T
        total = out.sum(axis=1, keepdims=True)
        return np.divide(out, total, out=out, where=total > 0)
    raise ValueError(f"unknown smoothing {kind!r}")


def mode_filter(labels: np.ndarray, offsets: np.ndarray, window: int) -> np.ndarray:
    """Majority label over a moving window within each clip; ties keep the frame's own label."""
    if window <= 1 or len(labels) == 0:
        return labels
    low, high = window_bounds(len(labels), window, offsets)
    one_hot = np.zeros((len(labels) + 1, NUM_CLASSES), dtype=np.int32)
    one_hot[np.arange(1, len(labels) + 1), labels] = 1
    counts = np.cumsum(one_hot, axis=0, out=one_hot)
    votes = (counts[high] - counts[low]).astype(np.float32)
    votes[np.arange(len(labels)), labels] += 0.5  # own label wins a tie
    return votes.argmax(axis=1).astype(labels.dtype)


def biased_labels(probs: np.ndarray, bias: Sequence[float]) -> np.ndarray:
    """int8 [N] labels of argmax(log(probs) + bias): the per-class offsets applied to [N, 8]."""
    return argmax_labels(np.log(probs + EPS) + np.asarray(bias, dtype=np.float32))


def low_confidence(probs: np.ndarray, threshold: float | None) -> np.ndarray | None:
    """bool [N]: the frames whose top probability is below ``threshold`` (the confidence fallback:
    they take the smoothed prediction, the others keep their own); None for ``threshold`` None,
    meaning every frame takes the smoothed prediction (plain smoothing)."""
    if threshold is None:
        return None
    return probs.max(axis=1) < np.float32(threshold)
