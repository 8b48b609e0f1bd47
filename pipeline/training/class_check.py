"""Refuse a training set of fewer than two classes; warn of a selection set blind to a class.

A classifier trained on one class predicts it everywhere and ``fuse``/``finetune`` would then
select an epoch at macro-F1 0.000 and exit 0. :func:`check_classes` refuses that in one line
unless the config allows it (``train.allow_single_class`` for ``fuse``, ``allow_single_class``
for ``finetune``), which then warns. A selection set (the dev slice, or val) holding no frame of
a class the training set has makes macro-F1 selection blind to that class: one warning line.
A run that selects by AUs or VA (``train.select_task``) on a dev slice drawn by expression videos
(:func:`pipeline.training.folds.dev_slice_of_videos`) may find few of that task's frames there:
:func:`check_task_frames` refuses a slice without any and warns of one holding under half its
share. Warnings go to the ``pipeline.training.class_check`` logger (printed on stderr by default).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, UNLABELED, VA_INVALID
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def classes_of(clips: Sequence[Clip]) -> list[int]:
    """The expression classes with at least one labelled frame in ``clips`` (sorted)."""
    seen: set[int] = set()
    for clip in clips:
        if clip.labels is not None:
            labels = np.asarray(clip.labels)
            seen.update(int(c) for c in np.unique(labels[labels != UNLABELED]))
    return sorted(seen)


def _names(classes: Sequence[int]) -> str:
    return ", ".join(CLASSES[c] if 0 <= c < len(CLASSES) else str(c) for c in classes) or "none"


def check_classes(train: Sequence[Clip], select: Sequence[Clip], where: str, allow: bool,
                  option: str, select_name: str = "dev slice") -> None:
    """Refuse (or with ``allow`` warn of) training labels of fewer than two classes; warn when
    ``select`` (the clips the epoch is selected on; empty: no check) lacks a training class.
    ``option`` is the setting that allows it, named in the message."""
    trained = classes_of(train)
    if len(trained) < 2:
        message = (f"{where}: the training labels hold {len(trained)} class(es) ({_names(trained)}); "
                   "a classifier needs two or more")
        if not allow:
            raise PipelineError(f"{message} (to train anyway: --set {option}=true)")
        log.warning("warning: %s; training anyway (%s)", message, option)
    if select:
        blind = sorted(set(trained) - set(classes_of(select)))
        if blind:
            log.warning("warning: %s: the %s holds no frame of %s, which the training clips have: "
                        "macro-F1 selection is blind to %s", where, select_name, _names(blind),
                        "it" if len(blind) == 1 else "them")


def task_frames(clips: Sequence[Clip], task: str) -> int:
    """The frames of ``clips`` labelled for ``task`` ("au": any AU annotated; "va": valence or
    arousal valid) whose clip is in that task's training split (a dev slice's labels)."""
    total = 0
    for clip in clips:
        labels = {"au": clip.au_labels, "va": clip.va_labels}[task]
        if labels is not None and clip.task_split(task) == "train":
            total += int((labels != (VA_INVALID if task == "va" else UNLABELED)).any(axis=1).sum())
    return total


def check_task_frames(train: Sequence[Clip], dev: Sequence[Clip], task: str, where: str,
                      fraction: float) -> None:
    """Refuse a dev slice without a frame of ``task`` (the task that selects: "au" or "va");
    warn when it holds less than half of ``fraction`` of the training split's frames of it."""
    # each clip once: a bagging member's training clips are a resample (a clip may repeat)
    unique = {id(c): c for c in [*train, *dev]}.values()
    held, total = task_frames(dev, task), task_frames(list(unique), task)
    name = task.upper()
    if held == 0:
        raise PipelineError(f"{where}: the dev slice (the expression dev videos) holds no {name} "
                            f"frame, and train.select_task={task} selects on it; select on val "
                            "(train.select_on=val) or draw another slice (train.dev_seed)")
    if held < 0.5 * fraction * total:
        log.warning("warning: %s: the dev slice (the expression dev videos) holds %d of the "
                    "training split's %d %s frames (%.1f%%, train.dev_fraction %g): selection by "
                    "%s rests on them", where, held, total, name, 100.0 * held / total, fraction,
                    task)
