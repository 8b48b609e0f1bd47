"""Multi-task training (Jin et al. 2021): action units and valence-arousal beside expressions,
taking turns.

Valence-arousal (``tasks`` with ``"va"``, any of ``["expr", "va"]``, ``["expr", "au", "va"]``) is
a third task the same way: VA examples are the frames with valid VA labels, each once; the
``epoch`` schedule cycles expressions, AUs, VA (in that order, over the tasks the head has);
``batch`` takes one batch of each task in turn; ``joint`` mixes all. Its loss is ``loss.va_loss``
(:func:`pipeline.training.losses.va_batch_loss`) and its validation score the mean CCC of
:mod:`pipeline.metrics.va` (``train.select_task = "va"`` selects by it). A run of
``["expr", "au"]`` trains exactly as before VA existed.

A run is multi-task when its head's config has ``tasks = ["expr", "au"]`` (heads with a
:class:`~pipeline.fusion.heads.TaskConfig`). Then:

* **Clips.** A clip belongs to a split of the run when it is in that split for one of the tasks
  (:func:`pipeline.data.task_splits.run_splits`); AU-only clips (``au_only.jsonl``) train and score AUs only. A training
  table holds only the labels of each task's training split, so frames missing one task's labels
  train only the other task. Test clips get AU predictions too (for the AU submission).
* **Examples.** Each epoch the expression examples are drawn as for a single-task head (class
  rates, ``sampling``); the AU examples are the frames with AU labels (a face where the head needs
  one), each once: their imbalance is the positive weights' job (``loss.au_pos_weight``).
* **Schedules** (``train.task_schedule``), as the paper's section 3.1 describes them:

  - ``epoch``: odd epochs (the 1st, 3rd, ...) train expressions, even ones AUs; an epoch's
    batches hold only its task's examples and its loss is only that task's, so only the shared
    trunk and that task's head change (the other head gets no gradient at all, so neither
    momentum nor weight decay touches it). ``train.patience`` counts the epochs of both tasks:
    on the demo data a patience of 6 stopped a sequence run at epoch 9 (expression macro-F1
    0.365), 12 let it reach 0.735 by epoch 25;
  - ``batch``: within each streamed group of clips, batches of expression examples and batches of
    AU examples alternate (expression first); where one task runs out of batches, the other's
    remaining batches follow (the paper does not say what happens when the two sets differ in
    size; we neither repeat nor drop examples);
  - ``joint``: every batch mixes both tasks' examples (a frame labelled for both is an example of
    each) and its loss is the sum of the expression loss over its expression examples and the AU
    loss over its AU examples.

* **One loop.** :meth:`pipeline.fusion.training_run.TrainingRun.train_epoch` trains every head;
  what it asks is here, as functions of explicit arguments: :func:`pipeline.training.tasks.epoch_tasks` (which tasks an
  epoch trains; shared with ``finetune`` in :mod:`pipeline.training.tasks`), :func:`task_batches` (a group of clips' batches and each example's task) and
  :func:`batch_loss`. An expression-only head is the case of one task.
* **Scores.** Every validation pass scores AUs too (mean F1, accuracy and ABAW 2021 score at
  threshold 0.5, :mod:`pipeline.metrics.au`) on the clips of the AU validation split, as
  the leakage guard leaves them; early stopping follows ``train.select_task`` (expression macro-F1 of
  the primary output by default).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline.data.labels import NUM_AUS, UNLABELED, VA_INVALID
from pipeline.data.manifest import Clip
from pipeline.data.task_splits import in_split
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.stream import ClipStream
from pipeline.fusion.heads import Head
from pipeline.training.losses import LossConfig, au_batch_loss, au_pos_weights, va_batch_loss
from pipeline.metrics.au import AUScores, au_counts
from pipeline.metrics.va import VAScores, ccc_from_moments, moments
from pipeline.training.tasks import AU, EXPR, VA, alternate

__all__ = ["AUEvaluator", "VAEvaluator", "batch_loss", "task_batches"]


def head_tags(head: Head) -> tuple[int, ...]:
    """The task tags a head trains, in schedule order (expressions, AUs, VA)."""
    return (EXPR, *((AU,) if head.au_outputs else ()), *((VA,) if head.va_outputs else ()))


def split_labels(table: Table, clips: dict[str, Clip], split: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """The table's expression and AU labels with the rows of clips outside ``split`` for that
    task set to -1 (a clip in the expression training split and the AU validation split is in
    the validation pass for its AUs only). AU labels None where AU is not a task."""
    labels = table.labels.copy()
    au_labels = None if table.au_labels is None else table.au_labels.copy()
    for i, clip_id in enumerate(table.clip_ids):
        rows = table.clip_rows(i)
        if not in_split(clips[clip_id], "expr", split):
            labels[rows] = UNLABELED
        if au_labels is not None and not in_split(clips[clip_id], "au", split):
            au_labels[rows] = UNLABELED
    return labels, au_labels


def split_va_labels(table: Table, clips: dict[str, Clip], split: str) -> np.ndarray:
    """The table's VA labels with the rows of clips outside ``split`` for VA set to -5."""
    va_labels = table.va_labels.copy()
    for i, clip_id in enumerate(table.clip_ids):
        if not in_split(clips[clip_id], "va", split):
            va_labels[table.clip_rows(i)] = VA_INVALID
    return va_labels


