"""Clip-level partitions of labelled clips: k folds, the dev slice, bootstrap resamples.

Every partition here moves **whole videos**: clips are grouped by ``Clip.video_id``, so the
``_left``/``_right`` clips of a two-person video (which share the video's frames and audio) always
land on the same side. Three users share it:

* :func:`assign_folds`: ``fer-pipeline cv``'s k folds over all labelled clips;
* :func:`dev_slice`: the held-out training clips a head selects its epoch and its own parameters
  on (``train.select_on = "dev"``, the default; see :mod:`pipeline.fusion.train`);
  :func:`dev_slice_of_videos` extends one drawn from a part of the clips (a multi-task run's
  expression training clips) to every clip of its videos;
* :func:`bootstrap`: the training clips of one bagging member (``bag.k``; see ``stages/fuse.py``);
* :class:`SelectOn`: where a run selects (its dev slice or val).

**Stratification** (:func:`partition`). Each video has a profile: its labelled frames per class
and its total frames. Videos are visited in a seeded random order and each goes to the part that
it fills least, relative to that part's share of the totals: the mean over the video's classes,
weighted by the video's share of each class's frames, of ``(part's frames of c + video's) /
part's target of c`` (ties: the earlier part). Weighting by shares rather than frames lets a
video's few frames of a rare class count as much as they matter to that class. So every part
receives about its share of every class, as far as whole videos allow, and a rare class found in
few videos is spread over as many parts as it can be. A video without labelled frames is placed
by its frame count alone. No part is left empty: the last videos go to empty parts while any
remain. The seed changes the order, and so the partition; the same seed gives the same one.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

import numpy as np

from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError


class SelectOn(str, Enum):
    """Where a run selects its epoch and fitted choices: the choices of ``train.select_on``
    (``--select-on``): the training split's dev slice, or the validation split."""

    dev = "dev"
    val = "val"


SELECT_ON = tuple(s.value for s in SelectOn)
# What metrics.json's "selected_on" says for each choice (stage three's "fitted on" column).
SELECTED_ON = {"dev": "train-dev", "val": "val"}


def videos(clips: Sequence[Clip]) -> list[str]:
    """The distinct videos of ``clips``, sorted (the order partitions start from)."""
    return sorted({clip.video_id for clip in clips})


def _profiles(clips: Sequence[Clip], names: list[str]) -> np.ndarray:
    """float64 [n_videos, 9]: labelled frames per class, then all frames, per video."""
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(names), NUM_CLASSES + 1))
    for clip in clips:
        row = out[index[clip.video_id]]
        row[NUM_CLASSES] += clip.n_frames
        labels = None if clip.labels is None else clip.scoring_labels("expr")
        if labels is not None:
            labels = labels[labels != UNLABELED].astype(np.int64)
            row[:NUM_CLASSES] += np.bincount(labels, minlength=NUM_CLASSES)
    return out


def partition(clips: Sequence[Clip], shares: Sequence[float], seed: int) -> np.ndarray:
    """int64 [n_clips]: the part (index into ``shares``) of each clip, whole videos stratified
    by class (see the module docstring). Raises when there are fewer videos than parts."""
    shares = np.asarray(shares, dtype=np.float64)
    assert shares.ndim == 1 and (shares > 0).all(), shares
    names = videos(clips)
    if len(names) < len(shares):
        raise PipelineError(f"{len(names)} video(s) cannot be split into {len(shares)} parts "
                            "of whole videos")
    profiles = _profiles(clips, names)
    labelled = profiles[:, :NUM_CLASSES].sum(axis=1) > 0
    # A labelled video is placed by its classes; one without labels by its frame count.
    profiles[labelled, NUM_CLASSES] = 0.0
    totals = profiles.sum(axis=0)
    targets = shares[:, None] / shares.sum() * totals[None, :]
    filled = np.zeros_like(targets)
    part_of = np.full(len(names), -1, dtype=np.int64)
    for done, v in enumerate(np.random.default_rng(seed).permutation(len(names))):
        count = np.bincount(part_of[part_of >= 0], minlength=len(shares))
        share = np.divide(profiles[v], totals, out=np.zeros_like(totals), where=totals > 0)
        weights = share / share.sum() if share.sum() else None
        if (count == 0).sum() >= len(names) - done:  # as many videos left as empty parts
            part = int(np.flatnonzero(count == 0)[0])
        elif weights is None:  # an empty video (no frames): the part with the fewest videos
            part = int(np.argmin(count))
        else:
            used = weights > 0  # targets[:, used] > 0: the video itself counts in the totals
            ratio = (filled[:, used] + profiles[v, used]) / targets[:, used]
            part = int(np.argmin(ratio @ weights[used]))
        part_of[v] = part
        filled[part] += profiles[v]
    by_video = dict(zip(names, part_of))
    return np.array([by_video[clip.video_id] for clip in clips], dtype=np.int64)


def assign_folds(clips: Sequence[Clip], k: int, seed: int = 0) -> np.ndarray:
    """int64 [n_clips]: the fold (0..k-1) of each clip; whole videos, stratified by class."""
    if k < 2:
        raise PipelineError(f"cross-validation needs at least 2 folds, not {k}")
    return partition(clips, [1.0] * k, seed)


def dev_slice(clips: Sequence[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(clips that train, clips that select): about ``fraction`` of the training frames of each
    class held out in whole videos, seeded. Needs two training videos or more."""
    assert 0.0 < fraction < 1.0, fraction
    if len(videos(clips)) < 2:
        raise PipelineError(f"{len(videos(clips))} training video(s): a dev slice for selection "
                            "needs 2 or more (or select on val: train.select_on=val)")
    parts = partition(clips, [1.0 - fraction, fraction], seed)
    return ([c for c, p in zip(clips, parts) if p == 0],
            [c for c, p in zip(clips, parts) if p == 1])


def dev_slice_of_videos(clips: Sequence[Clip], drawn_from: Sequence[Clip], fraction: float,
                        seed: int) -> tuple[list[Clip], list[Clip]]:
    """(clips that train, clips that select) of ``clips``: the videos :func:`dev_slice` holds out
    of ``drawn_from`` (a part of ``clips``) are held out with all their clips in ``clips``; the
    clips of every other video train. A multi-task run draws from its expression training clips:
    it selects on the videos an expression-only run of the same manifests and seed selects on,
    and the AU- or VA-only clips of those videos are held out with them (no video on both
    sides). With ``drawn_from`` equal to ``clips`` it is :func:`dev_slice`."""
    held = set(videos(dev_slice(drawn_from, fraction, seed)[1]))
    return ([c for c in clips if c.video_id not in held],
            [c for c in clips if c.video_id in held])


def bootstrap(clips: Sequence[Clip], seed: int | Sequence[int]) -> list[Clip]:
    """A bootstrap resample of ``clips`` by whole videos: as many videos as there are, drawn with
    replacement; a video drawn twice appears twice (its clips train twice as often)."""
    names = videos(clips)
    by_video: dict[str, list[Clip]] = {name: [] for name in names}
    for clip in clips:
        by_video[clip.video_id].append(clip)
    draws = np.random.default_rng(seed).integers(len(names), size=len(names))
    return [clip for i in np.sort(draws) for clip in by_video[names[i]]]
