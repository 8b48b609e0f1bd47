"""What a training run writes into its record (``metrics.json``) beyond its scores.

:meth:`pipeline.fusion.training_run.TrainingRun.finish` lists the record's fields and writes it
as a :class:`pipeline.runs.record.RunRecord`; the parts that need a rule of their own are here:
the 7-class scores (``task.classes = 7``) and the account of where the run selected its epoch
and fitted choices (the dev slice, or val) and, for a bagging member, its bootstrap resample.
"""

from __future__ import annotations

from typing import Any, Sequence

from pipeline.data.manifest import Clip
from pipeline.fusion.config import TrainConfig
from pipeline.training.folds import SELECTED_ON
from pipeline.metrics.scores import Scores, seven_class_from_confusion


def seven_class_record(classes: int, scores: dict[str, Scores]) -> dict[str, Any]:
    """``task.classes = 7``: the classes, and val macro-F1 over the 7 (``val_macro_f1`` averages
    all 8, Other at 0, so it is 7/8 of that; selection is the same either way)."""
    if classes != 7:
        return {}
    return {"classes": 7, "val_macro_f1_7class": {
        name: seven_class_from_confusion(s.confusion)[0] for name, s in scores.items()}}


def selection_record(select: str, dev_scores: dict[str, Scores] | None,
                     splits: dict[str, Sequence[Clip]], train: TrainConfig,
                     bag_member: int) -> dict[str, Any]:
    """The record's account of where the run selected its epoch and fitted choices: ``select``
    (the selection split), the best epoch's scores on the dev slice (None with select_on val),
    the run's clips by role, ``train`` (the dev slice's fraction and seed) and the run's
    ``bag.member`` (>= 0: a bagging member, which records its bootstrap resample)."""
    record: dict[str, Any] = {"selected_on": SELECTED_ON[select]}
    if dev_scores is not None:
        record["dev_macro_f1"] = {name: s.macro_f1 for name, s in dev_scores.items()}
        record["dev_clips"] = [c.clip_id for c in splits["dev"]]
        record["dev"] = {"fraction": train.dev_fraction, "seed": train.dev_seed}
    if bag_member >= 0:
        record["bootstrap"] = [c.clip_id for c in splits["train"]]
    return record
