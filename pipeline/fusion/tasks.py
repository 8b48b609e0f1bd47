"""Multi-task training (Jin et al. 2021): action units beside expressions, taking turns.

A run is multi-task when its head's config has ``tasks = ["expr", "au"]`` (heads with a
:class:`~pipeline.fusion.heads.TaskConfig`). Then:

* **Clips.** A clip belongs to a split of the run when it is in that split for one of the tasks
  (:func:`run_splits`); AU-only clips (``au_only.jsonl``) train and score AUs only. A training
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

* **Scores.** Every validation pass scores AUs too (mean F1, accuracy and ABAW 2021 score at
  threshold 0.5, :mod:`pipeline.metrics.au`) on the clips of the AU validation split, as
  the leakage guard leaves them; early stopping follows ``train.select_task`` (expression macro-F1 of
  the primary output by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from pipeline.data.labels import NUM_AUS, UNLABELED
from pipeline.data.manifest import SPLITS, Clip
from pipeline.errors import PipelineError
from pipeline.fusion import sampling
from pipeline.fusion.data import ClipStream, FeatureRequest, Table
from pipeline.fusion.heads import Head
from pipeline.fusion.losses import au_batch_loss, au_pos_weights
from pipeline.metrics.au import AUScores, au_counts

if TYPE_CHECKING:
    from pipeline.fusion.train import _Run

__all__ = ["AUEvaluator", "in_split", "run_splits", "task_batches"]

EXPR, AU = 0, 1  # task tags of training examples
_TASK = {EXPR: "expr", AU: "au"}


def in_split(clip: Clip, task: str, split: str) -> bool:
    """Whether ``clip`` is in ``split`` for ``task``; every test clip is in AU's test split (AU
    predictions of the test clips make the AU submission)."""
    return clip.task_split(task) == split or (task == "au" and split == "test"
                                                and clip.split == "test")


def run_splits(clips: Sequence[Clip], tasks: Sequence[str]) -> dict[str, list[Clip]]:
    """The clips of each split of a run with ``tasks``, in manifest order: a clip is in a split
    when it is there for one of the tasks (it may be in two: expression train and AU val)."""
    return {split: [c for c in clips if any(in_split(c, t, split) for t in tasks)]
            for split in SPLITS}


def split_labels(table: Table, clips: dict[str, Clip], split: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The table's expression and AU labels with the rows of clips outside ``split`` for that
    task set to -1 (a clip in the expression training split and the AU validation split is in
    the validation pass for its AUs only)."""
    labels, au_labels = table.labels.copy(), table.au_labels.copy()
    for i, clip_id in enumerate(table.clip_ids):
        rows = table.clip_rows(i)
        if not in_split(clips[clip_id], "expr", split):
            labels[rows] = UNLABELED
        if not in_split(clips[clip_id], "au", split):
            au_labels[rows] = UNLABELED
    return labels, au_labels


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


def selection_score(select_task: str, expr_f1: float, au: dict[str, Any] | None) -> float:
    """The selection score early stopping follows (``au``: :meth:`AUScores.to_json`)."""
    if select_task == "au":
        if au is None:
            raise PipelineError("train.select_task = au needs a head with tasks [expr, au]")
        return float(au["mean_f1"])
    return expr_f1


def au_pos_weight(run: "_Run") -> np.ndarray:
    """float64 [12]: ``loss.au_pos_weight``, or negatives / positives of each AU over the training
    frames the head can learn AUs from. Refuses a run without any such frame."""
    light = ClipStream(run.stream.store, FeatureRequest(arrays=(), audio=run.request.audio,
                                                        tasks=run.request.tasks),
                       run.dims, run.config.train.buffer_mb)
    counts = np.zeros((NUM_AUS, 2), np.int64)
    for table in light.tables(run.splits["train"], train=True):
        labels = table.au_labels[run.head.au_trainable(table)]
        counts += np.stack([(labels == 0).sum(axis=0), (labels == 1).sum(axis=0)], axis=-1)
    if not counts.any():
        raise PipelineError("head.tasks has \"au\" but no training frame has AU labels (and a face"
                            " where the head needs one); manifests written before AU labels "
                            "existed need `fer-pipeline manifest` again")
    if run.config.loss.au_pos_weight:
        return np.asarray(run.config.loss.au_pos_weight, dtype=np.float64)
    return au_pos_weights(counts)


