"""What stage three reads before it combines anything, and the one-file scorer.

:func:`find_members` finds each run directory's outputs with predictions for a split;
:func:`clips_by_split` reads the manifests' clips; :func:`check_manifests` refuses runs trained
on other manifests than each other's or the ones given (each against the fingerprint of the clips
its own tasks read). :func:`score_predictions` (``fer-pipeline score``) scores one predictions
file, or every output of a run directory, against a split's labels without ensembling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import SPLITS, Clip, load_clips
from pipeline.data.task_splits import labels_fingerprint
from pipeline.errors import PipelineError
from pipeline.metrics.scores import Scores, confusion_matrix
from pipeline.runs.predictions import Predictions
from pipeline.runs.record import RunInfo, read_run
from pipeline.scoring.frames import Member, check_clip_set, clip_probs


def find_members(run_dirs: Sequence[Path], split: str) -> tuple[list[Member], list[RunInfo]]:
    """Every output of every run that has predictions for ``split``; names must be unique."""
    members, runs, seen = [], [], {}
    for run_dir in map(Path, run_dirs):
        run = read_run(run_dir)
        if run.name in seen:
            raise PipelineError(f"{run_dir}: same directory name as {seen[run.name]}; member names"
                                " <run>/<output> would clash (rename one)")
        seen[run.name] = run_dir
        runs.append(run)
        found = [Member(run_dir, output) for output in run.record.outputs
                 if Member(run_dir, output).path(split).exists()]
        if not found:
            raise PipelineError(f"{run_dir}: no {split} predictions (looked for"
                                f" predictions/{split}/<output>.npz for outputs"
                                f" {', '.join(run.record.outputs)})")
        members += found
    if not members:
        raise PipelineError("no run directories given")
    return members, runs


def clips_by_split(manifests: Path) -> dict[str, list[Clip]]:
    """The manifests' clips of each expression split (every split a key); a one-line
    PipelineError when they cannot be read."""
    try:
        clips = load_clips(manifests, SPLITS)
    except (FileNotFoundError, ValueError) as e:
        raise PipelineError(str(e)) from None
    return {split: [c for c in clips if c.split == split] for split in SPLITS}


def check_manifests(runs: Sequence[RunInfo], run_dirs: Sequence[Path], manifests: Path) -> None:
    """Refuse runs trained on manifests other than each other's or ``manifests``. A run records
    the fingerprint of the clips its tasks read (:func:`labels_fingerprint`: a multi-task run
    reads the AU-only clips too), so each run is checked against that fingerprint of
    ``manifests`` for its own recorded tasks, and runs of different tasks are compared through
    it. Runs written before fingerprints were recorded are not checked."""
    known = [(run, Path(d), tuple(run.record.extra.get("tasks", ("expr",))))
             for run, d in zip(runs, run_dirs) if run.record.manifest_fingerprint is not None]
    for (run, path, tasks), (other, other_path, other_tasks) in zip(known, known[1:]):
        if tasks == other_tasks and (run.record.manifest_fingerprint
                                     != other.record.manifest_fingerprint):
            raise PipelineError(
                f"{path} and {other_path} were trained on different manifests (fingerprints"
                f" {run.record.manifest_fingerprint[:12]} and"
                f" {other.record.manifest_fingerprint[:12]}); pass --allow-manifest-mismatch"
                " to combine them anyway")
    if not known:
        return
    try:
        every = load_clips(manifests, SPLITS, au_only=True)
    except (FileNotFoundError, ValueError) as e:
        raise PipelineError(str(e)) from None
    expected: dict[tuple[str, ...], str] = {}
    for run, path, tasks in known:
        if tasks not in expected:
            expected[tasks] = labels_fingerprint(every, tasks)
        if run.record.manifest_fingerprint != expected[tasks]:
            raise PipelineError(
                f"{path} was trained on other manifests than {manifests} (fingerprints"
                f" {run.record.manifest_fingerprint[:12]} and {expected[tasks][:12]}); pass the"
                " manifests it was trained on, or --allow-manifest-mismatch")


def score_predictions(target: Path, manifests: Path, split: str | None = None
                      ) -> tuple[str, list[tuple[str, Scores]]]:
    """Score a predictions file (or every output of a run directory) against a split's labels.

    The split of a file ``.../predictions/<split>/<output>.npz`` is read from its path unless given;
    for a run directory it defaults to val. Returns the split and (name, scores) per file.
    """
    target = Path(target)
    if target.is_dir():
        split = split or "val"
        run = read_run(target)
        files = [(f"{run.name}/{o}", Member(target, o).path(split)) for o in run.record.outputs]
        files = [(name, path) for name, path in files if path.exists()]
        if not files:
            raise PipelineError(f"{target}: no {split} predictions")
    elif target.is_file():
        split = split or (target.parent.name if target.parent.name in SPLITS else "val")
        files = [(target.stem, target)]
    else:
        raise PipelineError(f"{target}: no such predictions file or run directory")
    clips = clips_by_split(Path(manifests))[split]
    if not clips:
        raise PipelineError(f"{manifests}: no {split} clips")
    if any(c.labels is None for c in clips):
        raise PipelineError(f"{manifests}: the {split} clips have no labels to score against")
    results = []
    for name, path in files:
        predictions = Predictions(path)
        check_clip_set(predictions, clips, split)
        total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        for clip in clips:  # clip by clip: memory does not grow with the split
            probs = clip_probs(predictions, clip, split)
            total += confusion_matrix(clip.labels, probs.argmax(axis=1))
        results.append((name, Scores.from_confusion(total)))
    return split, results
