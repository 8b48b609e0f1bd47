"""Stage three's action units: score the AU outputs of multi-task runs, with per-AU thresholds
cross-fitted like every other tuned choice, and predict the test clips' AUs.

A multi-task run lists its AU outputs in its record's ``au_outputs`` and writes
``predictions/<split>/au.npz`` (float32 ``[T, 12]`` per clip). For the AU validation split (the
clips with AU labels there, as the leakage guard leaves them: ``Clip.scoring_labels("au")``)
:func:`au_rows` scores:

* each AU member as written, at threshold 0.5;
* with two or more members, their mean (soft voting; nothing tuned) at 0.5;
* the final one (the mean, or the only member) with one threshold per AU
  (:func:`~pipeline.metrics.au.fit_au_thresholds`, objective mean F1), fitted by the
  expression ensemble's protocol: ``val-crossfit`` (the same folds of whole videos,
  :func:`~pipeline.scoring.crossfit.assign_folds`; each fold's frames decided by thresholds
  fitted on the other folds), ``train`` (fitted on the training split's AU predictions, when
  the runs wrote them) or ``same`` (fitted on the scored frames: optimistic, labelled so).

The test clips' decisions use thresholds fitted on all of the tuning split. Memory holds one
split's AU probabilities per member (12 values a frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.data.frames import clips_frames
from pipeline.data.labels import NUM_AUS
from pipeline.data.manifest import SPLITS, Clip, load_clips, task_clips
from pipeline.errors import PipelineError
from pipeline.metrics.au import AUScores, au_counts, binarize, fit_au_thresholds
from pipeline.scoring.crossfit import assign_folds
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.frames import Member, task_values
from pipeline.scoring.submission import check_au_submission, write_au_submission

MEAN = "mean"  # the row name of the members' mean


@dataclass(eq=False)
class AUData:
    """The AU probabilities of one split's clips, concatenated (the fields assign_folds reads)."""

    clip_ids: tuple[str, ...]
    groups: tuple[str, ...]  # video id of each clip (folds keep a video whole)
    offsets: np.ndarray  # int64 [n_clips + 1]
    probs: np.ndarray  # float32 [n_members, n_frames, 12]
    labels: np.ndarray | None  # int8 [n_frames, 12] as scores see them; None for test clips

    def frames(self, clip_indices: Sequence[int]) -> np.ndarray:
        return clips_frames(self.offsets, clip_indices)


def load_au(members: Sequence[Member], clips: Sequence[Clip], split: str, labelled: bool
            ) -> AUData:
    """Read every AU member's ``split`` predictions for ``clips``, checking each clip."""
    offsets, probs = task_values(
        members, clips, split, "AU", NUM_AUS,
        lambda a: bool(np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()),
        "AU probabilities outside [0, 1]")
    labels = None
    if labelled:
        labels = (np.concatenate([c.scoring_labels("au") for c in clips]).astype(np.int8)
                  if clips else np.zeros((0, NUM_AUS), np.int8))
    return AUData(tuple(c.clip_id for c in clips), tuple(c.video_id for c in clips), offsets,
                  probs, labels)


@dataclass
class AURow:
    """One line of the AU table."""

    name: str  # a member, "mean", or either with "+thresholds"
    tuned: bool  # thresholds fitted (on other frames, unless the protocol is "same")
    scores: AUScores

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tuned": self.tuned, **self.scores.to_json()}


@dataclass
class AUOutcome:
    """AU scores of the scored split, the threshold fits, and the test fit's thresholds."""

    split: str
    members: list[str]
    rows: list[AURow]  # the last row is the final one
    folds: list[dict[str, Any]]  # per fit: fold, tuning clips, scored clips, thresholds
    thresholds: np.ndarray  # [12] fitted on all of the tuning split (for the test clips)
    tuned_on_scored_frames: bool
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> AURow:
        return self.rows[-1]

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "members": self.members, "final": self.final.name,
                **self.final.scores.to_json(), "rows": [r.to_json() for r in self.rows],
                "tuning": {"objective": "f1", "tuned_on_scored_frames":
                           self.tuned_on_scored_frames, "fits": self.folds},
                "notes": self.notes}


def combined(data: AUData) -> np.ndarray:
    """float32 [n_frames, 12]: the members' mean (the only member's own probabilities)."""
    return data.probs.mean(axis=0) if len(data.probs) > 1 else data.probs[0]


