"""Refuse a training set of fewer than two classes; warn of a selection set blind to a class.

A classifier trained on one class predicts it everywhere and ``fuse``/``finetune`` would then
select an epoch at macro-F1 0.000 and exit 0. :func:`check_classes` refuses that in one line
unless the config allows it (``train.allow_single_class`` for ``fuse``, ``allow_single_class``
for ``finetune``), which then warns. A selection set (the dev slice, or val) holding no frame of
a class the training set has makes macro-F1 selection blind to that class: one warning line.
Warnings go to the ``pipeline.training.class_check`` logger (printed on stderr by default).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, UNLABELED
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
