"""Which clips a fine-tune trains and selects on: the train-dev slice of the training split
(:func:`dev_split`, the heads' own), the warning about a one-video slice, and the AU-only clips the
alternated AU task trains on (:func:`au_only_training`)."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.manifest import Clip, load_clips
from pipeline.errors import PipelineError
from pipeline.finetune.config import FinetuneConfig
from pipeline.training import folds
from pipeline.training.class_check import check_classes


def dev_split(config: FinetuneConfig) -> tuple[list[Clip], list[Clip], list[str]]:
    """(training clips, dev clips, clips left out by the leakage guard) of the training split."""
    manifests = Path(config.manifests)
    if not manifests.is_dir():
        raise PipelineError(f"{manifests}: no such manifest directory (run `fer-pipeline manifest`)")
    try:
        clips = load_clips(manifests, splits=("train",))  # never the validation labels
    except ValueError as e:
        raise PipelineError(" ".join(str(e).split())) from None
    labelled = [c for c in clips if c.labels is not None]
    leaking = sorted(c.clip_id for c in labelled
                     if c.au_split == "val" and "au_val" not in c.exclude_from)
    labelled = [c for c in labelled if c.clip_id not in leaking]
    if not labelled:
        raise PipelineError(f"{manifests}: no labelled training clips to fine-tune on")
    fraction = config.dev_fraction
    train, dev = folds.dev_slice(labelled, fraction, config.dev_seed)
    # dev_min_videos: a larger held-out share until the slice holds that many videos (at most half)
    while len(folds.videos(dev)) < config.dev_min_videos and fraction < 0.5:
        fraction = min(0.5, fraction * 1.25)
        train, dev = folds.dev_slice(labelled, fraction, config.dev_seed)
    check_classes(train, dev, str(manifests), config.allow_single_class, "allow_single_class")
    return train, dev, leaking


def au_only_training(config: FinetuneConfig) -> list[Clip]:
    """The AU-only clips (``au_only.jsonl``) of the AU training split: the AU task trains on them."""
    try:
        clips = load_clips(Path(config.manifests), splits=(), au_only=True)
    except ValueError as e:
        raise PipelineError(" ".join(str(e).split())) from None
    return [c for c in clips if c.au_split == "train" and c.au_labels is not None]


def dev_warnings(dev: list[Clip], frames: int) -> list[str]:
    """One line when the dev slice is a single video (its F1 would choose the epoch alone)."""
    videos = folds.videos(dev)
    return [] if len(videos) > 1 else [
        f"the train-dev slice holds one video ({videos[0]}, {frames} frames): the epoch is chosen "
        "on it alone; set dev_min_videos=2 (or a larger dev_fraction) and min_epochs"]
