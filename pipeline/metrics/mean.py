"""The mean of members' probabilities: stage three's weighted mean and a bag's soft vote.

Both stages form it (a bag in ``fuse --bag``, every weighted combiner in ``ensemble``), and a bag's
predictions must be exactly the mean stage three would form, so there is one function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def combine(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """float32 [N, 8] = sum_i w_i P_i / sum_i w_i over members with a non-zero weight."""
    weights = np.asarray(weights, dtype=np.float64)
    assert weights.shape == (len(probs),) and (weights >= 0).all() and weights.sum() > 0, weights
    total = None
    for w, p in zip(weights, probs):
        if w > 0:
            term = p * np.float32(w / weights.sum())
            total = term if total is None else total + term
    return total


def soft_vote(probs: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [N, 8]: the mean of the members' probabilities (what a bag writes)."""
    return combine(np.asarray(probs), [1.0] * len(probs))
