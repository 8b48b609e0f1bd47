"""Paper 001's soft-voting bagging: K members of one head, each on a bootstrap of the training videos.

``bag.k = K`` (``fuse --bag K``): ``OUT/<name>/members/<i>/`` holds K normal run directories of
the same head, member i with its own seed (:func:`pipeline.fusion.config.member_seed` of the run's seed, ``bag.seed`` and i) for
its weights, its sampling and its training clips: a bootstrap resample of the training videos
(whole videos, drawn with replacement; the paper does not say how its variants differ, this is
bagging's definition), the dev slice excluded: every member selects its epoch on the same dev
slice as a single run would. The bag's own ``predictions/<split>/<output>.npz`` are the mean of
its members' probabilities (:func:`pipeline.metrics.mean.soft_vote`), with the members' face masks, so stage three
treats a bag as one member; its ``metrics.json`` (written last) lists the members and their
scores. A killed bag resumes member by member (a finished member is not retrained, an interrupted
one continues from its last epoch); raising ``bag.k`` adds members and re-averages.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.config import read_toml, save_toml, to_dict
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import BagConfig, FuseConfig, member_seed
from pipeline.training.folds import SELECTED_ON
from pipeline.fusion.rundir import FACE_RULE, RunDir, differences, with_new_options
from pipeline.fusion.train import RunResult, train
from pipeline.fusion.run_setup import run_splits
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.metrics.mean import soft_vote
from pipeline.metrics.scores import Scores, confusion_matrix
from pipeline.runs.record import RunRecord
from pipeline.runs.predictions import (
    FaceMaskWriter,
    PredictionWriter,
    Predictions,
    face_mask_path,
    prediction_path,
)

# Config keys a bag may change and still reuse its members: more members, more epochs, the cache.
_BAG_FREE = ("bag.k", "train.epochs", "train.cache_mb")


def member_config(config: FuseConfig, i: int) -> FuseConfig:
    """Member ``i``'s own config: its seed, and ``bag.member = i`` (a bootstrap resample)."""
    return dataclasses.replace(config, seed=member_seed(config.seed, config.bag.seed, i),
                               bag=BagConfig(k=0, seed=config.bag.seed, member=i))


def fuse_bag(config: FuseConfig, run_dir: Path, clips: Sequence[Clip], store: FeatureStore,
             progress: ProgressFn = silent, restart: bool = False, force: bool = False
             ) -> RunResult:
    """Train (or resume) the bag's members one after another, then write the averaged run."""
    bag = RunDir(run_dir)
    if restart and run_dir.is_dir():
        for member in sorted((run_dir / "members").glob("*")):
            RunDir(member).clear()
        bag.clear()
    if bag.config.exists() and not force:
        changed = [key for key in differences(with_new_options(read_toml(bag.config)),
                                                 to_dict(config))
                   if key not in _BAG_FREE]
        if changed:
            raise PipelineError(f"{run_dir}: an existing bag has another config "
                                f"({', '.join(changed)} differ); use --restart to discard it, "
                                "--force to continue it with this config, or --name for a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_toml(config, bag.config)
    members: list[RunResult] = []
    progress(ProgressEvent("bag members", total=config.bag.k))
    for i in range(config.bag.k):
        members.append(train(member_config(config, i), run_dir / "members" / str(i), clips, store,
                             progress, force=force))
        progress(ProgressEvent("bag members", advance=1))
    if bag.metrics.exists() and all(m.already_complete for m in members) \
            and (bag.read_metrics().bag or {}).get("k") == config.bag.k:
        return _bag_result(run_dir, bag.read_metrics(), already_complete=True)
    bag.metrics.unlink(missing_ok=True)  # incomplete until the averaged predictions are written
    # The clips the members predicted: those of the head's tasks (AU-only clips are not, say).
    splits = run_splits(clips, config, tuple(getattr(config.head, "tasks", ("expr",))))
    metrics = _write_bag(config, run_dir, members, [*splits["val"], *splits["test"]])
    return _bag_result(run_dir, metrics, already_complete=False)


def _write_bag(config: FuseConfig, run_dir: Path, members: list[RunResult],
               clips: Sequence[Clip]) -> RunRecord:
    """The members' mean probabilities per split and output, face masks, then metrics.json."""
    first = members[0]
    outputs = first.outputs
    scores: dict[str, Scores] = {}
    for split in ("val", "test"):
        split_clips = [c for c in clips if c.split == split]
        if not split_clips:
            continue
        sources = {name: [Predictions(prediction_path(m.run_dir, split, name)) for m in members]
                   for name in outputs}
        masks = Predictions(face_mask_path(first.run_dir, split))
        confusion = {name: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for name in outputs}
        with contextlib.ExitStack() as stack:
            writers = {name: stack.enter_context(PredictionWriter(
                prediction_path(run_dir, split, name))) for name in outputs}
            faces = stack.enter_context(FaceMaskWriter(face_mask_path(run_dir, split)))
            for clip in split_clips:  # clip by clip: memory does not grow with the split
                for name in outputs:
                    probs = soft_vote([source[clip.clip_id] for source in sources[name]])
                    writers[name].add(clip.clip_id, probs)
                    if split == "val" and clip.labels is not None:
                        confusion[name] += confusion_matrix(clip.scoring_labels("expr"),
                                                            probs.argmax(axis=1))
                faces.add(clip.clip_id, masks[clip.clip_id])
        if split == "val":
            scores = {name: Scores.from_confusion(m) for name, m in confusion.items()}
    metrics = {
        "method": config.method,
        "outputs": list(outputs),
        "primary": first.primary,
        "seed": config.seed,
        "selected_on": SELECTED_ON[config.train.select_on],
        "val_macro_f1": {name: s.macro_f1 for name, s in scores.items()},
        "val_scores": {name: s.to_json() for name, s in scores.items()},
        "bag": {"k": config.bag.k, "seed": config.bag.seed, "rule": "soft voting (mean)",
                "resample": "bootstrap of the training videos",
                "members": [{"dir": str(m.run_dir.relative_to(run_dir)),
                             "seed": member_seed(config.seed, config.bag.seed, i),
                             "best_epoch": m.best_epoch, "val_macro_f1": m.val_macro_f1,
                             "dev_macro_f1": m.metrics.dev_macro_f1}
                            for i, m in enumerate(members)]},
        "history": [],
        "splits": first.metrics.splits,
        "features": first.metrics.features,
        "faceless_frames": FACE_RULE,
        "face_outputs": list(first.metrics.face_outputs),
    }
    return RunDir(run_dir).write_metrics(metrics)


def _bag_result(run_dir: Path, metrics: RunRecord, already_complete: bool) -> RunResult:
    members = metrics.bag["members"]
    return RunResult(run_dir=run_dir, method=metrics.method, outputs=metrics.outputs,
                     primary=metrics.primary, val_macro_f1=dict(metrics.val_macro_f1),
                     best_epoch=0, epochs_run=sum(1 for _ in members), resumed_from=0,
                     already_complete=already_complete, metrics=metrics)
