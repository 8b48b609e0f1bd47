"""Which clips of a manifest directory a run with given tasks reads, and their fingerprint.

A clip is in a split of a run when it is in that split for one of the run's tasks (expressions,
AUs, valence-arousal; AU-only clips from ``au_only.jsonl`` only for AUs). ``fuse`` trains on
these clips and records their :func:`labels_fingerprint`; ``ensemble`` recomputes it from the
manifests it is given and the run's recorded tasks, so a multi-task run trained on the same
manifests is accepted and a run of other manifests refused. Kept in ``pipeline.data`` (no torch)
so stage three can use it without importing the training code.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.data.manifest import SPLITS, Clip, fingerprint


def in_split(clip: Clip, task: str, split: str) -> bool:
    """Whether ``clip`` is in ``split`` for ``task``; every test clip is in AU's test split (AU
    predictions of the test clips make the AU submission; the same for VA)."""
    return clip.task_split(task) == split or (task in ("au", "va") and split == "test"
                                                and clip.split == "test")


def run_splits(clips: Sequence[Clip], tasks: Sequence[str]) -> dict[str, list[Clip]]:
    """The clips of each split of a run with ``tasks``, in manifest order: a clip is in a split
    when it is there for one of the tasks (it may be in two: expression train and AU val)."""
    return {split: [c for c in clips if any(in_split(c, t, split) for t in tasks)]
            for split in SPLITS}


def labels_fingerprint(clips: Sequence[Clip], tasks: Sequence[str]) -> str:
    """The fingerprint a run with ``tasks`` on ``clips`` (a manifest directory's clips,
    ``au_only.jsonl`` included) records: :func:`pipeline.data.manifest.fingerprint` over the
    clips of each of its splits (a clip in two splits counts twice). The training run computes
    the same over its own splits: its dev slice is a part of the training split."""
    return fingerprint(c for split in run_splits(clips, tasks).values() for c in split)
