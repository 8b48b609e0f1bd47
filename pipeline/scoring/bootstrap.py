"""Clip-level bootstrap confidence intervals for macro-F1, and paired differences of two pipelines.

Frames of one clip are strongly correlated (labels come in runs, smoothing spans them), so the
resampling unit is the video: a resample draws as many videos as the split has, with replacement
(the ``_left``/``_right`` clips of a two-person video are drawn together; every other video has
one clip, so this is the clip-level bootstrap), and scores every frame of every drawn clip once per
draw. The point estimate is macro-F1 as :mod:`pipeline.metrics.scores` defines it (the 8 classes
always count). In a resample, a class that the split annotates but no drawn clip does is left out
of that resample's mean (the resample cannot tell how well it is recognised; counting it as F1 0
would drag every resample of a split with rare classes below the estimate, and the interval would
sit under it); every other class counts as in the estimate, so a resample that draws every clip
once gives the estimate exactly.

Vectorised over resamples: each clip's 8x8 confusion matrix is counted once
(:func:`clip_confusions`, one ``np.bincount`` over the frames); a resample is a vector of draw
counts per clip, and its confusion matrix is that vector times the clips' matrices, so B resamples
are one [B, clips] x [clips, 64] product whatever the number of frames.

The interval is the percentile interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
of the resampled macro-F1 (numpy's default linear interpolation). The resample counts depend only
on the seed and the videos, so every row of one table is scored on the same resamples and a
:func:`paired_difference` of two rows is paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.metrics.scores import macro_f1_from_confusion, per_class_f1_from_confusion


def clip_confusions(labels: np.ndarray, predictions: np.ndarray, offsets: np.ndarray
                    ) -> np.ndarray:
    """int64 [n_clips, 8, 8]: each clip's confusion matrix (clip c is frames offsets[c]:offsets[c+1];
    targets -1 are ignored)."""
    n_clips = len(offsets) - 1
    clip = np.repeat(np.arange(n_clips), np.diff(offsets))
    keep = labels != UNLABELED
    index = (clip[keep] * NUM_CLASSES + labels[keep].astype(np.intp)) * NUM_CLASSES
    index += predictions[keep].astype(np.intp)
    counts = np.bincount(index, minlength=n_clips * NUM_CLASSES * NUM_CLASSES)
    return counts.reshape(n_clips, NUM_CLASSES, NUM_CLASSES).astype(np.int64, copy=False)


def resample_counts(groups: Sequence[str], n_resamples: int, seed: int) -> np.ndarray:
    """int64 [n_resamples, n_clips]: how often each clip is drawn in each resample.

    Videos (``groups``, one per clip) are drawn uniformly with replacement, as many as there are;
    a drawn video brings all of its clips.
    """
    videos, clip_video = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(len(videos), np.full(len(videos), 1.0 / len(videos)),
                            size=n_resamples)
    return drawn[:, clip_video].astype(np.int64)


def resampled_macro_f1(confusions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64 [n_resamples]: macro-F1 of every resample (``counts`` from :func:`resample_counts`;
    the classes that count: see the module docstring)."""
    flat = confusions.reshape(len(confusions), -1).astype(np.float64)
    totals = (counts.astype(np.float64) @ flat).reshape(-1, NUM_CLASSES, NUM_CLASSES)  # exact
    f1 = per_class_f1_from_confusion(totals)
    never_annotated = confusions.sum(axis=(0, 2)) == 0  # [8]: counts as in the estimate
    counted = (totals.sum(axis=2) > 0) | never_annotated
    n_counted = counted.sum(axis=1)
    return np.divide((f1 * counted).sum(axis=1), n_counted, out=np.zeros(len(totals)),
                     where=n_counted > 0)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    estimate: float  # on the frames as they are (not a resample)
    low: float
    high: float
    level: float  # e.g. 0.95
    n_resamples: int

    def to_json(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "level": self.level, "n_resamples": self.n_resamples}


@dataclass(frozen=True)
class Difference(Interval):
    """A paired difference (a minus b) with its interval and how often it was positive."""

    share_positive: float = 0.0  # fraction of resamples where a - b > 0

    def to_json(self) -> dict:
        return {**super().to_json(), "share_positive": self.share_positive}


def _bounds(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def interval(confusions: np.ndarray, counts: np.ndarray, level: float = 0.95) -> Interval:
    """Macro-F1 of the clips' summed confusion matrices, with its percentile interval."""
    estimate = float(macro_f1_from_confusion(confusions.sum(axis=0)))
    return Interval(estimate, *_bounds(resampled_macro_f1(confusions, counts), level), level,
                    len(counts))


def paired_difference(first: np.ndarray, second: np.ndarray, counts: np.ndarray,
                      level: float = 0.95) -> Difference:
    """macro-F1(first) - macro-F1(second) on the same frames, resampled together."""
    estimate = float(macro_f1_from_confusion(first.sum(axis=0))
                     - macro_f1_from_confusion(second.sum(axis=0)))
    values = resampled_macro_f1(first, counts) - resampled_macro_f1(second, counts)
    return Difference(estimate, *_bounds(values, level), level, len(counts),
                      share_positive=float((values > 0).mean()))
