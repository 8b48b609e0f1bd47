"""Valence and arousal in a bundle: how ``predict`` combines the VA heads.

A bundle made from an ensemble folder whose ``scores.json`` has a ``va`` section records, as
``va_decisions``, what stage three fitted for the test clips (:mod:`pipeline.scoring.va_ensemble`):
each VA head's weight per dimension and the smoothing window per dimension. ``predict`` then
gives each video the values stage three's VA submission gives a test clip: the weighted mean of
the heads, smoothed within the video (:func:`combine_va`). A bundle without ``va_decisions`` (a
single run, an ensemble scored before VA smoothing existed, or a bundle written before) averages
its VA heads equally, unsmoothed, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.bundle.format import BundleError
from pipeline.data.labels import VA_NAMES
from pipeline.scoring.va_ensemble import weighted
from pipeline.scoring.va_smoothing import smooth_va


def va_decisions(scores: dict | None, va_heads: Sequence[str], source: Path | None
                 ) -> dict | None:
    """``{"weights": [[w_valence, w_arousal] per VA head], "smoothing": [n_valence,
    n_arousal]}`` from ``scores.json``'s ``va`` section (``source``: its folder), or None where
    there is none. Refuses a section whose members are not the bundle's VA heads."""
    va = (scores or {}).get("va")
    if not va_heads or not isinstance(va, dict) or "weights" not in va:
        return None
    where = f"{source / 'scores.json'}" if source else "scores.json"
    weights, smoothing = va["weights"], va.get("smoothing") or dict.fromkeys(VA_NAMES, 1)
    if not isinstance(weights, dict) or set(weights) != set(va_heads):
        raise BundleError(f"{where}: VA weights for {sorted(weights)}, but the runs' VA heads"
                          f" are {sorted(va_heads)}")
    record = {"weights": [[weights[h][n] for n in VA_NAMES] for h in va_heads],
              "smoothing": [smoothing.get(n) for n in VA_NAMES]}
    check_va_decisions(record, len(va_heads), where)
    return record


def check_va_decisions(record: dict, heads: int, where: str) -> None:
    """One-line refusal of ``va_decisions`` that are not ``heads`` pairs of weights in [0, 1]
    and two odd windows >= 1."""
    try:
        weights = np.asarray(record["weights"], dtype=np.float64)
        windows = [w for w in record["smoothing"] if isinstance(w, int) and w >= 1 and w % 2]
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{where}: va_decisions is not weights and smoothing windows") from None
    if weights.shape != (heads, len(VA_NAMES)) or not ((weights >= 0) & (weights <= 1)).all():
        raise BundleError(f"{where}: va_decisions weights {record['weights']}: want one pair in"
                          f" [0, 1] for each of the {heads} VA heads")
    if len(windows) != len(VA_NAMES) or len(record["smoothing"]) != len(VA_NAMES):
        raise BundleError(f"{where}: va_decisions smoothing {record['smoothing']}: want two odd"
                          " windows >= 1")


def combine_va(values: np.ndarray, decisions: dict | None) -> np.ndarray:
    """float32 ``[T, 2]``: one video's VA from its heads' values ``[H, T, 2]``: stage three's
    weights and smoothing (``decisions``), or the heads' equal mean without them."""
    if decisions is None:
        return np.mean(values, axis=0).astype(np.float32)
    combined = weighted(np.asarray(values, dtype=np.float32),
                        np.asarray(decisions["weights"], dtype=np.float64))
    return smooth_va(combined, np.array([0, combined.shape[0]]), decisions["smoothing"])
