"""What a run is made of before it trains, for a single run, a bagging member and a bundle's
rebuilt head alike: the run's clips by role (:func:`run_splits`: the train-dev slice and a
member's bootstrap resample) and the 7-class mask of the expression outputs (:func:`mask_other`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from pipeline.data.manifest import Clip
from pipeline.data.task_splits import in_split, run_splits as task_splits
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.data import OTHER
from pipeline.fusion.heads import Head
from pipeline.training import folds


def run_splits(clips: Sequence[Clip], config: FuseConfig,
               tasks: Sequence[str] = ("expr",)) -> dict[str, list[Clip]]:
    """The clips of a run by role: ``train`` (what trains; a bootstrap resample for a bagging
    member), ``dev`` (the held-out training clips selection uses; empty with select_on val),
    ``val`` and ``test`` (predicted and written). A clip is in a split when it is there for one
    of the run's ``tasks`` (:func:`pipeline.data.task_splits.run_splits`). The dev slice holds the
    expression dev videos of an expression-only run with every training clip of theirs
    (:func:`pipeline.training.folds.dev_slice_of_videos`; all training clips where none is an
    expression one)."""
    out = {"dev": [], **task_splits(clips, tasks)}
    if config.train.select_on == "dev" and out["train"]:
        # The dev videos are the ones an expression-only run of the same manifests holds out, so
        # expression selection compares across task sets; AU/VA-only clips follow their video.
        expr = [c for c in out["train"] if in_split(c, "expr", "train")] or out["train"]
        out["train"], out["dev"] = folds.dev_slice_of_videos(
            out["train"], expr, config.train.dev_fraction, config.train.dev_seed)
    if config.bag.member >= 0 and out["train"]:
        # Its own stream (not the run's generator): the resample is fixed before the model is built.
        out["train"] = folds.bootstrap(out["train"], seed=(config.seed, 1))
    return out


def mask_other(head: Head) -> None:
    """``task.classes = 7``: a forward hook gives the Other logit of every expression output a
    large negative value, so the head learns and predicts the 7 classes of the ABAW 2021 track
    (probability 0 for Other; AU outputs untouched). Finite, not -inf: a fused log-probability
    (``loss.on = fused``) of two -inf terms would give NaN gradients."""
    expression = set(head.model_outputs or head.outputs)

    def hook(module: torch.nn.Module, inputs: Any, outputs: dict[str, torch.Tensor]):
        for name in expression & set(outputs):
            outputs[name] = outputs[name].clone()
            outputs[name][..., OTHER] = -1e4
        return outputs

    head.register_forward_hook(hook)
