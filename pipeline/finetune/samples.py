"""A fine-tune's labelled samples (which frames of which clips train, with what labels) and
their AU targets, shared by every backbone, the loop, the plan and predict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.data.labels import NUM_AUS, UNLABELED
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.training.losses import au_pos_weights


@dataclass
class Samples:
    """The labelled samples of a set of clips: row i is frame ``frame[i]`` of ``clips[clip[i]]``."""

    clips: list[Clip]
    clip: np.ndarray  # int64 [N]
    frame: np.ndarray  # int64 [N]
    label: np.ndarray  # int64 [N], 0..7

    def __len__(self) -> int:
        return len(self.label)


def labelled_samples(clips: Sequence[Clip], usable: Any, au: bool = False) -> Samples:
    """The usable frames with an expression label; with ``au`` instead those with an AU label
    of the AU training split (expression label -1: the AU task's samples, AU-only clips too)."""
    rows = []
    for i, clip in enumerate(clips):
        if au:
            labelled = (np.zeros(clip.n_frames, dtype=bool)
                        if clip.au_labels is None or clip.au_split != "train"
                        else (np.asarray(clip.au_labels) != UNLABELED).any(axis=1))
            labels = np.full(clip.n_frames, UNLABELED, dtype=np.int64)
            keep = labelled & usable(clip)
            frames = np.flatnonzero(keep)
            rows.append((np.full(len(frames), i), frames, labels[frames]))
            continue
        labels = clip.labels.astype(np.int64)
        keep = (labels != UNLABELED) & usable(clip)
        frames = np.flatnonzero(keep)
        rows.append((np.full(len(frames), i), frames, labels[frames]))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return Samples(list(clips), empty, empty, empty)
    return Samples(list(clips), *(np.concatenate(parts).astype(np.int64) for parts in zip(*rows)))


def au_targets(samples: Samples, i: int) -> np.ndarray:
    """int8 [12]: sample ``i``'s AU labels (-1: not annotated). Only AU labels of the AU training
    split count: a training clip whose AU labels come from the AU validation folder gives none."""
    clip = samples.clips[int(samples.clip[i])]
    if clip.au_labels is None or clip.au_split != "train":
        return np.full(NUM_AUS, UNLABELED, dtype=np.int8)
    return np.asarray(clip.au_labels[int(samples.frame[i])], dtype=np.int8)


def au_pos_weight(samples: Samples, where: str | Path) -> torch.Tensor:
    """Negatives / positives of each AU over ``samples``' frames (:func:`au_targets`), as the heads
    compute them (:func:`pipeline.training.losses.au_pos_weights`); refused when no frame has AU
    labels of the AU training split (``where``: the manifests, for the message)."""
    rows = np.stack([au_targets(samples, i) for i in range(len(samples))])
    if not (rows != UNLABELED).any():
        raise PipelineError(f"{where}: tasks [expr, au] but no training frame has AU labels of the"
                            " AU training split")
    counts = np.stack([(rows == 0).sum(axis=0), (rows == 1).sum(axis=0)], axis=1)
    return torch.tensor(au_pos_weights(counts), dtype=torch.float32)
