"""The state of one training run and its one epoch loop, for every head.

:class:`TrainingRun` holds what :func:`pipeline.fusion.train.train` builds, resumes and finishes:
the run's clips by role (:func:`pipeline.fusion.run_setup.run_splits`), the streamed features,
the head, optimiser and generators, the epoch and selection state (early stopping:
:class:`pipeline.training.stopping.EarlyStopping`), and the final predictions and record. Each
step goes through :class:`pipeline.training.step.Stepper` (clipping, the optimiser's step).

**One epoch loop.** :meth:`TrainingRun.train_epoch` trains every head, expression-only or
multi-task: per streamed group of clips it draws each task's examples and asks the task schedule
(:mod:`pipeline.fusion.tasks`: :func:`~pipeline.training.tasks.epoch_tasks`,
:func:`~pipeline.fusion.tasks.task_batches`) for the batches and the task of each example; an
expression-only head is the case of one task. The draws come from the run's one generator in a
fixed order: the clip order, then per group the expression draw
(:func:`pipeline.training.sampling.draw`), then per task its examples and their shuffle, then
(``joint`` schedule) the mixing.

After every step the weights' moving average (:mod:`pipeline.fusion.averaging`) takes them in;
each epoch's selection pass runs with the average applied, and the best epoch's average is what
is kept.

The evaluation pass is :mod:`pipeline.fusion.evaluation`; the record's selection and 7-class
parts :mod:`pipeline.fusion.run_record`; the run directory's files :mod:`pipeline.fusion.rundir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.config import to_dict
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip, fingerprint
from pipeline.epoch_log import EpochLog
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.training import moe, sampling
from pipeline.fusion.averaging import WeightAverage
from pipeline.training.class_check import check_classes, check_task_frames
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.data import FeatureRequest, Table, check_inputs, feature_keys
from pipeline.fusion.evaluation import evaluate
from pipeline.fusion.stream import ClipStream
from pipeline.fusion.heads import head_class
from pipeline.fusion.run_record import selection_record, seven_class_record
from pipeline.fusion.run_setup import mask_other, run_splits
from pipeline.fusion.rundir import FACE_RULE, RunDir, identity
from pipeline.fusion.tasks import (
    au_pos_weight,
    batch_loss,
    head_tags,
    selection_score,
    task_batches,
    task_metrics,
)
from pipeline.progress import ProgressEvent, ProgressFn
from pipeline.runs.plots import plot_history
from pipeline.runs.predictions import (
    AUPredictionWriter,
    VAPredictionWriter,
    FaceMaskWriter,
    PredictionWriter,
    face_mask_path,
    prediction_path,
)
from pipeline.runs.record import RunRecord
from pipeline.training.optim import make_optimizer
from pipeline.training.schedules import build_schedule
from pipeline.training.step import Stepper
from pipeline.training.stopping import EarlyStopping
from pipeline.training.tasks import AU, EXPR, VA, epoch_tasks


class TrainingRun:
    """The state of one training run (one call of :func:`pipeline.fusion.train.train`)."""

    def __init__(self, config: FuseConfig, run_dir: Path, clips: Sequence[Clip],
                 store: FeatureStore, progress: ProgressFn) -> None:
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.dir = RunDir(run_dir)
        self.tasks = tuple(getattr(config.head, "tasks", ("expr",)))
        self.splits = run_splits(clips, config, self.tasks)
        # the manifests read, labels included (ensemble refuses to mix runs whose fingerprints
        # differ; a run does not resume on other labels)
        self.labels_fingerprint = fingerprint(c for clips in self.splits.values() for c in clips)
        self.select = config.train.select_on  # the split the epoch and fitted choices come from
        used = {c.clip_id for split in self.splits.values() for c in split}
        clips = [c for c in clips if c.clip_id in used]  # this run's tasks', in manifest order
        self.clips = {c.clip_id: c for c in clips}
        if config.train.select_task == "au" and "au" not in self.tasks:
            raise PipelineError("train.select_task = au needs a head with tasks [\"expr\", \"au\"]")
        if config.train.select_task == "va" and "va" not in self.tasks:
            raise PipelineError("train.select_task = va needs a head with \"va\" in head.tasks")
        if not self.splits["train"]:
            raise PipelineError(f"no training clips in {config.manifests or 'the manifests'}")
        check_classes(self.splits["train"], self.splits[self.select],
                      str(config.manifests or "the manifests"), config.train.allow_single_class,
                      "train.allow_single_class", "dev slice" if self.select == "dev" else "val split")
        if not self.splits[self.select]:
            raise PipelineError(f"no {self.select} clips in {config.manifests or 'the manifests'}:"
                                " early stopping needs them")
        if self.select == "dev" and config.train.select_task in ("au", "va"):
            check_task_frames(self.splits["train"], self.splits["dev"], config.train.select_task,
                              str(config.manifests or "the manifests"), config.train.dev_fraction)
        self.head_class = head_class(config.method)
        self.request = dataclasses.replace(
            self.head_class.request(config.head, config.sampling), tasks=self.tasks,
            classes=config.task.classes)
        self.dims = check_inputs(store, clips, self.request)
        self.features = feature_keys(store, self.splits["train"][0].clip_id, self.request)
        self.stream = ClipStream(store, self.request, self.dims, config.train.buffer_mb,
                                 config.train.cache_mb)
        self.device = torch.device(config.train.device)
        self.au_pos_weight: np.ndarray | None = None  # multi-task runs: set before training

    # -- state

    def build(self) -> None:
        torch.manual_seed(self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        self.head = self.head_class(self.config.head, self.dims)
        self.head.start_from(self.stream.store)  # e.g. dan's head.init_from
        moe.install(self.head, self.config.classifier)
        self.head = self.head.to(self.device)
        if self.config.task.classes == 7:
            mask_other(self.head)
        cfg = self.config.train
        # a head may give some parameters their own lr (its parameter groups)
        self.optimizer = make_optimizer(self.head.parameter_groups(), cfg.optimizer, cfg.lr,
                                        cfg.weight_decay, cfg.momentum)
        self.stepper = Stepper(self.optimizer, self.head.parameters(), grad_clip=cfg.grad_clip)
        self.log = EpochLog(self.run_dir, self.progress, task="train clips")  # epochs.jsonl/.csv
        self.log.attach(self.optimizer)
        self.scheduler = build_schedule(self.optimizer, self.config.train.schedule,
                                        self.config.train.epochs)
        self.average = WeightAverage(self.config.train.ema_epochs)
        self.stopping = EarlyStopping(cfg.patience, cfg.min_epochs)
        self.epoch = 0
        self.stopped: str | None = None
        self.history: list[dict] = []
        self.best_state: dict[str, torch.Tensor] = {}

    def state(self) -> dict[str, Any]:
        return {
            "identity": identity(self.config, self.features, self.labels_fingerprint),
            "config": to_dict(self.config),
            "dims": {k: list(v) for k, v in self.dims.items()},
            "epoch": self.epoch,
            **self.stopping.state(),
            "stopped": self.stopped,
            "history": self.history,
            "epoch_log": self.log.rows,
            "model": self.head.state_dict(),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            **({} if self.scheduler is None else {"scheduler": self.scheduler.state_dict()}),
            "average": self.average.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.head.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.average.load_state_dict(saved.get("average"))
        torch.set_rng_state(saved["torch_rng"])
        self.rng.bit_generator.state = json.loads(saved["numpy_rng"])
        self.epoch = saved["epoch"]
        self.stopping.restore(saved)
        self.stopped, self.history = saved["stopped"], saved["history"]
        self.best_state = saved["best_model"]
        self.log.restore(saved.get("epoch_log"))  # (none in a checkpoint older than the log)

    # -- one epoch

    def trainable(self, table: Table) -> np.ndarray:
        """The head's trainable frames, on the equal-interval grid (sampling.interval)."""
        keep = self.head.trainable(table)
        if self.config.sampling.interval > 1:
            keep &= sampling.equal_interval(table.offsets, self.config.sampling.interval)
        return keep

    def class_rates(self) -> np.ndarray:
        """Per-class draw rates from the training split's trainable frames (labels, faces, purity)."""
        light = ClipStream(self.stream.store, FeatureRequest(arrays=(), audio=self.request.audio,
                                                             purity=self.request.purity,
                                                             classes=self.request.classes),
                           self.dims, self.config.train.buffer_mb)
        counts = np.zeros(NUM_CLASSES, np.int64)
        for table in light.tables(self.splits["train"], train=True):
            counts += sampling.class_counts(table.labels, self.trainable(table))
        if not counts.any():
            raise PipelineError("no training frame can train this head (labelled, with a face, "
                                "with audio and a pure enough window, as the head needs)")
        return sampling.class_rates(counts, self.config.sampling)

    def positive_weights(self) -> np.ndarray:
        """A multi-task run's AU positive weights (:func:`pipeline.fusion.tasks.au_pos_weight`)."""
        return au_pos_weight(self.stream.store, self.request, self.dims, self.splits["train"],
                             self.head.au_trainable, self.config.train.buffer_mb,
                             self.config.loss.au_pos_weight)

    def train_epoch(self, rates: np.ndarray) -> tuple[float, int]:
        """One epoch of any head; (mean loss per example, examples trained)."""
        self.head.train()
        cfg = self.config.train
        batch_size = cfg.batch_size or self.head_class.batch_size
        multitask = bool(self.head.aux_outputs)
        active = epoch_tasks(multitask, cfg.task_schedule, self.epoch, head_tags(self.head))
        order = [self.splits["train"][i] for i in self.rng.permutation(len(self.splits["train"]))]
        total, weight, examples_seen = 0.0, 0, 0
        self.log.start_epoch(len(order))
        for table in self.stream.tables(order, train=True):
            au_ok = self.head.au_trainable(table) if self.head.au_outputs else None
            va_ok = self.head.va_trainable(table) if self.head.va_outputs else None
            counts = {} if au_ok is None else {AU: au_ok.astype(np.int64)}
            if va_ok is not None:
                counts[VA] = va_ok.astype(np.int64)
            if EXPR in active:
                # The equal-interval grid applies to multi-task heads too (they drew from
                # head.trainable before the loops were one: the same at sampling.interval 1).
                counts[EXPR] = sampling.draw(table.labels, self.trainable(table), rates, self.rng)
            examples: dict[int, np.ndarray] = {}
            for task in active:
                drawn = self.head.examples(table, counts[task], self.rng)
                examples[task] = drawn[self.rng.permutation(drawn.size)]
            expr_counts = counts.get(EXPR, np.zeros(table.n_rows, np.int64))
            for chunk, tags in task_batches(cfg.task_schedule, examples, batch_size, self.rng):
                loss = batch_loss(self.head, table, chunk, tags, expr_counts, au_ok, self.device,
                                  self.config.loss, self.au_pos_weight, va_ok)
                self.stepper.zero_grad()
                self.stepper.backward(loss)
                self.stepper.step()  # clip, step
                self.average.update(self.head, chunk.size)
                total += float(loss.detach()) * chunk.size
                weight += chunk.size
            drawn = sum(e.size for e in examples.values())
            examples_seen += drawn
            self.log.advance(len(table.clip_ids), drawn)
        self.average.end_epoch(examples_seen)
        return total / max(weight, 1), examples_seen

    def evaluate(self, split: str, writers: dict[str, PredictionWriter] | None = None,
                 faces: FaceMaskWriter | None = None, score: bool = True, fit: bool = False):
        """:func:`pipeline.fusion.evaluation.evaluate` of this run's head on ``split``."""
        return evaluate(self.head, self.stream, split, self.splits[split], self.clips,
                        self.config.train.eval_batch_size, self.select, writers, faces, score,
                        fit, self.progress)

    # -- the whole run

    def fit(self) -> None:
        cfg = self.config.train
        rates = self.class_rates()
        self.au_pos_weight = self.positive_weights() if self.head.au_outputs else None
        self.progress(ProgressEvent("epochs", advance=self.epoch, total=cfg.epochs))
        while self.epoch < cfg.epochs and self.stopped != "early":
            began, waited = time.perf_counter(), self.stream.wait_seconds
            loss, examples = self.train_epoch(rates)
            if self.scheduler is not None:  # per epoch: its batches depend on the tables streamed
                self.scheduler.step()
            with self.average.applied(self.head):  # the weights scored are the ones kept
                scores, extra = self.evaluate(self.select, fit=True)
                self.epoch += 1
                f1 = {name: s.macro_f1 for name, s in scores.items()}
                score = selection_score(cfg.select_task, f1[self.head_class.primary],
                                        extra.get("val_au"), extra.get("val_va"))
                improved = self.stopping.update(self.epoch, score)
                if improved:
                    self.best_state = {k: v.detach().clone()
                                       for k, v in self.head.state_dict().items()}
            seconds = time.perf_counter() - began
            data_seconds = self.stream.wait_seconds - waited
            self.history.append({
                "epoch": self.epoch, "train_loss": loss, f"{self.select}_macro_f1": f1,
                "examples": examples,
                "seconds": seconds, "data_seconds": data_seconds, **extra,
            })
            row = self.log.end_epoch(self.history[-1], self.optimizer)  # before the checkpoint
            if self.stopping.exhausted:
                self.stopped = "early"
            elif self.epoch >= cfg.epochs:
                self.stopped = "epochs"
            self.dir.save_checkpoint(self.state())  # holds the best weights too
            if improved:
                self._save_best()
            self.progress(ProgressEvent("epochs", advance=1, info={
                "epoch": self.epoch, "loss": loss, "on": self.select,
                **{f"f1 {name}": value for name, value in f1.items()},
                "best": self.stopping.best_score, "data s": data_seconds, "s": seconds, "lr": row["lr"],
                "frames/s": row["frames_per_s"]}))
        if self.stopped is None:  # resumed with fewer epochs than already trained
            self.stopped = "epochs"
            self.dir.save_checkpoint(self.state())

    def _save_best(self) -> None:
        self.dir.save_best({"epoch": self.stopping.best_epoch, "config": to_dict(self.config),
                            "dims": {k: list(v) for k, v in self.dims.items()},
                            "model": self.best_state})

    def finish(self, resumed_from: int) -> RunRecord:
        """Predictions of the best epoch for val and test, metrics.json (last), curve.png."""
        self.head.load_state_dict(self.best_state)
        self._save_best()  # (again: an interruption may have come between checkpoint and best.pt)
        outputs = self.head_class.outputs
        # With select_on dev: the best epoch's scores on the dev slice, and what a head fits
        # there (fitted now, so the val and test predictions use it); with select_on val the val
        # pass itself fits.
        selection = self.evaluate("dev", fit=True) if self.select == "dev" else None
        scores: dict = {}
        extra: dict = {}
        for split in ("val", "test"):
            if not self.splits[split]:
                continue
            with contextlib.ExitStack() as stack:
                writers = {name: stack.enter_context(PredictionWriter(
                    prediction_path(self.run_dir, split, name))) for name in outputs}
                writers.update({name: stack.enter_context(AUPredictionWriter(
                    prediction_path(self.run_dir, split, name))) for name in self.head.au_outputs})
                writers.update({name: stack.enter_context(VAPredictionWriter(
                    prediction_path(self.run_dir, split, name))) for name in self.head.va_outputs})
                faces = stack.enter_context(FaceMaskWriter(face_mask_path(self.run_dir, split)))
                result = self.evaluate(split, writers, faces, score=split == "val",
                                       fit=split == self.select)
            if result is not None:
                scores, extra = result
        if selection is not None:  # what was fitted, on dev (its AU score stays the dev one's)
            extra = {**extra, **{k: v for k, v in selection[1].items()
                                 if k not in ("val_au", "val_va")}}
        plot_history(self.history,
                     f"{self.config.method}: training loss and {self.select} macro-F1",
                     self.dir.curve)
        if self.head.au_outputs and self.au_pos_weight is None:  # trained by an earlier call
            self.au_pos_weight = self.positive_weights()
        metrics = {
            "method": self.config.method,
            "outputs": list(outputs),
            "primary": self.head_class.primary,
            "best_epoch": self.stopping.best_epoch,
            "epochs_run": self.epoch,
            "stopped": self.stopped,
            "seed": self.config.seed,
            "val_macro_f1": {name: s.macro_f1 for name, s in scores.items()},
            "val_scores": {name: s.to_json() for name, s in scores.items()},
            **seven_class_record(self.config.task.classes, scores),
            "history": self.history,
            "splits": {split: [c.clip_id for c in clips] for split, clips in self.splits.items()
                       if split not in ("train", "dev") and clips},
            "features": self.features,
            "manifest_fingerprint": self.labels_fingerprint,
            "faceless_frames": FACE_RULE,
            "face_outputs": list(self.head.face_outputs),  # a head's config may set them
            "resumed_from": resumed_from,
            **selection_record(self.select, None if selection is None else selection[0],
                               self.splits, self.config.train, self.config.bag.member),
            **task_metrics(self.head, self.config.train.task_schedule,
                           self.config.train.select_task, self.au_pos_weight),
            **extra,
        }
        return self.dir.write_metrics(RunRecord.from_json(metrics, self.dir.metrics))
