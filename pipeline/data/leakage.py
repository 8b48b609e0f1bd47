"""The leakage guard of paper 003 (Jin et al., ABAW 2021, section 4.1) between the tasks.

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

Valence-arousal is a third task with splits of its own: a clip in VA's validation split and the
expression or AU training split leaves the VA validation score (``va_val``), and a clip in VA's
training split and the expression or AU validation split leaves that score, the same way. The
report's VA lists (and the ``va_val`` counts) appear only for datasets with VA labels, so the
report of a dataset without VA is as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

from pipeline.data.labels import UNLABELED, VA_INVALID
from pipeline.data.manifest import Clip

GUARDS: tuple[str, ...] = ("clip", "video", "off")
DEFAULT_GUARD = "clip"
# (the task whose validation score a clip leaves, the task whose training split holds it)
PAIRS: tuple[tuple[str, str], ...] = (("au", "expr"), ("expr", "au"))
VA_PAIRS: tuple[tuple[str, str], ...] = (("va", "expr"), ("va", "au"), ("expr", "va"),
                                         ("au", "va"))


@dataclass
class Leakage:
    """What the guard found: validation clips of one task in another task's training split."""

    guard: str  # the mode it ran in
    au_val_in_expr_train: list[str] = field(default_factory=list)  # AU val clips, sorted
    expr_val_in_au_train: list[str] = field(default_factory=list)  # expression val clips, sorted
    excluded_frames: dict[str, int] = field(default_factory=dict)  # "au_val"/"expr_val" -> labelled
    #                                                                frames left out of that score
    # With VA labels in the dataset: "va_val_in_expr_train", "va_val_in_au_train",
    # "expr_val_in_va_train", "au_val_in_va_train" -> clips, sorted (None: no VA in the dataset,
    # and to_json is as before VA)
    va: dict[str, list[str]] | None = None
    excluded: dict[str, set[str]] = field(default_factory=dict)  # score -> clips left out of it

    @property
    def excluding(self) -> bool:
        return self.guard != "off"

    def found(self, task: str, other: str) -> list[str]:
        """The list of ``task`` validation clips found in ``other``'s training split."""
        name = f"{task}_val_in_{other}_train"
        return getattr(self, name) if (task, other) in PAIRS else self.va[name]

    def to_json(self) -> dict:
        scores = ("au_val", "expr_val", *(("va_val",) if self.va is not None else ()))
        return {
            "guard": self.guard,
            "au_val_in_expr_train": self.au_val_in_expr_train,
            "expr_val_in_au_train": self.expr_val_in_au_train,
            **(self.va or {}),
            "excluded_clips": {s: len(self.excluded.get(s, ())) if self.excluding else 0
                               for s in scores},
            "excluded_frames": dict(self.excluded_frames),
        }


def _labelled_frames(clip: Clip, task: str) -> int:
    if task == "au":
        return 0 if clip.au_labels is None else int((clip.au_labels[:, 0] != UNLABELED).sum())
    if task == "va":
        return 0 if clip.va_labels is None else int((clip.va_labels != VA_INVALID).all(axis=1)
                                                    .sum())
    return 0 if clip.labels is None else int((clip.labels != UNLABELED).sum())


def guard_leakage(clips: Iterable[Clip], guard: str = DEFAULT_GUARD) -> tuple[list[Clip], Leakage]:
    """The clips with ``exclude_from`` set by the guard (in the same order), and what it found.

    ``clips`` must be every clip of the dataset (every task, all splits): a leak is only visible
    beside the other task's training split. Flags set by an earlier run are replaced. A clip
    in the validation split of one task and the training split of another (EXPR, AU and, where
    the dataset has VA labels, VA: each pair, both ways) leaves that task's validation score.
    """
    if guard not in GUARDS:
        raise ValueError(f"leakage guard {guard!r}: want one of {', '.join(GUARDS)}")
    clips = list(clips)
    with_va = any(c.va_split is not None for c in clips)

    def key(clip: Clip) -> str:
        return clip.video_id if guard == "video" else clip.clip_id

    tasks = ("expr", "au", "va") if with_va else ("expr", "au")
    pairs = PAIRS + (VA_PAIRS if with_va else ())
    train = {task: {key(c) for c in clips if c.task_split(task) == "train"} for task in tasks}
    leakage = Leakage(guard, excluded_frames={f"{t}_val": 0 for t in ("au", "expr", *tasks[2:])},
                      va={f"{t}_val_in_{o}_train": [] for t, o in VA_PAIRS} if with_va else None)
    guarded = []
    for clip in clips:
        flags: list[str] = []
        for task, other in pairs:
            if clip.task_split(task) == "val" and key(clip) in train[other]:
                leakage.found(task, other).append(clip.clip_id)
                score = f"{task}_val"
                if leakage.excluding and score not in flags:
                    flags.append(score)
                    leakage.excluded.setdefault(score, set()).add(clip.clip_id)
                    leakage.excluded_frames[score] += _labelled_frames(clip, task)
        guarded.append(replace(clip, exclude_from=tuple(sorted(flags))))
    for task, other in pairs:
        leakage.found(task, other).sort()
    return guarded, leakage