class VAEvaluator:
    """Streams a split's VA predictions into the moments CCC is made of."""

    def __init__(self) -> None:
        self.moments = np.zeros((2, 6), np.float64)
        self.frames = 0

    def add(self, values: np.ndarray, labels: np.ndarray) -> None:
        self.moments += moments(labels, values)
        self.frames += int((labels != VA_INVALID).any(axis=1).sum())

    def finish(self) -> VAScores:
        ccc = ccc_from_moments(self.moments)
        return VAScores(float(ccc.mean()), float(ccc[0]), float(ccc[1]), self.frames)


class AUEvaluator:
    """Streams a split's AU probabilities into per-AU counts at threshold 0.5."""

    def __init__(self) -> None:
        self.counts = np.zeros((NUM_AUS, 4), np.int64)
        self.frames = 0

    def add(self, probs: np.ndarray, labels: np.ndarray) -> None:
        self.counts += au_counts(labels, probs)
        self.frames += int((labels != UNLABELED).any(axis=1).sum())

    def finish(self) -> AUScores:
        return AUScores.from_counts(self.counts, self.frames)


def selection_score(select_task: str, expr_f1: float, au: dict[str, Any] | None,
                    va: dict[str, Any] | None = None) -> float:
    """The selection score early stopping follows (``au``: :meth:`AUScores.to_json`; ``va``:
    :meth:`VAScores.to_json`, selected by mean CCC)."""
    if select_task == "va":
        if va is None:
            raise PipelineError("train.select_task = va needs a head with \"va\" in head.tasks")
        return float(va["mean_ccc"])
    if select_task == "au":
        if au is None:
            raise PipelineError("train.select_task = au needs a head with tasks [expr, au]")
        return float(au["mean_f1"])
    return expr_f1


def au_pos_weight(store: FeatureStore, request: FeatureRequest, dims: dict[str, tuple[int, ...]],
                  clips: Sequence[Clip], au_trainable: Callable[[Table], np.ndarray],
                  buffer_mb: float, configured: Sequence[float] = ()) -> np.ndarray:
    """float64 [12]: the ``configured`` weights (``loss.au_pos_weight``), or negatives / positives
    of each AU over the frames of the training ``clips`` that ``au_trainable`` (the head's) can
    learn AUs from. Refuses a run without any such frame."""
    light = ClipStream(store, FeatureRequest(arrays=(), audio=request.audio, tasks=request.tasks),
                       dims, buffer_mb)
    counts = np.zeros((NUM_AUS, 2), np.int64)
    for table in light.tables(clips, train=True):
        labels = table.au_labels[au_trainable(table)]
        counts += np.stack([(labels == 0).sum(axis=0), (labels == 1).sum(axis=0)], axis=-1)
    if not counts.any():
        raise PipelineError("head.tasks has \"au\" but no training frame has AU labels (and a face"
                            " where the head needs one); manifests written before AU labels "
                            "existed need `fer-pipeline manifest` again")
    if configured:
        return np.asarray(configured, dtype=np.float64)
    return au_pos_weights(counts)


