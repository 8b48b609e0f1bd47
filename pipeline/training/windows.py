"""Frame windows: dynamic audio windows and their label purity, sequence windows.

Everything here works on one clip's frame axis (0-based frame indices, ``T`` frames) and is
vectorised with cumulative sums, so a 100,000-frame clip costs milliseconds.

* **Dynamic windows** (Kim et al. 2023, section 2.2): a window of ``L`` frames centred on frame
  ``t`` covers frames ``t - L//2 .. t + L//2 - 1`` (the paper's ``t_c-16 .. t_c+15`` for 32),
  clipped to the clip. A window trains only if its **purity** reaches the threshold of its
  length (0.8 for 32, 0.65 for 48, 0.5 for 64 in the paper). Two rules (``PURITY_RULES``):

  - ``"window"`` (the paper's, used by ``kim2023``): the fraction of *all* the window's frames
    that carry frame ``t``'s label. The paper excludes a window when "less than 80% of the frames
    in the window" share the centre frame's label, so unlabelled (``-1``) frames count against
    it: a 32-frame window with 12 unlabelled frames scores at most 20/32 = 0.625 and is dropped.
    The paper does not say what happens at a clip's ends; here the window's frames are those
    inside the clip (a frame before the first one has no label to compare, and its audio is the
    extractor's padding, not another expression).
  - ``"labelled"`` (lenient, this project's earlier rule): the fraction of the window's
    *labelled* frames that carry frame ``t``'s label; unlabelled frames do not count at all, so
    the same window scores 1.0 when its 20 labelled frames agree.
* **Sequence windows** (Jin et al. 2021): fixed-length windows whose starts cover every frame;
  at inference overlapping windows' predictions are averaged.

Centred window bounds and the nearest-face rule (faceless frames) are the project's shared
primitives in :mod:`pipeline.data.frames`.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.frames import window_bounds
from pipeline.data.labels import NUM_CLASSES, UNLABELED

# Kim et al. 2023: the three dynamic audio windows (frames) and their label-purity thresholds.
PAPER_WINDOWS: tuple[int, ...] = (32, 48, 64)
PAPER_THRESHOLDS: tuple[float, ...] = (0.8, 0.65, 0.5)
# What a window's purity divides by: all its frames (the paper) or only its labelled frames.
PURITY_RULES: tuple[str, ...] = ("window", "labelled")


def purity(labels: np.ndarray, length: int, rule: str = "window") -> np.ndarray:
    """float64 [T]: fraction of each frame's centred window that shares its label.

    ``rule = "window"`` divides by every frame of the window inside the clip (unlabelled frames
    count as not sharing the label, as in the paper); ``"labelled"`` divides by the window's
    labelled frames only. 0 where the frame itself is unlabelled (it is never a target). The
    frame counts itself, so a labelled frame's purity is always > 0.
    """
    if rule not in PURITY_RULES:
        raise ValueError(f"purity rule {rule!r}: choose from {', '.join(PURITY_RULES)}")
    labels = np.asarray(labels).astype(np.int64)
    n = labels.size
    labelled = labels != UNLABELED
    onehot = np.zeros((n + 1, NUM_CLASSES), dtype=np.int64)
    onehot[1:][labelled, labels[labelled]] = 1
    cumulative = np.cumsum(onehot, axis=0)  # row i: counts over frames < i
    start, stop = window_bounds(n, length)
    per_class = cumulative[stop] - cumulative[start]  # [T, 8]
    total = stop - start if rule == "window" else per_class.sum(axis=1)
    own = per_class[np.arange(n), np.where(labelled, labels, 0)]
    return np.where(labelled & (total > 0), own / np.maximum(total, 1), 0.0)


def window_passes(labels: np.ndarray, lengths: tuple[int, ...], thresholds: tuple[float, ...],
                  rule: str = "window") -> np.ndarray:
    """bool [T, len(lengths)]: the window of each length around each frame may train.

    A window passes when its frame is labelled and its purity (by ``rule``, see :func:`purity`)
    reaches its threshold.
    """
    if len(lengths) != len(thresholds):
        raise ValueError(f"{len(lengths)} window lengths but {len(thresholds)} purity thresholds")
    labels = np.asarray(labels)
    if not lengths:
        return np.zeros((labels.size, 0), dtype=bool)
    # A tiny epsilon: 0.65 of 40 frames is 26 frames, but 26/40 may round below 0.65 in floats.
    return np.stack([purity(labels, length, rule) >= threshold - 1e-9
                     for length, threshold in zip(lengths, thresholds)], axis=1)


def sequence_starts(n_frames: int, length: int, stride: int, phase: int = 0) -> np.ndarray:
    """Starts of ``length``-frame windows, ``stride`` apart from ``phase``, the last one ending at
    the clip's end.

    With ``phase`` 0 (inference) and ``stride <= length`` the windows cover every frame. Training draws a random phase per
    epoch, so that over epochs windows start everywhere. A clip shorter than ``length`` gets one
    window starting at 0 (the caller pads it).
    """
    if stride < 1 or length < 1:
        raise ValueError(f"window length {length} and stride {stride}: both need to be >= 1")
    last = max(n_frames - length, 0)
    starts = np.arange(min(phase, last), last + 1, stride)
    if starts[-1] != last:
        starts = np.r_[starts, last]
    return starts.astype(np.int64)
