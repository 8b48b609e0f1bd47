"""The ensemble's final per-frame probabilities, written beside its scores for ``export``.

Every clip of the scored split is predicted by the fit that scored it (its cross-fitting fold;
the single fit of the other protocols), with that fit's applied steps
(:func:`pipeline.scoring.fitting.predict_probs`): the numbers behind ``scores.json``. They go to
``OUT/final_<split>.npz`` (the run's npz layout: a ``[T, 8]`` array per clip and
``__classes__``) with ``OUT/face_mask_<split>.npz``, which ``fer-pipeline export OUT`` reads.
The test clips' (the fit on all of the tuning split, the one behind ``submission.txt``) are
written the same way, as ``final_test.npz``, by :mod:`stages.ensemble` while it writes the
submission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipeline.scoring.fitting import predict_probs
from pipeline.scoring.frames import SplitData
from pipeline.runs.predictions import FaceMaskWriter, PredictionWriter

FINAL = "final"  # the output name an ensemble directory exports


def final_path(out: str | Path, split: str) -> Path:
    return Path(out) / f"{FINAL}_{split}.npz"


def final_face_path(out: str | Path, split: str) -> Path:
    return Path(out) / f"face_mask_{split}.npz"


def write_final_probs(scored: SplitData, folds: Sequence, split: str, out: str | Path) -> Path:
    """Write the scored split's final probabilities (``folds``: the cross-fit's fold records,
    each with ``scored_clips`` and ``fit.applied``) and its face mask into ``out``."""
    index = {clip_id: c for c, clip_id in enumerate(scored.clip_ids)}
    fitted = {}
    for record in folds:
        for clip_id in record.scored_clips:
            fitted[clip_id] = record.fit.applied
    with PredictionWriter(final_path(out, split)) as probs, \
            FaceMaskWriter(final_face_path(out, split)) as faces:
        for clip_id in scored.clip_ids:
            clip = scored.subset([index[clip_id]])
            probs.add(clip_id, predict_probs(clip, fitted[clip_id]))
            faces.add(clip_id, clip.face)
    return final_path(out, split)
