"""The leakage guard of paper 003 (Jin et al., ABAW 2021, section 4.1) between the two tasks.

Aff-Wild2's AU and expression splits were drawn separately, so a clip of the AU validation split
can be in the expression training split and the reverse. A model trained on both tasks has then
seen that clip's faces with the other task's labels, and its validation score on the clip is not
a fair one. The paper "remove[s] this part of the images that appear in the expression training
set when validating the AU metric ... The corresponding operation is also performed when
verifying the expression metrics." :func:`guard_leakage` finds those clips and, unless the guard
is ``off``, marks them ``exclude_from: ["au_val"]`` / ``["expr_val"]`` so that every validation
score leaves their frames out (:meth:`pipeline.data.manifest.Clip.scored_in`).

Modes (the paper speaks of images, i.e. the same clip; the ``video`` mode is this project's
choice for audio models: the two sides of a two-person video share one audio track):

* ``clip`` (default, the paper): the same clip id in one task's validation split and the other
  task's training split;
* ``video``: the same source video (``video_id``), so ``x_left`` in expression training also
  excludes ``x_right`` from AU validation;
* ``off``: the clips are still found and listed in the report, but nothing is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

from pipeline.data.labels import UNLABELED
from pipeline.data.manifest import Clip

GUARDS: tuple[str, ...] = ("clip", "video", "off")
DEFAULT_GUARD = "clip"


@dataclass
class Leakage:
    """What the guard found: validation clips of one task in the other task's training split."""

    guard: str  # the mode it ran in
    au_val_in_expr_train: list[str] = field(default_factory=list)  # AU val clips, sorted
    expr_val_in_au_train: list[str] = field(default_factory=list)  # expression val clips, sorted
    excluded_frames: dict[str, int] = field(default_factory=dict)  # "au_val"/"expr_val" -> labelled
    #                                                                frames left out of that score

    @property
    def excluding(self) -> bool:
        return self.guard != "off"

    def to_json(self) -> dict:
        return {
            "guard": self.guard,
            "au_val_in_expr_train": self.au_val_in_expr_train,
            "expr_val_in_au_train": self.expr_val_in_au_train,
            "excluded_clips": {"au_val": len(self.au_val_in_expr_train) if self.excluding else 0,
                               "expr_val": len(self.expr_val_in_au_train) if self.excluding else 0},
            "excluded_frames": dict(self.excluded_frames),
        }


def _labelled_frames(clip: Clip, task: str) -> int:
    if task == "au":
        return 0 if clip.au_labels is None else int((clip.au_labels[:, 0] != UNLABELED).sum())
    return 0 if clip.labels is None else int((clip.labels != UNLABELED).sum())


def guard_leakage(clips: Iterable[Clip], guard: str = DEFAULT_GUARD) -> tuple[list[Clip], Leakage]:
    """The clips with ``exclude_from`` set by the guard (in the same order), and what it found.

    ``clips`` must be every clip of the dataset (both tasks, all splits): a leak is only visible
    beside the other task's training split. Flags set by an earlier run are replaced.
    """
    if guard not in GUARDS:
        raise ValueError(f"leakage guard {guard!r}: want one of {', '.join(GUARDS)}")
    clips = list(clips)

    def key(clip: Clip) -> str:
        return clip.video_id if guard == "video" else clip.clip_id

    train = {task: {key(c) for c in clips if c.task_split(task) == "train"}
             for task in ("expr", "au")}
    leakage = Leakage(guard, excluded_frames={"au_val": 0, "expr_val": 0})
    guarded = []
    for clip in clips:
        flags = []
        for task, other, found in (("au", "expr", leakage.au_val_in_expr_train),
                                   ("expr", "au", leakage.expr_val_in_au_train)):
            if clip.task_split(task) == "val" and key(clip) in train[other]:
                found.append(clip.clip_id)
                if leakage.excluding:
                    flags.append(f"{task}_val")
                    leakage.excluded_frames[f"{task}_val"] += _labelled_frames(clip, task)
        guarded.append(replace(clip, exclude_from=tuple(sorted(flags))))
    leakage.au_val_in_expr_train.sort()
    leakage.expr_val_in_au_train.sort()
    return guarded, leakage
