"""Frame-level metrics of the ABAW expression track: macro-F1, per-class F1, accuracy, ABAW-2021.

Everything is computed from one 8x8 confusion matrix built with a single ``np.bincount``, so
scoring millions of frames costs a few milliseconds and tuning loops can score many candidate
predictions cheaply (:func:`per_class_f1_from_confusion` also takes stacks ``[..., 8, 8]``).

Conventions, identical to scikit-learn's
``f1_score(y_true, y_pred, labels=range(8), average="macro", zero_division=0)``:

* targets equal to ``-1`` (not annotated) are ignored, together with their predictions;
* the labels are always the 8 classes: a class absent from both truth and prediction has F1 0
  and still counts in the macro mean (it is not dropped as scikit-learn's default would);
* with no annotated frame at all every score is 0 and ``n_frames`` is 0, so a caller can tell.

Class sets: ``macro_f1``, ``per_class_f1``, ``accuracy`` and ``abaw2021_score`` use the 8 classes
of :data:`CLASSES` (ABAW 2022+, Other included). The ABAW 2020/2021 score is
``0.67 * macroF1 + 0.33 * accuracy``; the 2021 expression track had 7 classes (no Other), so
``abaw2021_score_7class`` (:func:`seven_class_from_confusion`) also reports it on those: frames
annotated Other are left out, macro-F1 averages the 7 basic classes, and a prediction of Other
on a basic-class frame is a miss (a false negative of its class, a false positive of none), as
scikit-learn's ``f1_score(..., labels=range(7))`` counts it. The 8-class ``abaw2021_score`` is
kept as before, for comparison with earlier runs. AU metrics are in :mod:`.au`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.labels import CLASSES, NUM_CLASSES, UNLABELED

ABAW2021_F1_WEIGHT = 0.67
ABAW2021_ACCURACY_WEIGHT = 0.33
OTHER = CLASSES.index("Other")  # the class the 2020/2021 expression track did not have


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """int64 ``[8, 8]`` counts, rows = truth, columns = prediction; targets -1 are ignored."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"targets of shape {y_true.shape} and predictions of shape {y_pred.shape}:"
                         " want two 1-d arrays of equal length")
    keep = y_true != UNLABELED
    if not keep.all():
        y_true, y_pred = y_true[keep], y_pred[keep]
    if y_true.size == 0:
        return np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    _check_range("target", y_true)
    _check_range("prediction", y_pred)
    index = y_true.astype(np.intp) * NUM_CLASSES + y_pred.astype(np.intp)
    counts = np.bincount(index, minlength=NUM_CLASSES * NUM_CLASSES)
    return counts.reshape(NUM_CLASSES, NUM_CLASSES).astype(np.int64, copy=False)


def _check_range(what: str, values: np.ndarray) -> None:
    low, high = values.min(), values.max()
    if low < 0 or high >= NUM_CLASSES or not np.issubdtype(values.dtype, np.integer):
        bad = low if low < 0 else high
        raise ValueError(f"{what} {bad!r} is not a class index 0..{NUM_CLASSES - 1}"
                         f" (dtype {values.dtype})")


def per_class_f1_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class from confusion matrices ``[..., 8, 8]`` -> float64 ``[..., 8]``.

    F1 = 2 TP / (2 TP + FP + FN), and 0 where that denominator is 0 (a class neither true nor
    predicted).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    denominator = confusion.sum(axis=-1) + confusion.sum(axis=-2)  # = 2 TP + FN + FP
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2.0 * tp / denominator, 0.0)
    return f1


def macro_f1_from_confusion(confusion: np.ndarray) -> np.ndarray | float:
    """Mean per-class F1 over all 8 classes, from ``[..., 8, 8]`` confusion matrices."""
    result = per_class_f1_from_confusion(confusion).mean(axis=-1)
    return float(result) if np.ndim(result) == 0 else result


def accuracy_from_confusion(confusion: np.ndarray) -> float:
    confusion = np.asarray(confusion)
    total = int(confusion.sum())
    return float(np.trace(confusion) / total) if total else 0.0