def au_rows(scored: AUData, names: Sequence[str], config: EnsembleConfig,
            tuning: AUData | None = None) -> AUOutcome:
    """Score every AU member, their mean, and the final one with fitted thresholds."""
    if scored.labels is None:
        raise PipelineError(f"split {config.split} has no AU labels to score against")
    labels = scored.labels
    rows = [AURow(name, False, _score(labels, scored.probs[m])) for m, name in enumerate(names)]
    final_name = names[0] if len(names) == 1 else MEAN
    probs = combined(scored)
    if len(names) > 1:
        rows.append(AURow(MEAN, False, _score(labels, probs)))
    notes: list[str] = []
    plan: list[tuple[int | None, list[int], list[int]]] = []  # (fold, tune clips, scored clips)
    all_clips = list(range(len(scored.clip_ids)))
    if config.tune_on == "val-crossfit":
        if len(set(scored.groups)) < 2:
            notes.append("AU thresholds not tuned: cross-fitting needs 2 or more videos")
        else:
            folds = assign_folds(scored, config.folds)
            plan = [(int(f), [c for c in all_clips if folds[c] != f],
                     [c for c in all_clips if folds[c] == f]) for f in range(int(folds.max()) + 1)]
    elif config.tune_on == "same":
        plan = [(None, all_clips, all_clips)]
    elif tuning is None:
        notes.append("AU thresholds not tuned: the runs wrote no train AU predictions")
    fits: list[dict[str, Any]] = []
    if config.tune_on == "train" and tuning is not None:
        thresholds = fit_au_thresholds(tuning.labels, combined(tuning))
        fits.append(_fit_record(None, tuning, list(range(len(tuning.clip_ids))), scored,
                                all_clips, thresholds, "train"))
        rows.append(AURow(f"{final_name}+thresholds", True,
                          _score(labels, probs, thresholds)))
    elif plan:
        decided = np.zeros_like(labels)
        for fold, tune_clips, scored_clips in plan:
            tune_rows, score_rows = scored.frames(tune_clips), scored.frames(scored_clips)
            thresholds = fit_au_thresholds(labels[tune_rows], probs[tune_rows])
            decided[score_rows] = binarize(probs[score_rows], thresholds)
            fits.append(_fit_record(fold, scored, tune_clips, scored, scored_clips, thresholds,
                                    config.split))
        thresholds = fit_au_thresholds(labels, probs)  # all of the tuning split: the test fit
        counts = au_counts(labels, decided)
        n = int((labels != -1).any(axis=1).sum())
        rows.append(AURow(f"{final_name}+thresholds", True,
                          AUScores.from_counts(counts, n, thresholds)))
    else:
        thresholds = np.full(NUM_AUS, 0.5)
    return AUOutcome(config.split, list(names), rows, fits, np.asarray(thresholds),
                     config.tune_on == "same" and bool(plan), notes)


def _score(labels: np.ndarray, probs: np.ndarray, thresholds: Any = 0.5) -> AUScores:
    counts = au_counts(labels, probs, thresholds)
    return AUScores.from_counts(counts, int((labels != -1).any(axis=1).sum()), thresholds)


def _fit_record(fold: int | None, tuned: AUData, tune_clips: list[int], scored: AUData,
                scored_clips: list[int], thresholds: np.ndarray, split: str) -> dict[str, Any]:
    return {"fold": fold, "tuning_split": split,
            "tuning_clips": [tuned.clip_ids[c] for c in tune_clips],
            "scored_clips": [scored.clip_ids[c] for c in scored_clips],
            "thresholds": [float(t) for t in thresholds]}


def decide_clips(data: AUData, thresholds: np.ndarray) -> list[np.ndarray]:
    """int8 [T, 12] decisions of each clip of ``data`` (the members' mean, the thresholds)."""
    decided = binarize(combined(data), thresholds)
    return [decided[data.offsets[c]:data.offsets[c + 1]] for c in range(len(data.clip_ids))]


def action_units(run_dirs: Sequence[Path], runs: Sequence[Any], manifests: Path,
                  config: EnsembleConfig, out: Path
                  ) -> tuple[AUOutcome | None, Path | None, str]:
    """Score the runs' AU outputs on the AU split and write ``submission_au.txt`` into ``out``
    (the staging folder) for the test clips; (None, None, why) when no run has AU predictions
    for the scored split (the staged move then removes a stale ``submission_au.txt``)."""
    path = out / "submission_au.txt"
    members = [Member(Path(run_dir), output) for run_dir, run in zip(run_dirs, runs)
               for output in run.record.au_outputs]
    members = [m for m in members if m.path(config.split).exists()]
    clips = load_clips(manifests, SPLITS, au_only=True) if members else []
    # The clips the leakage guard left out of AU scores hold no scored frame: not in any fold.
    scored_clips = [c for c in clips if c.scored_in("au", config.split)]
    if not scored_clips:
        path.unlink(missing_ok=True)
        why = "no AU outputs" if not members else f"no AU {config.split} clips"
        return None, None, why
    names = [m.name for m in members]
    scored = load_au(members, scored_clips, config.split, labelled=True)
    tuning = None
    if config.tune_on == "train" and all(m.path("train").exists() for m in members):
        tuning = load_au(members, task_clips(clips, "au", "train"), "train", labelled=True)
    outcome = au_rows(scored, names, config, tuning)
    test_clips = [c for c in clips if c.split == "test"]
    missing = [m.name for m in members if not m.path("test").exists()]
    if not test_clips or missing:
        path.unlink(missing_ok=True)
        return outcome, None, ("no test clips" if not test_clips
                               else f"no test AU predictions for {', '.join(missing)}")

    def rows():  # clip by clip: memory does not grow with the test set
        for clip in test_clips:
            yield clip, decide_clips(load_au(members, [clip], "test", labelled=False),
                                     outcome.thresholds)[0]

    count = write_au_submission(path, rows())
    problems = check_au_submission(path, test_clips)
    if problems:  # the writer and the checker disagree: a bug, not a user error
        raise AssertionError(f"{path}: written AU submission fails its check: {problems[0]}")
    return outcome, path, f"{count} rows for {len(test_clips)} test clips"
