"""The fine-tuning loop: seeded, deterministic, resumable, and DDP-aware (``torchrun``).

:func:`finetune` trains ``backbone + Linear(num_features, NUM_CLASSES)`` (or a mixture of experts,
``classifier.experts``; :mod:`pipeline.finetune.model`) on the labelled frames of the
**training split only** (validation manifests are never opened), selects its epoch on the same
train-dev slice of whole training videos the heads use (:func:`pipeline.training.folds.dev_slice`
with ``dev_fraction``/``dev_seed``), and writes the best epoch's backbone (with ``head = "dan"``,
DAN's heads of that epoch too, as ``dan_heads.safetensors``) as a weights folder
(:mod:`pipeline.features.weights_record`). Losses and class rates are the heads' own
(:func:`pipeline.training.losses.batch_loss`, :func:`pipeline.training.sampling.class_rates` and
:func:`~pipeline.training.sampling.draw`; ``sampling.interval`` keeps every k-th frame).

**AU task** (``tasks = ["expr", "au"]``, jin2021's multi-task face model): a linear AU head beside
the expression classifier, trained jointly on the same frames (loss = expression loss + the heads'
AU loss, :func:`pipeline.training.losses.au_batch_loss` with positive weights); only AU labels of
the AU training split count; the epoch is still selected on expression macro-F1; the AU head is
not written (stage one keeps the backbone only).

**Leakage guard.** A training clip whose AU split is val and that the manifests' guard did not mark
``exclude_from: au_val`` (the guard was ``off``) would leak into AU validation scores: it is left
out, and the record lists it. Clips the guard did mark are trained on as in the heads.

**Files.** ``OUT/`` receives only the weights and the record (their hash is stage one's cache key),
published together by one rename (:func:`pipeline.features.weights_record.publish_weights_folder`);
the working state lives beside it in ``OUT.train/``: ``owner.lock`` (one writer,
:func:`pipeline.locks.owner_lock`), ``checkpoint.pt`` (written aside and renamed after every
epoch: model, optimiser, best state, counters), ``history.json`` (per-epoch loss, dev F1,
seconds) and ``epochs.jsonl``/``epochs.csv`` (the same with step, lr, frames/s:
:mod:`pipeline.epoch_log`). Rerunning the same command resumes from the checkpoint; every random draw of an epoch
comes from ``(seed, epoch)`` (the plan, augmentation, dropout), so a run killed at any moment and
rerun writes the same bytes as one never interrupted. A changed config is refused unless
``restart``. SIGTERM/Ctrl-C unwind through ``KeyboardInterrupt``: the last complete checkpoint
stays.

**DDP.** Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains ``batch_size / world`` of
every step's samples (:func:`pipeline.finetune.plan.batches`) (gloo on CPU, NCCL on CUDA); rank 0
holds the lock and writes every file. With ``accumulate`` > 1 only the last micro-batch before a
step all-reduces the gradients (the others run under ``no_sync``).

**The step** is the training wing's (:class:`pipeline.training.step.Stepper`): accumulation,
clipping, the optimiser's and the per-step schedule's step, and with ``precision = "fp16"`` a
GradScaler (the loss scaled up, a step with overflowed gradients skipped; its state checkpointed).
Early stopping (:class:`pipeline.training.stopping.EarlyStopping`), the determinism set-up and
the optimiser factory are the wing's too, shared with stage two's heads. Every process scores the whole dev slice (the same numbers, so every
process takes the same early-stopping decision without communicating).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import io
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip, fingerprint
from pipeline.epoch_log import EpochLog
from pipeline.errors import PipelineError
from pipeline.features.weights_record import (
    WeightsRecord,
    check_replaceable,
    read_record,
    record_path,
    sha256_file,
    write_weights_folder,
)
from pipeline.finetune.backbone_choice import backbone_for
from pipeline.finetune.samples import Samples, au_pos_weight
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.checkpoint import check_resumable, read_checkpoint, recorded_config
from pipeline.finetune.model import Classifier, DANClassifier, autocast, freeze, logits_of, make_optimizer
from pipeline.finetune.plan import Dist, batches, epoch_plan
from pipeline.finetune.predict import loader, predict
from pipeline.finetune.split import au_only_training, dev_split, dev_warnings
from pipeline.locks import owner_lock
from pipeline.metrics.scores import macro_f1
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.training import sampling
from pipeline.training.determinism import deterministic
from pipeline.training.folds import SELECTED_ON
from pipeline.training.losses import au_batch_loss, batch_loss
from pipeline.training.schedules import build_schedule
from pipeline.training.step import Stepper
from pipeline.training.stopping import EarlyStopping
from pipeline.training.tasks import AU, EXPR, alternate, epoch_tasks

@dataclass
class FinetuneResult:
    out: Path
    record: WeightsRecord
    epochs_run: int
    resumed_from: int  # the epoch this call continued from (0: fresh)
    already_complete: bool
    seconds: float  # training time over all calls (history.json)
    warnings: list[str]  # one line each, for the user (a tiny dev slice)


def work_dir(out: Path) -> Path:
    """The working folder beside the weights folder (lock, checkpoint, history)."""
    return out.with_name(out.name + ".train")


def finetune(config: FinetuneConfig, out: str | Path, progress: ProgressFn = silent,
             restart: bool = False) -> FinetuneResult:
    """Fine-tune ``config.backbone`` and write the weights folder ``out`` (see the module doc)."""
    out = Path(out)
    check_replaceable(out)  # before training: the folder is replaced whole at the end
    if config.weights is not None and not Path(config.weights).exists():
        raise PipelineError(f"{config.weights}: no such initial weights file or folder (--weights)")
    dist = Dist.from_env()
    started = dist.world > 1 and not torch.distributed.is_initialized()
    if started:
        backend = "nccl" if config.device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    lock = owner_lock(work_dir(out) / "owner", f"fine-tune {out}") if dist.rank == 0 \
        else contextlib.nullcontext()
    try:
        with lock, deterministic(max(1, config.threads), warn_only=True):
            return _Finetune(config, out, dist, progress).run(restart)
    finally:
        if started:
            gc.collect()  # the DDP wrapper (its hooks make cycles) goes before its process group
            torch.distributed.destroy_process_group()


class _Finetune:
    """One call of :func:`finetune`: its state, epochs and files."""

    def __init__(self, config: FinetuneConfig, out: Path, dist: Dist, progress: ProgressFn) -> None:
        self.config, self.out, self.dist, self.progress = config, out, dist, progress
        self.work = work_dir(out)
        self.checkpoint_path = self.work / "checkpoint.pt"
        self.history_path = self.work / "history.json"
        device = config.device
        if device.startswith("cuda") and dist.world > 1:
            device = f"cuda:{dist.local_rank}"
        self.device = torch.device(device)
        self.train_clips, self.dev_clips, self.left_out = dev_split(config)
        self.backbone = backbone_for(config)
        self.train = self.backbone.samples(self.train_clips)
        self.dev = self.backbone.samples(self.dev_clips)
        if config.sampling.interval > 1:
            keep = self.train.frame % config.sampling.interval == 0
            self.train = Samples(self.train.clips, self.train.clip[keep], self.train.frame[keep],
                                 self.train.label[keep])
        if len(self.train):
            self.backbone.fit_input(self.train)
        if not len(self.train) or not len(self.dev):
            raise PipelineError(f"{config.manifests}: no usable labelled frames in the "
                                f"{'training' if not len(self.train) else 'dev'} clips "
                                f"({self.backbone.needs} needed)")
        self.keys = self.backbone.shape_keys(self.train)
        counts = sampling.class_counts(self.train.label, np.ones(len(self.train), dtype=bool))
        self.rates = sampling.class_rates(counts, config.sampling)
        # jin2021's alternation (task_schedule epoch/batch): the AU task trains on its own samples,
        # every usable frame with AU labels of the AU training split, AU-only clips included
        self.alternating = "au" in config.tasks and config.task_schedule != "joint"
        self.au_only_clips: list[Clip] = []
        self.au_train: Samples | None = None
        if self.alternating:
            self.au_only_clips = au_only_training(config)
            self.au_train = self.backbone.au_samples(self.train_clips + self.au_only_clips)
            if not len(self.au_train):
                raise PipelineError(f"{config.manifests}: task_schedule {config.task_schedule} but "
                                    "no usable training frame has AU labels of the AU training split")
            self.au_keys = self.backbone.shape_keys(self.au_train)
        self.au_pos_weight = self._au_pos_weight() if "au" in config.tasks else None
        self.saved_config = recorded_config(config)
        self.initial_sha = None if config.weights is None else sha256_file(config.weights)
        self.warnings = dev_warnings(self.dev_clips, len(self.dev))

    def _au_pos_weight(self) -> torch.Tensor:
        """``loss.au_pos_weight``, else the AU training frames' own (:func:`au_pos_weight`)."""
        if self.config.loss.au_pos_weight:
            return torch.tensor(self.config.loss.au_pos_weight, dtype=torch.float32)
        samples = self.au_train if self.au_train is not None else self.train
        return au_pos_weight(samples, self.config.manifests)

    # -- state

    def _build(self) -> None:
        torch.manual_seed(self.config.seed)
        backbone = self.backbone.build()
        freeze(backbone, tuple(self.config.frozen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1)  # the classifier's own stream
            if self.config.head == "dan":  # paper 001: DAN's heads on the backbone's map
                self.model = DANClassifier(backbone, self.backbone.num_features,
                                           self.config).to(self.device)
            else:
                self.model = Classifier(backbone, self.backbone.num_features,
                                        au="au" in self.config.tasks,
                                        classifier=self.config.classifier).to(self.device)
        self.optimizer = make_optimizer(self.model, self.config, self.backbone.model_name)
        # epochs.jsonl/.csv in OUT.train/ (never OUT/: its files are stage one's cache key)
        self.log = EpochLog(self.work, self.progress, write=self.dist.rank == 0)
        self.log.attach(self.optimizer)
        self.scheduler = build_schedule(self.optimizer, self.config.schedule, self.config.epochs,
                                        self._steps_per_epoch())
        self.stepper = Stepper(self.optimizer, self.model.parameters(),
                               accumulate=self.config.accumulate, grad_clip=self.config.grad_clip,
                               precision=self.config.precision, device=self.device,
                               scheduler=self.scheduler)
        self.stopping = EarlyStopping(self.config.patience, self.config.min_epochs)
        self.epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_heads: dict[str, torch.Tensor] | None = None  # head = "dan": DAN's heads too
        self.history: list[dict[str, Any]] = []
        self.complete = False

    def _steps_per_epoch(self) -> int:
        """Optimiser steps in an epoch, counted on the first epoch's plan (the schedule's unit)."""
        c = self.config
        plan, _ = epoch_plan(self.train, self.rates, c.seed, 1)
        steps = batches(self.keys[plan], c.batch_size, self.dist.world, self.dist.rank, c.seed, 1)
        return max(1, math.ceil(len(steps) / c.accumulate))

    def _state(self) -> dict[str, Any]:
        return {"config": self.saved_config, "epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "best_state": self.best_state,
                **({} if self.best_heads is None else {"best_heads": self.best_heads}),
                **self.stopping.state(bad_key="bad"),
                "history": self.history, "complete": self.complete, "epoch_log": self.log.rows,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                **({} if (scaler := self.stepper.state_dict()) is None else {"scaler": scaler})}

    def _load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.best_state = state["epoch"], state["best_state"]
        self.best_heads = state.get("best_heads")  # (none in an older DAN checkpoint)
        self.stopping.restore(state, bad_key="bad")
        self.stepper.load_state_dict(state.get("scaler"))
        self.history, self.complete = state["history"], state["complete"]
        self.log.restore(state.get("epoch_log"))  # (none in a checkpoint older than the log)

    def _resume(self, restart: bool) -> int:
        if restart or not self.checkpoint_path.exists():
            return 0
        state = read_checkpoint(self.checkpoint_path)
        check_resumable(state["config"], self.saved_config, self.out)
        self._load(state)
        return self.epoch

    # -- the loop

    def run(self, restart: bool) -> FinetuneResult:
        self._build()
        resumed = self._resume(restart)
        # complete and published; else (killed before publishing) the best state is published now
        if self.complete and record_path(self.out).is_file() and read_record(self.out):
            return self._result(resumed, already=True)
        ddp = self.model
        if self.dist.world > 1:
            ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        total = self.config.epochs
        self.progress(ProgressEvent("epochs", total=total))
        self.progress(ProgressEvent("epochs", advance=self.epoch))
        while not self.complete and self.epoch < total:
            self._epoch(ddp)
            row = self.log.end_epoch(self.history[-1], self.optimizer)  # before the checkpoint
            self.progress(ProgressEvent("epochs", advance=1, info=row))
            self.complete = self.stopping.exhausted or self.epoch >= total
            if self.dist.rank == 0:
                io.torch_save(self.checkpoint_path, self._state())
            self.dist.barrier()
        if self.dist.rank == 0:
            self._write()
        self.dist.barrier()
        return self._result(resumed, already=False)

    def _epoch(self, model: nn.Module) -> None:
        started = time.perf_counter()
        config, epoch = self.config, self.epoch + 1
        tasks = epoch_tasks(self.alternating, config.task_schedule, epoch - 1)
        # seeded before the loaders: each draws its base seed from torch's stream (as before)
        torch.manual_seed(int(np.random.SeedSequence([config.seed, epoch, 7]).generate_state(1)[0]))
        loaders, order, planned = {}, {}, 0
        if EXPR in tasks:
            plan, seeds = epoch_plan(self.train, self.rates, config.seed, epoch)
            steps = batches(self.keys[plan], config.batch_size, self.dist.world, self.dist.rank,
                            config.seed, epoch)
            loaders[EXPR] = iter(loader(self.backbone.dataset(self.train, plan, seeds), steps,
                                         config, self.device))
            order[EXPR], planned = [EXPR] * len(steps), len(plan)
        if AU in tasks:  # the AU task's samples, each once, in an order drawn from (seed, epoch)
            rng = np.random.default_rng([config.seed, epoch, 3])
            au_plan = rng.permutation(len(self.au_train))
            au_seeds = rng.integers(0, 2**31 - 1, size=len(au_plan))
            au_steps = batches(self.au_keys[au_plan], config.batch_size, self.dist.world,
                               self.dist.rank, config.seed, epoch)
            loaders[AU] = iter(loader(self.backbone.dataset(self.au_train, au_plan, au_seeds),
                                       au_steps, config, self.device))
            order[AU], planned = [AU] * len(au_steps), planned + len(au_plan)
        sequence = alternate(order.get(EXPR, []), order.get(AU, []))
        model.train()
        losses = []
        self.log.start_epoch(len(sequence))
        self.stepper.zero_grad()
        stepped: set[int] = set()
        for k, task in enumerate(sequence):
            x, y, au = next(loaders[task])
            # under DDP only a group's last micro-batch all-reduces (no_sync for the others)
            with self.stepper.micro_batch(model, k, len(sequence)):
                with autocast(config, self.device):
                    output = model(x.to(self.device))
                loss = self._loss(task, output, y, au)
                self.stepper.backward(loss)
            stepped.add(task)
            losses.append(float(loss.detach()))
            self.log.advance(1, len(y) * self.dist.world)  # (every process trains an equal share)
            if not self.stepper.closes_group(k, len(sequence)):
                continue  # accumulate the next batch's gradient first
            if self.alternating:  # the idle task's head gets no update at all (not even decay)
                idle = [h for t, h in ((EXPR, self.model.head), (AU, self.model.au_head))
                        if t not in stepped]
                for head in idle:
                    for p in head.parameters():
                        p.grad = None
            stepped = set()
            self.stepper.step()  # clip, step (fp16: scaled), the per-step schedule, clear
        predicted = predict(self.model, self.backbone, self.dev, config, self.device)
        score = macro_f1(self.dev.label, predicted)
        self.epoch = epoch
        if self.stopping.update(epoch, score):
            self.best_state = {k: v.detach().cpu().clone()
                               for k, v in self.model.backbone.state_dict().items()}
            if isinstance(self.model, DANClassifier):  # kept for fuse's head.init_from
                self.best_heads = {k: v.detach().cpu().clone()
                                   for k, v in self.model.head.state_dict().items()}
        self.history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else 0.0,
                             "dev_f1": float(score), "best": float(self.stopping.best_score),
                             "samples": int(planned), "s": time.perf_counter() - started})

    def _loss(self, task: int, output: torch.Tensor | tuple, y: torch.Tensor,
              au: torch.Tensor) -> torch.Tensor:
        """A micro-batch's loss: the expression loss (alternation's AU step: the AU loss alone),
        + DAN's affinity and partition losses, + the joint AU task's loss."""
        logits = logits_of(output).float()
        if task == AU:  # alternation: the AU loss alone
            loss = au_batch_loss(logits[:, NUM_CLASSES:], au.to(self.device), None,
                                 self.au_pos_weight)
        else:
            loss = batch_loss(logits[:, :NUM_CLASSES], y.to(self.device), None, self.config.loss)
        if isinstance(output, tuple):  # DAN: + affinity and partition losses
            loss = loss + self.model.head.auxiliary_loss(
                output[1].float(), output[2].float(), y.to(self.device))
        if self.au_pos_weight is not None and not self.alternating:  # the joint AU task
            loss = loss + au_batch_loss(logits[:, NUM_CLASSES:], au.to(self.device), None,
                                        self.au_pos_weight)
        return loss

    # -- output

    def _record(self) -> WeightsRecord:
        return WeightsRecord(
            family=self.backbone.family, model=self.backbone.model_name,
            preprocessing=self.backbone.preprocessing(), weights_sha256="",
            manifest_fingerprint=fingerprint(self.train_clips + self.dev_clips + self.au_only_clips),
            clips={"train": [c.clip_id for c in self.train_clips],
                   "dev": [c.clip_id for c in self.dev_clips],
                   **({"au_only": [c.clip_id for c in self.au_only_clips]}
                      if self.au_only_clips else {})},
            config=self.saved_config, selected_on=SELECTED_ON["dev"],
            selection_score=float(self.stopping.best_score), epoch=int(self.stopping.best_epoch),
            epochs_run=int(self.epoch), initial_weights=self.config.weights,
            initial_weights_sha256=self.initial_sha,
            leakage={"left_out_au_val_unguarded": self.left_out,
                     "trained_clips_excluded_from_au_val": sorted(
                         c.clip_id for c in self.train_clips if "au_val" in c.exclude_from)})

    def _write(self) -> None:
        assert self.best_state is not None, "a finished fine-tune has a best epoch"
        if self.best_heads is not None:  # head = "dan" (a timm backbone): its heads beside it
            write_weights_folder(self.out, self.best_state, self._record(), self.best_heads)
        else:
            self.backbone.write(self.out, self.best_state, self._record())
        io.write_json(self.history_path, {
            "epochs": self.history, "processes": self.dist.world,
            "seconds": sum(h["s"] for h in self.history),
            "au_pos_weight": None if self.au_pos_weight is None else self.au_pos_weight.tolist()})

    def _result(self, resumed: int, already: bool) -> FinetuneResult:
        record = read_record(self.out) if self.dist.rank == 0 else self._record()
        return FinetuneResult(self.out, record, self.epoch, resumed, already,
                              sum(h["s"] for h in self.history), self.warnings)