def seven_class_from_confusion(confusion: np.ndarray) -> tuple[float, float, float]:
    """(macro-F1 over the 7 basic classes, accuracy, the ABAW 2021 score) of an 8x8 confusion
    matrix with the frames annotated Other left out; all 0 when no other frame is annotated."""
    confusion = np.asarray(confusion, dtype=np.float64)
    basic = [k for k in range(NUM_CLASSES) if k != OTHER]
    rows = confusion[basic]  # truth: the 7 basic classes; predictions: any of the 8
    total = rows.sum()
    if not total:
        return 0.0, 0.0, 0.0
    tp = rows[:, basic].diagonal()
    denominator = rows.sum(axis=1) + rows[:, basic].sum(axis=0)  # (TP + FN) + (TP + FP)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2.0 * tp / denominator, 0.0)
    macro, acc = float(f1.mean()), float(tp.sum() / total)
    return macro, acc, ABAW2021_F1_WEIGHT * macro + ABAW2021_ACCURACY_WEIGHT * acc


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """float64 ``[8]``: F1 of each class in :data:`CLASSES` order."""
    return per_class_f1_from_confusion(confusion_matrix(y_true, y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of the 8 per-class F1 scores (the ABAW 2022+ metric)."""
    return float(per_class_f1(y_true, y_pred).mean())


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of annotated frames predicted correctly."""
    return accuracy_from_confusion(confusion_matrix(y_true, y_pred))


def abaw2021_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The ABAW 2020/2021 expression score over the 8 classes: 0.67 * macro-F1 + 0.33 * accuracy."""
    return score(y_true, y_pred).abaw2021_score


def abaw2021_score_7class(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The ABAW 2021 expression score as that track scored it, on its 7 classes (no Other): frames
    annotated Other are left out and a prediction of Other is a miss."""
    return seven_class_from_confusion(confusion_matrix(y_true, y_pred))[2]


@dataclass(frozen=True, eq=False)
class Scores:
    """Every metric of one set of frame predictions, all derived from one confusion matrix."""

    macro_f1: float  # mean F1 over the 8 classes
    accuracy: float  # fraction of annotated frames right
    abaw2021_score: float  # 0.67 * macro_f1 + 0.33 * accuracy, over the 8 classes
    per_class_f1: tuple[float, ...]  # F1 per class, CLASSES order
    confusion: np.ndarray  # int64 [8, 8], rows = truth, columns = prediction
    n_frames: int  # annotated frames scored (targets -1 excluded)
    abaw2021_score_7class: float = 0.0  # the same on the 2021 track's 7 classes (Other left out)

    @classmethod
    def from_confusion(cls, confusion: np.ndarray) -> "Scores":
        confusion = np.asarray(confusion, dtype=np.int64)
        f1 = per_class_f1_from_confusion(confusion)
        macro, acc = float(f1.mean()), accuracy_from_confusion(confusion)
        return cls(
            macro_f1=macro,
            accuracy=acc,
            abaw2021_score=ABAW2021_F1_WEIGHT * macro + ABAW2021_ACCURACY_WEIGHT * acc,
            per_class_f1=tuple(float(v) for v in f1),
            confusion=confusion,
            n_frames=int(confusion.sum()),
            abaw2021_score_7class=seven_class_from_confusion(confusion)[2],
        )

    def to_json(self) -> dict:
        """Plain JSON values; per-class F1 keyed by class name."""
        return {
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "abaw2021_score": self.abaw2021_score,
            "abaw2021_score_7class": self.abaw2021_score_7class,
            "per_class_f1": dict(zip(CLASSES, self.per_class_f1)),
            "n_frames": self.n_frames,
            "confusion": self.confusion.tolist(),
        }


def score(y_true: np.ndarray, y_pred: np.ndarray) -> Scores:
    """All metrics at once (one pass over the frames)."""
    return Scores.from_confusion(confusion_matrix(y_true, y_pred))


def argmax_labels(scores: np.ndarray) -> np.ndarray:
    """int8 [N] labels: the first highest-scoring class of each row of [N, 8] scores."""
    return scores.argmax(axis=1).astype(np.int8)
