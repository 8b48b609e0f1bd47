"""Frame-level metrics of the ABAW action-unit track: F1 per AU, mean F1, accuracy, ABAW 2021 score.

The ABAW 2020/2021 AU evaluation (paper 003 eq. 3: ``0.5 * F1_Score + 0.5 * Accuracy``, where "F1
Score is the unweighted mean and Accuracy is the total accuracy"):

* F1 of each of the 12 AUs (:data:`AU_NAMES`) as a binary problem, positive class 1; their
  unweighted mean is scikit-learn's ``f1_score(y_true, y_pred, average="macro", zero_division=0)``
  on the multilabel indicator matrices;
* "total accuracy": the fraction of all (frame, AU) values predicted right, over the flattened
  ``[N, 12]`` matrix (not scikit-learn's multilabel ``accuracy_score``, which is the fraction of
  frames with all 12 right);
* the ABAW 2021 AU score ``0.5 * mean F1 + 0.5 * accuracy``.

Conventions, as for expressions: a target ``-1`` is not annotated and is ignored together with
its prediction (element by element; the reader only makes whole rows of -1); an AU with neither a
true nor a predicted positive has F1 0 and still counts in the mean; with nothing annotated every
score is 0 and ``n_frames`` is 0. Predictions are probabilities (or 0/1), turned into decisions
by ``probability >= threshold``: 0.5 by default, or one threshold per AU from
:func:`fit_au_thresholds`, which a caller cross-fits like any other tuned choice.

Everything comes from per-AU counts (TP, FP, FN, TN) ``[12, 4]``, so tuning loops stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.labels import AU_NAMES, NUM_AUS, UNLABELED

ABAW2021_AU_F1_WEIGHT = 0.5
ABAW2021_AU_ACCURACY_WEIGHT = 0.5
DEFAULT_THRESHOLD = 0.5
# Candidate thresholds of fit_au_thresholds: a coarse grid, so that a threshold fitted on one fold
# is not tuned to single frames of it.
THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())
OBJECTIVES = ("f1", "abaw2021")
TP, FP, FN, TN = range(4)  # the columns of au_counts


def _check(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets, scores = np.asarray(targets), np.asarray(scores)
    if targets.shape != scores.shape or targets.ndim != 2 or targets.shape[1] != NUM_AUS:
        raise ValueError(f"targets of shape {targets.shape} and predictions of shape "
                         f"{scores.shape}: want two [N, {NUM_AUS}] arrays")
    if not np.issubdtype(targets.dtype, np.integer) or not np.isin(targets, (-1, 0, 1)).all():
        raise ValueError(f"AU targets must be integers -1, 0 or 1 (dtype {targets.dtype})")
    labelled = targets != UNLABELED
    if np.issubdtype(scores.dtype, np.bool_):
        scores = scores.astype(np.int8)
    if np.issubdtype(scores.dtype, np.integer):
        if not np.isin(scores[labelled], (0, 1)).all():
            raise ValueError("integer AU predictions must be 0 or 1")
    elif not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"AU predictions of dtype {scores.dtype}: want probabilities or 0/1")
    elif not ((scores[labelled] >= 0) & (scores[labelled] <= 1)).all():  # NaN fails too
        raise ValueError("AU probabilities must lie in [0, 1]")
    return targets, scores


def binarize(scores: np.ndarray, thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> np.ndarray:
    """Decisions int8 ``[N, 12]``: 1 where ``score >= threshold`` (one threshold, or one per AU)."""
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (NUM_AUS,))
    return (np.asarray(scores) >= thresholds).astype(np.int8)


def au_counts(targets: np.ndarray, scores: np.ndarray,
              thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> np.ndarray:
    """int64 ``[12, 4]``: TP, FP, FN, TN of each AU over its annotated frames."""
    targets, scores = _check(targets, scores)
    predicted = binarize(scores, thresholds).astype(bool)
    positive, negative = targets == 1, targets == 0  # -1 is neither: ignored
    return np.stack([(predicted & positive).sum(axis=0), (predicted & negative).sum(axis=0),
                     (~predicted & positive).sum(axis=0), (~predicted & negative).sum(axis=0)],
                    axis=-1).astype(np.int64)


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """F1 of each AU from counts ``[..., 12, 4]`` -> ``[..., 12]``; 0 where 2 TP + FP + FN = 0."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0)


def accuracy_from_counts(counts: np.ndarray) -> float:
    """Total accuracy: right (frame, AU) values over all annotated ones."""
    counts = np.asarray(counts)
    total = int(counts.sum())
    return float((counts[..., TP].sum() + counts[..., TN].sum()) / total) if total else 0.0