def task_batches(schedule: str, examples: dict[int, np.ndarray], batch_size: int,
                 rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (examples, task tags) of each batch of one group of clips, in training order.

    ``examples`` holds the examples (already shuffled) of each task the epoch trains
    (:func:`pipeline.training.tasks.epoch_tasks`). One task (an expression-only head, or the ``epoch`` schedule): its
    examples in order, ``batch_size`` at a time, with no draw from ``rng``. Two: ``joint`` mixes
    them (one permutation from ``rng``), ``batch`` alternates the tasks' batches.
    """
    def chunks(task: int) -> list[tuple[np.ndarray, np.ndarray]]:
        rows = examples[task]
        return [(rows[b:b + batch_size], np.full(rows[b:b + batch_size].size, task, np.int8))
                for b in range(0, rows.size, batch_size)]

    if len(examples) == 1:
        return chunks(next(iter(examples)))
    order_of = sorted(examples)  # EXPR, AU, VA: the order of the two-task loop before VA
    if schedule == "joint":
        rows = np.concatenate([examples[t] for t in order_of])
        tags = np.concatenate([np.full(examples[t].size, t, np.int8) for t in order_of])
        order = rng.permutation(rows.size)
        rows, tags = rows[order], tags[order]
        return [(rows[b:b + batch_size], tags[b:b + batch_size])
                for b in range(0, rows.size, batch_size)]
    return alternate(*(chunks(t) for t in order_of))  # "batch": each task in turn


def batch_loss(head: Head, table: Table, chunk: np.ndarray, tags: np.ndarray,
               counts: np.ndarray, au_ok: np.ndarray | None, device: torch.device,
               loss_config: LossConfig, au_pos_weight: np.ndarray | None,
               va_ok: np.ndarray | None = None) -> torch.Tensor:
    """The loss of one batch. An expression-only head (``au_pos_weight`` None): the head's loss
    of the batch. A multi-task head: each task's loss over the examples tagged with it, summed; a
    task without examples in the batch adds nothing (not even a zero), so its head gets no
    gradient. ``counts``: how often each row was drawn for expressions; ``au_ok``: the rows AUs
    train on; ``va_ok``: the rows VA trains on (a head with VA)."""
    inputs, targets, weights = head.batch(table, chunk, counts)
    logits = head({k: v.to(device) for k, v in inputs.items()})
    weights = None if weights is None else weights.to(device)
    if au_pos_weight is None and not head.va_outputs:
        return head.loss(logits, targets.to(device), weights, loss_config)
    loss: Any = 0.0
    if (tags == EXPR).any():
        targets = targets.clone()
        targets[torch.from_numpy(tags != EXPR)] = UNLABELED
        loss = loss + head.loss(logits, targets.to(device), weights, loss_config)
    if (tags == AU).any():
        au_targets = head.au_targets(table, chunk, au_ok)
        au_targets[torch.from_numpy(tags != AU)] = UNLABELED
        loss = loss + au_batch_loss(logits[head.au_outputs[0]], au_targets.to(device), None,
                                    torch.as_tensor(au_pos_weight))
    if (tags == VA).any():
        va_targets = head.va_targets(table, chunk, va_ok)
        va_targets[torch.from_numpy(tags != VA)] = VA_INVALID
        loss = loss + va_batch_loss(logits[head.va_outputs[0]], va_targets.to(device),
                                    loss_config.va_loss, loss_config.va_mse_weight)
    return loss


def task_metrics(head: Head, schedule: str, select_task: str,
                 au_pos_weight: np.ndarray | None) -> dict[str, Any]:
    """What metrics.json records about the tasks of a run (``au_pos_weight``: a multi-task
    run's AU positive weights)."""
    if not head.aux_outputs:
        return {"tasks": list(head.tasks)}
    record: dict[str, Any] = {"tasks": list(head.tasks)}
    if head.au_outputs:
        record["au_outputs"] = list(head.au_outputs)
    if head.va_outputs:
        record["va_outputs"] = list(head.va_outputs)
    record.update({"task_schedule": schedule, "select_task": select_task})
    if head.au_outputs:
        record["au_pos_weight"] = [float(w) for w in au_pos_weight]
    return record