def task_batches(schedule: str, epoch_task: int | None, examples: dict[int, np.ndarray],
                 batch_size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (examples, task tags) of each batch of one group of clips, in training order.

    ``examples`` holds each task's examples (already shuffled); ``epoch_task`` is the task of
    this epoch under the ``epoch`` schedule.
    """
    def chunks(task: int) -> list[tuple[np.ndarray, np.ndarray]]:
        rows = examples[task]
        return [(rows[b:b + batch_size], np.full(rows[b:b + batch_size].size, task, np.int8))
                for b in range(0, rows.size, batch_size)]

    if schedule == "epoch":
        return chunks(epoch_task)
    if schedule == "joint":
        rows = np.concatenate([examples[EXPR], examples[AU]])
        tags = np.concatenate([np.full(examples[EXPR].size, EXPR, np.int8),
                               np.full(examples[AU].size, AU, np.int8)])
        order = rng.permutation(rows.size)
        rows, tags = rows[order], tags[order]
        return [(rows[b:b + batch_size], tags[b:b + batch_size])
                for b in range(0, rows.size, batch_size)]
    expr, au = chunks(EXPR), chunks(AU)  # "batch": alternate while both last
    mixed = [batch for pair in zip(expr, au) for batch in pair]
    return mixed + expr[len(au):] + au[len(expr):]


def batch_loss(head: Head, table: Table, chunk: np.ndarray, tags: np.ndarray,
               counts: np.ndarray, au_ok: np.ndarray, run: "_Run") -> torch.Tensor:
    """The loss of one batch: each task's loss over the examples tagged with it, summed; a task
    without examples in the batch adds nothing (not even a zero), so its head gets no gradient."""
    inputs, targets, weights = head.batch(table, chunk, counts)
    logits = head({k: v.to(run.device) for k, v in inputs.items()})
    loss: Any = 0.0
    if (tags == EXPR).any():
        targets = targets.clone()
        targets[torch.from_numpy(tags != EXPR)] = UNLABELED
        weights = None if weights is None else weights.to(run.device)
        loss = loss + head.loss(logits, targets.to(run.device), weights, run.config.loss)
    if (tags == AU).any():
        au_targets = head.au_targets(table, chunk, au_ok)
        au_targets[torch.from_numpy(tags != AU)] = UNLABELED
        loss = loss + au_batch_loss(logits[head.au_outputs[0]], au_targets.to(run.device), None,
                                    torch.as_tensor(run.au_pos_weight))
    return loss


def train_epoch_tasks(run: "_Run", rates: np.ndarray) -> tuple[float, int]:
    """One epoch of a multi-task head under ``train.task_schedule``; (mean loss, examples)."""
    head, cfg = run.head, run.config.train
    head.train()
    batch_size = cfg.batch_size or type(head).batch_size
    epoch_task = (EXPR if run.epoch % 2 == 0 else AU) if cfg.task_schedule == "epoch" else None
    active = [task for task in (EXPR, AU) if epoch_task in (None, task)]
    train = run.splits["train"]
    order = [train[i] for i in run.rng.permutation(len(train))]
    total, weight, examples_seen = 0.0, 0, 0
    for table in run.stream.tables(order, train=True):
        au_ok = head.au_trainable(table)
        counts = {AU: au_ok.astype(np.int64)}
        if EXPR in active:
            counts[EXPR] = sampling.draw(table.labels, head.trainable(table), rates, run.rng)
        examples = {task: np.zeros(0, np.int64) for task in (EXPR, AU)}
        for task in active:
            drawn = head.examples(table, counts[task], run.rng)
            examples[task] = drawn[run.rng.permutation(drawn.size)]
        expr_counts = counts.get(EXPR, np.zeros(table.n_rows, np.int64))
        for chunk, tags in task_batches(cfg.task_schedule, epoch_task, examples, batch_size,
                                        run.rng):
            loss = batch_loss(head, table, chunk, tags, expr_counts, au_ok, run)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
            run.optimizer.step()
            total += float(loss.detach()) * chunk.size
            weight += chunk.size
        examples_seen += sum(e.size for e in examples.values())
    return total / max(weight, 1), examples_seen


def task_metrics(run: "_Run") -> dict[str, Any]:
    """What metrics.json records about the tasks of a run."""
    if not run.head.au_outputs:
        return {"tasks": list(run.head.tasks)}
    if run.au_pos_weight is None:  # finishing a run trained by an earlier call
        run.au_pos_weight = au_pos_weight(run)
    return {"tasks": list(run.head.tasks), "au_outputs": list(run.head.au_outputs),
            "task_schedule": run.config.train.task_schedule,
            "select_task": run.config.train.select_task,
            "au_pos_weight": [float(w) for w in run.au_pos_weight]}