@dataclass(frozen=True, eq=False)
class AUScores:
    """Every AU metric of one set of frame predictions, all derived from the per-AU counts."""

    mean_f1: float  # unweighted mean F1 over the 12 AUs
    accuracy: float  # total accuracy over the annotated (frame, AU) values
    abaw2021_score: float  # 0.5 * mean_f1 + 0.5 * accuracy (ABAW 2020/2021 AU track)
    per_au_f1: tuple[float, ...]  # F1 per AU, AU_NAMES order
    counts: np.ndarray  # int64 [12, 4]: TP, FP, FN, TN per AU
    n_frames: int  # frames with at least one annotated AU
    thresholds: tuple[float, ...]  # the decision threshold of each AU

    @classmethod
    def from_counts(cls, counts: np.ndarray, n_frames: int,
                    thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> "AUScores":
        counts = np.asarray(counts, dtype=np.int64)
        f1 = f1_from_counts(counts)
        mean, acc = float(f1.mean()), accuracy_from_counts(counts)
        return cls(
            mean_f1=mean,
            accuracy=acc,
            abaw2021_score=ABAW2021_AU_F1_WEIGHT * mean + ABAW2021_AU_ACCURACY_WEIGHT * acc,
            per_au_f1=tuple(float(v) for v in f1),
            counts=counts,
            n_frames=int(n_frames),
            thresholds=tuple(float(t) for t in np.broadcast_to(thresholds, (NUM_AUS,))),
        )

    def to_json(self) -> dict:
        """Plain JSON values; per-AU F1 and thresholds keyed by AU name."""
        return {
            "mean_f1": self.mean_f1,
            "accuracy": self.accuracy,
            "abaw2021_score": self.abaw2021_score,
            "per_au_f1": dict(zip(AU_NAMES, self.per_au_f1)),
            "thresholds": dict(zip(AU_NAMES, self.thresholds)),
            "n_frames": self.n_frames,
        }


def score_au(targets: np.ndarray, scores: np.ndarray,
             thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> AUScores:
    """All AU metrics of probabilities (or 0/1 decisions) ``[N, 12]`` against targets."""
    counts = au_counts(targets, scores, thresholds)
    n_frames = int((np.asarray(targets) != UNLABELED).any(axis=1).sum())
    return AUScores.from_counts(counts, n_frames, thresholds)


def mean_au_f1(targets: np.ndarray, scores: np.ndarray,
               thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> float:
    """Unweighted mean of the 12 per-AU F1 scores."""
    return score_au(targets, scores, thresholds).mean_f1


def au_accuracy(targets: np.ndarray, scores: np.ndarray,
                thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> float:
    """Total accuracy over the annotated (frame, AU) values."""
    return score_au(targets, scores, thresholds).accuracy


def abaw2021_au_score(targets: np.ndarray, scores: np.ndarray,
                      thresholds: float | np.ndarray = DEFAULT_THRESHOLD) -> float:
    """The ABAW 2020/2021 AU score: 0.5 * mean F1 + 0.5 * total accuracy."""
    return score_au(targets, scores, thresholds).abaw2021_score


def threshold_counts(targets: np.ndarray, scores: np.ndarray,
                     grid: tuple[float, ...] = THRESHOLD_GRID) -> np.ndarray:
    """int64 ``[len(grid), 12, 4]``: the counts at every candidate threshold, by one sort per AU
    (memory O(N), not O(N x grid))."""
    targets, scores = _check(targets, scores)
    grid_array = np.asarray(grid, dtype=np.float64)
    counts = np.zeros((len(grid_array), NUM_AUS, 4), dtype=np.int64)
    for k in range(NUM_AUS):
        keep = targets[:, k] != UNLABELED
        order = np.argsort(scores[keep, k], kind="stable")
        ranked, truth = scores[keep, k][order], targets[keep, k][order]
        positives_below = np.r_[0, np.cumsum(truth == 1)]  # positives among the i lowest scores
        below = np.searchsorted(ranked, grid_array, side="left")  # scores < threshold
        n, positives = len(ranked), int(positives_below[-1])
        tp = positives - positives_below[below]
        fp = (n - below) - tp
        counts[:, k] = np.stack([tp, fp, positives - tp, n - positives - fp], axis=-1)
    return counts


def fit_au_thresholds(targets: np.ndarray, scores: np.ndarray,
                      grid: tuple[float, ...] = THRESHOLD_GRID, objective: str = "f1"
                      ) -> np.ndarray:
    """One decision threshold per AU, chosen from ``grid`` on these frames: float64 ``[12]``.

    ``objective`` "f1" maximises each AU's F1 (so the mean F1); "abaw2021" maximises the ABAW
    2021 AU score, which also splits into one term per AU (its F1 / 12 and its right values over
    all annotated values). Ties go to the threshold nearest 0.5, then the lower one, so an AU
    without evidence (say, no positive frame) keeps the default. Fit on other frames than those
    scored (cross-fitting): thresholds fitted and scored on the same frames flatter the score.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"threshold objective {objective!r}: want one of {', '.join(OBJECTIVES)}")
    counts = threshold_counts(targets, scores, grid)  # [G, 12, 4]
    value = f1_from_counts(counts)
    if objective == "abaw2021":
        total = max(1, int(counts[0].sum()))  # every grid row counts the same annotated values
        right = (counts[..., TP] + counts[..., TN]) / total
        value = ABAW2021_AU_F1_WEIGHT * value / NUM_AUS + ABAW2021_AU_ACCURACY_WEIGHT * right
    grid_array = np.asarray(grid, dtype=np.float64)
    preference = np.lexsort((grid_array, np.abs(grid_array - DEFAULT_THRESHOLD)))  # best first
    ranked = value[preference]  # [G, 12] in order of preference
    # The first (most preferred) threshold within rounding of the best value, per AU.
    best = preference[np.argmax(ranked >= ranked.max(axis=0) - 1e-12, axis=0)]
    return grid_array[best]
