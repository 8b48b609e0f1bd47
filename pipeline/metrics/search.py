"""The searches that tune stage three: combination weights and per-class biases, for macro-F1.

* :func:`proportional_search`: the rule of paper 004, ``(m P_A + n P_B) / (m + n)`` with integers
  ``0 < m, n <= max_weight``, grid-searched (each distinct ratio scored once);
* :func:`weight_search`: integer weights ``0..max_weight`` per member, searched exhaustively when
  the grid has at most ``EXHAUSTIVE_WEIGHT_GRID`` points (three members or fewer at the default
  5), otherwise by coordinate ascent from all-ones (each member's weight in turn set to its best
  value, sweeps until nothing changes);
* :func:`bias_search`: per-class log-probability offsets by coordinate ascent (each class's
  offset in turn set to its best value on a grid, holding the others; :func:`bias_sweep` finds
  that best value exactly for the whole grid from one cumulative count).

The weight searches score many weight vectors on the same frames through :class:`WeightScorer`,
which counts the frames where every member agrees once and re-scores only the others.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.metrics.scores import argmax_labels, confusion_matrix, macro_f1_from_confusion

# _LOWEST_BIT[code] = index of the lowest set bit of a byte: the first class reaching the maximum
_LOWEST_BIT = np.array([(code & -code).bit_length() - 1 if code else 0 for code in range(256)],
                       dtype=np.int8)
EVALUATOR_CHUNK = 32768  # frames per block: a block of every member stays in the CPU cache
EXHAUSTIVE_WEIGHT_GRID = 256  # larger weight grids are searched by coordinate ascent


def _first_argmax(scores: np.ndarray, maximum: np.ndarray, code: np.ndarray,
                  bits: np.ndarray) -> np.ndarray:
    """Index of the first maximum along axis 0 of a [8, n] block (numpy's argmax rule).

    Much faster than ``argmax(axis=1)`` on [n, 8]: every operation runs over contiguous rows.
    ``maximum``, ``code`` and ``bits`` are scratch buffers of length n.
    """
    np.max(scores, axis=0, out=maximum)
    code[:] = 0
    for c in range(len(scores)):
        np.equal(scores[c], maximum, out=bits.view(bool))
        np.left_shift(bits, c, out=bits)
        np.bitwise_or(code, bits, out=code)
    return _LOWEST_BIT[code]


class WeightScorer:
    """Confusion matrices of argmax(sum_i w_i P_i) on fixed labelled frames, for many weights.

    Where every member's argmax is the same class c, any non-negative weights (not all zero) also
    give c, so those frames are counted once and only the disagreeing ones are re-scored. Those
    are kept class-major ([member, 8, frames]) in cache-sized blocks, and each block is scored for
    every weight vector before moving on.
    """

    def __init__(self, probs: Sequence[np.ndarray], labels: np.ndarray) -> None:
        preds = [p.argmax(axis=1) for p in probs]
        agree = np.ones(len(labels), dtype=bool)
        for p in preds[1:]:
            agree &= p == preds[0]
        self.fixed = confusion_matrix(labels[agree], preds[0][agree])
        rest = np.flatnonzero(~agree)
        self.blocks = []
        for start in range(0, len(rest), EVALUATOR_CHUNK):
            index = rest[start:start + EVALUATOR_CHUNK]
            block = np.stack([p[index].T for p in probs]).astype(np.float32)
            self.blocks.append((block, labels[index].astype(np.intp) * NUM_CLASSES))

    def confusions(self, weights: Sequence[Sequence[float]]) -> np.ndarray:
        """int64 [n_vectors, 8, 8]: one confusion matrix per weight vector."""
        weights = np.asarray(weights, dtype=np.float32).reshape(len(weights), -1)
        assert (weights >= 0).all() and (weights.sum(axis=1) > 0).all(), weights
        counts = np.zeros((len(weights), NUM_CLASSES * NUM_CLASSES), dtype=np.int64)
        for block, truth in self.blocks:
            n = block.shape[2]
            total, term = np.empty((2, NUM_CLASSES, n), dtype=np.float32)
            maximum = np.empty(n, dtype=np.float32)
            code, bits = np.empty((2, n), dtype=np.uint8)
            for v, vector in enumerate(weights):
                used = np.flatnonzero(vector)
                np.multiply(block[used[0]], vector[used[0]], out=total)
                for i in used[1:]:
                    np.multiply(block[i], vector[i], out=term)
                    total += term
                predicted = _first_argmax(total, maximum, code, bits)
                counts[v] += np.bincount(truth + predicted, minlength=NUM_CLASSES * NUM_CLASSES)
        return counts.reshape(-1, NUM_CLASSES, NUM_CLASSES) + self.fixed

    def macro_f1s(self, weights: Sequence[Sequence[float]]) -> np.ndarray:
        return np.atleast_1d(macro_f1_from_confusion(self.confusions(weights)))

    def macro_f1(self, weights: Sequence[float]) -> float:
        return float(self.macro_f1s([weights])[0])


@dataclass(frozen=True)
class ProportionalFit:
    """The best (m, n) of the rule (m P_A + n P_B) / (m + n) and the whole grid of scores."""

    m: int  # weight of the first member
    n: int  # weight of the second member
    grid: np.ndarray  # float64 [max_weight, max_weight]: macro-F1 at m = row + 1, n = column + 1


def proportional_search(first: np.ndarray, second: np.ndarray, labels: np.ndarray,
                        max_weight: int = 5) -> ProportionalFit:
    """Grid-search integer 0 < m, n <= max_weight for macro-F1 on the labelled frames.

    Pairs with the same ratio (1:1, 2:2, ...) give the same argmax, so each ratio is scored once.
    Ties go to the first pair in (m, n) order.
    """
    keep = labels != UNLABELED
    evaluator = WeightScorer([first[keep], second[keep]], labels[keep])
    pairs = list(itertools.product(range(1, max_weight + 1), repeat=2))
    ratios = sorted({(m // math.gcd(m, n), n // math.gcd(m, n)) for m, n in pairs})
    by_ratio = dict(zip(ratios, evaluator.macro_f1s(ratios)))
    grid = np.array([by_ratio[(m // math.gcd(m, n), n // math.gcd(m, n))] for m, n in pairs])
    grid = grid.reshape(max_weight, max_weight)
    best = int(np.argmax(grid))  # first maximum in (m, n) order
    return ProportionalFit(best // max_weight + 1, best % max_weight + 1, grid)


def weight_search(evaluator: WeightScorer, n_members: int, max_weight: int = 5) -> tuple[int, ...]:
    """Integer weights 0..max_weight per member with the best macro-F1 (see the module docstring)."""
    if (max_weight + 1) ** n_members <= EXHAUSTIVE_WEIGHT_GRID:
        # all zero, or a multiple of a vector already in the grid, is skipped
        grid = [w for w in itertools.product(range(max_weight + 1), repeat=n_members)
                if math.gcd(*w) == 1]
        return grid[int(np.argmax(evaluator.macro_f1s(grid)))]  # first of the best
    weights = (1,) * n_members
    best_score = evaluator.macro_f1(weights)
    changed = True
    while changed:
        changed = False
        for i in range(n_members):
            trials = [weights[:i] + (v,) + weights[i + 1:] for v in range(max_weight + 1)]
            trials = [t for t in trials if t != weights and any(t)]
            scores = evaluator.macro_f1s(trials)
            if scores.max() > best_score:
                weights, best_score, changed = trials[int(np.argmax(scores))], scores.max(), True
    return weights


def bias_search(log_probs: np.ndarray, labels: np.ndarray, grid: np.ndarray,
                rounds: int = 3) -> np.ndarray:
    """Per-class offsets b (float64 [8]) maximising macro-F1 of argmax(log_probs + b).

    Coordinate ascent from b = 0 over ``rounds`` sweeps of the 8 classes (stopping early when a
    sweep changes nothing); :func:`bias_sweep` scores every grid value of one class at once. A
    class's offset moves only on a strict gain; ties go to the value nearest the current one
    (so no evidence, no offset).
    """
    keep = labels != UNLABELED
    class_major = np.ascontiguousarray(log_probs[keep].T, dtype=np.float64)
    labels = labels[keep].astype(np.intp)
    bias = np.zeros(NUM_CLASSES)
    if len(labels) == 0:
        return bias
    current = macro_f1_from_confusion(confusion_matrix(labels, argmax_labels(log_probs[keep] + bias)))
    for _ in range(rounds):
        moved = False
        for c in range(NUM_CLASSES):
            scores = bias_sweep(class_major, labels, bias, c, grid)
            best = scores.max()
            if best <= current + 1e-12:
                continue
            candidates = np.flatnonzero(scores >= best - 1e-12)
            choice = candidates[np.argmin(np.abs(grid[candidates] - bias[c]))]
            bias[c], current, moved = grid[choice], best, True
        if not moved:
            break
    return bias


def bias_sweep(class_major: np.ndarray, labels: np.ndarray, bias: np.ndarray, c: int,
               grid: np.ndarray) -> np.ndarray:
    """Macro-F1 of argmax(L + bias) with bias[c] set to each grid value (float64 [g]).

    ``class_major`` is L transposed, [8, n]; ``labels`` are all annotated. With the other offsets
    fixed, frame t is predicted c iff bias[c] > d_t = max_{j != c}(L_tj + b_j) - L_tc, else its
    best other class; binning d_t on the grid and accumulating counts gives the confusion matrix
    at every grid value at once. Exact except where two classes tie exactly.
    """
    k, g, n = NUM_CLASSES, len(grid), len(labels)
    others = class_major + bias[:, None]
    others[c] = -np.inf
    best_other = np.empty(n)
    alternative = _first_argmax(others, best_other, *np.empty((2, n), dtype=np.uint8))
    threshold = best_other - class_major[c]
    # at grid[i] a frame is predicted c iff grid[i] > threshold, i.e. iff its bin <= i
    bins = np.searchsorted(grid, threshold, side="right")
    counts = np.bincount((bins * k + labels) * k + alternative,
                         minlength=(g + 1) * k * k).reshape(g + 1, k, k)
    moved = np.cumsum(counts, axis=0)[:g]  # [g, truth, alternative]: frames that move to c
    confusions = counts.sum(axis=0)[None] - moved
    confusions[:, :, c] += moved.sum(axis=2)
    return macro_f1_from_confusion(confusions)
