"""The demo's valence-arousal annotations (``VA_Estimation_Challenge``): valence follows the face's
cue (the pair), arousal the audio's (the member); see :mod:`pipeline.data.synthetic` for the
ceilings. Drawn from a generator of their own, so no other demo file changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VA_ANNOTATION_DIR = Path("annotations", "VA_Estimation_Challenge")
VA_PAIR_VALENCE = (-0.6, -0.2, 0.2, 0.6)  # the valence each pair (face cue) shows
VA_MEMBER_AROUSAL = (-0.4, 0.4)  # the arousal each member (audio cue) tells
SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}


def invalid_runs(rng: np.random.Generator, n: int) -> np.ndarray:
    """bool [n]: 1-3 runs of 2-8 frames marked invalid."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(2, 9))
        start = int(rng.integers(0, max(1, n - length)))
        mask[start:start + length] = True
    return mask


def va_labels(rng: np.random.Generator, pair: np.ndarray, member: np.ndarray) -> np.ndarray:
    """float64 ``[T, 2]``: valence from the pair, arousal from the member (3-frame moving mean,
    noise sd 0.05, clipped to [-1, 1]), and in half the clips 1-3 runs of 2-8 frames of -5."""
    clean = np.stack([np.asarray(VA_PAIR_VALENCE)[pair],
                      np.asarray(VA_MEMBER_AROUSAL)[member]], axis=1)
    padded = np.concatenate([clean[:1], clean, clean[-1:]])
    smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    values = np.clip(smooth + rng.normal(0, 0.05, smooth.shape), -1, 1)
    if rng.random() < 0.5:
        values[invalid_runs(rng, len(values))] = -5.0
    return values


def write_va(out: Path, split: str, name: str, values: np.ndarray) -> None:
    """``OUT/annotations/VA_Estimation_Challenge/<split folder>/<name>.txt``."""
    path = out / VA_ANNOTATION_DIR / SPLIT_DIRS[split] / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["-5,-5" if v == -5 else f"{v:.4f},{a:.4f}" for v, a in values.tolist()]
    path.write_text("\n".join(["valence,arousal", *rows]) + "\n", encoding="utf-8")
