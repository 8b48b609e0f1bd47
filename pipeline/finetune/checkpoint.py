"""The fine-tune's checkpoint (``OUT.train/checkpoint.pt``) and its config: what the record and
checkpoint keep of the config, reading a checkpoint, and whether the command at hand may resume it.

A checkpoint resumes only under the same config, less the fields that change no number
(:data:`RESUMABLE_CHANGES`); a field added after checkpoints were written counts as its default
when a checkpoint lacks it (:data:`ADDED_FIELDS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.config import to_dict
from pipeline.errors import PipelineError
from pipeline.finetune.config import FinetuneConfig

# Config fields that may change between a run and its resumption (they change no number).
RESUMABLE_CHANGES = ("workers",)
# Config fields added after checkpoints were written, whose default is the behaviour of before: a
# checkpoint without one resumes as if it held the default.
ADDED_FIELDS = ("lr_decay", "classifier", "allow_single_class", "min_epochs", "schedule",
                "input_size", "crop_pct", "dev_min_videos", "task_schedule", "head", "dan")
# Fields left out of the record (and checkpoint) while at their default, so a fine-tune that does
# not use them writes the same record, hence the same stage-one cache key, as before they existed.
OMITTED_AT_DEFAULT = ("task_schedule", "head", "dan")


def recorded_config(config: FinetuneConfig) -> dict[str, Any]:
    """The config as the record and checkpoint keep it (:data:`OMITTED_AT_DEFAULT`)."""
    saved, defaults = to_dict(config), to_dict(FinetuneConfig())
    return {k: v for k, v in saved.items()
            if k not in OMITTED_AT_DEFAULT or v != defaults[k]}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's state (tensors only: ``weights_only``); one-line error naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a checkpoint from another torch, or damaged: say which file
        raise PipelineError(f"{path}: unreadable checkpoint ({e}); rerun with --restart") from None


def check_resumable(saved: dict[str, Any], mine: dict[str, Any], out: Path) -> None:
    """Refuse to resume ``out``'s checkpoint (config ``saved``) under another config ``mine``."""
    defaults = to_dict(FinetuneConfig())
    saved = {**{k: defaults[k] for k in ADDED_FIELDS if k in defaults}, **saved}
    mine = {**{k: defaults[k] for k in ADDED_FIELDS if k in defaults}, **mine}
    old = {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES}
    new = {k: v for k, v in mine.items() if k not in RESUMABLE_CHANGES}
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise PipelineError(f"{out}: an unfinished fine-tune with another config "
                            f"(differs in {', '.join(changed)}); rerun with --restart")
