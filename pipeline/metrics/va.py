"""Frame-level metrics of the ABAW valence-arousal track: CCC per dimension, their mean, and
clip-level bootstrap intervals.

The ABAW VA evaluation scores valence and arousal by Lin's concordance correlation coefficient

    CCC = 2 s_xy / (s_x^2 + s_y^2 + (m_x - m_y)^2)

with population moments (divide by N, as the ABAW evaluation scripts and Lin 1989 do), one per
dimension, and the track's score is their unweighted mean ``(CCC_V + CCC_A) / 2``.

Conventions:

* a target of :data:`VA_INVALID` (``-5``, the annotation files' mark of an invalid frame) is not
  annotated: it is left out together with its prediction, per dimension (the reader only writes
  whole rows of -5, but a hand-made array may not);
* NaN-free edge cases: where CCC is undefined (no valid frame, or both series constant and
  equal, so the denominator is 0) it is 0, the value of no evidence of agreement, so that a
  constant predictor never looks good. A constant prediction against varying truth gets
  ``CCC = 0`` by the formula (s_xy = 0);
* predictions must be finite: a NaN prediction raises instead of silently scoring.

Everything comes from six sums per dimension (n, sum x, sum y, sum x^2, sum y^2, sum xy): per clip
they are :func:`clip_moments`, a bootstrap resample is a weighted sum of the clips' rows
(:func:`resampled_ccc`), so B resamples are one matrix product, as for macro-F1 in
:mod:`pipeline.scoring.bootstrap` (whose :func:`resample_counts` draws the same videos, so VA and
EXPR intervals of one table are paired).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.labels import VA_INVALID, VA_NAMES

NUM_VA = len(VA_NAMES)
N, SX, SY, SXX, SYY, SXY = range(6)  # the columns of the moments


def _check(targets: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if targets.shape != predictions.shape or targets.ndim != 2 or targets.shape[1] != NUM_VA:
        raise ValueError(f"targets of shape {targets.shape} and predictions of shape "
                         f"{predictions.shape}: want two [N, {NUM_VA}] arrays (valence, arousal)")
    valid = targets != VA_INVALID
    if not np.isfinite(targets).all() or (np.abs(targets[valid]) > 1).any():
        raise ValueError("VA targets must lie in [-1, 1] (or be -5 for an invalid frame)")
    if not np.isfinite(predictions[valid]).all():
        raise ValueError("VA predictions must be finite")
    return targets, predictions


def moments(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """float64 ``[2, 6]``: n, sum x, sum y, sum x^2, sum y^2, sum xy of each dimension over its
    valid frames (x = prediction, y = target)."""
    targets, predictions = _check(targets, predictions)
    valid = targets != VA_INVALID
    x = np.where(valid, predictions, 0.0)
    y = np.where(valid, targets, 0.0)
    return np.stack([valid.sum(axis=0), x.sum(axis=0), y.sum(axis=0), (x * x).sum(axis=0),
                     (y * y).sum(axis=0), (x * y).sum(axis=0)], axis=-1).astype(np.float64)


def ccc_from_moments(m: np.ndarray) -> np.ndarray:
    """CCC of each dimension from moments ``[..., 2, 6]`` -> ``[..., 2]``; 0 where undefined."""
    m = np.asarray(m, dtype=np.float64)
    n = m[..., N]
    safe = np.where(n > 0, n, 1.0)
    mx, my = m[..., SX] / safe, m[..., SY] / safe
    vx = np.maximum(m[..., SXX] / safe - mx * mx, 0.0)  # rounding can give a tiny negative
    vy = np.maximum(m[..., SYY] / safe - my * my, 0.0)
    cov = m[..., SXY] / safe - mx * my
    denominator = vx + vy + (mx - my) ** 2
    # Relative floor: a variance that is rounding noise of a constant series counts as 0.
    tiny = 1e-12 * (1.0 + mx * mx + my * my)
    ok = (n > 0) & (denominator > tiny)
    return np.where(ok, 2 * cov / np.where(ok, denominator, 1.0), 0.0)


def ccc(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """float64 ``[2]``: CCC of valence and of arousal."""
    return ccc_from_moments(moments(targets, predictions))


@dataclass(frozen=True, eq=False)
class VAScores:
    """The VA metrics of one set of frame predictions."""

    mean_ccc: float  # (CCC valence + CCC arousal) / 2: the ABAW VA score
    ccc_valence: float
    ccc_arousal: float
    n_frames: int  # frames with at least one valid dimension

    def to_json(self) -> dict:
        return {"mean_ccc": self.mean_ccc, "ccc_valence": self.ccc_valence,
                "ccc_arousal": self.ccc_arousal, "n_frames": self.n_frames}


def score_va(targets: np.ndarray, predictions: np.ndarray) -> VAScores:
    """CCC per dimension and their mean of predictions ``[N, 2]`` against targets."""
    values = ccc(targets, predictions)
    n_frames = int((np.asarray(targets) != VA_INVALID).any(axis=1).sum())
    return VAScores(float(values.mean()), float(values[0]), float(values[1]), n_frames)


def mean_ccc(targets: np.ndarray, predictions: np.ndarray) -> float:
    """The ABAW VA score: the mean of the two CCCs."""
    return score_va(targets, predictions).mean_ccc


def abaw_multitask_score(expr_f1: float, au_f1: float, va_mean_ccc: float) -> float:
    """The ABAW multi-task score: EXPR macro-F1 + AU mean F1 + VA mean CCC (range [-1, 3])."""
    return float(expr_f1) + float(au_f1) + float(va_mean_ccc)


def clip_moments(targets: np.ndarray, predictions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """float64 ``[n_clips, 2, 6]``: each clip's moments (clip c is frames offsets[c]:offsets[c+1])."""
    targets, predictions = _check(targets, predictions)
    offsets = np.asarray(offsets, dtype=np.intp)
    return np.stack([moments(targets[a:b], predictions[a:b])
                     for a, b in zip(offsets[:-1], offsets[1:])]) if len(offsets) > 1 \
        else np.zeros((0, NUM_VA, 6))


def resampled_ccc(clip_m: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64 ``[n_resamples, 2]``: CCC per dimension of every resample (``counts`` from
    :func:`pipeline.scoring.bootstrap.resample_counts`: draws per clip)."""
    flat = np.asarray(clip_m, dtype=np.float64).reshape(len(clip_m), -1)
    totals = (np.asarray(counts, dtype=np.float64) @ flat).reshape(-1, NUM_VA, 6)
    return ccc_from_moments(totals)


@dataclass(frozen=True)
class VAInterval:
    """A CCC estimate and its percentile bootstrap interval (one dimension or the mean)."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int

    def to_json(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "level": self.level, "n_resamples": self.n_resamples}


def va_intervals(clip_m: np.ndarray, counts: np.ndarray, level: float = 0.95
                 ) -> dict[str, VAInterval]:
    """Intervals of CCC valence, CCC arousal and their mean, keyed "valence", "arousal", "mean"."""
    estimate = ccc_from_moments(np.asarray(clip_m).sum(axis=0))
    resampled = resampled_ccc(clip_m, counts)
    rows = {"valence": (estimate[0], resampled[:, 0]), "arousal": (estimate[1], resampled[:, 1]),
            "mean": (estimate.mean(), resampled.mean(axis=1))}
    out = {}
    for name, (point, values) in rows.items():
        low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        out[name] = VAInterval(float(point), float(low), float(high), level, len(counts))
    return out
