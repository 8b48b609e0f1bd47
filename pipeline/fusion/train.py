"""One training loop for every head: seeded, deterministic, resumable, streaming from the store.

:func:`train` fits a registered head on the training clips, stops early on the score of the head's
primary output on the *selection* clips (macro-F1, or AU mean F1 with ``train.select_task =
"au"``), and writes a run directory (its files and the rules for resuming:
:mod:`pipeline.fusion.rundir`; the configs: :mod:`pipeline.fusion.config`).

**Selection on held-out training clips.** By default (``train.select_on = "dev"``) the selection
clips are a dev slice of the training split (``train.dev_fraction`` of its frames per class, whole
videos, seeded by ``train.dev_seed``; :func:`pipeline.fusion.folds.dev_slice`), which does not
train: the run never reads a validation label to choose anything, so its validation scores are
honest. ``train.select_on = "val"`` selects on the validation clips as ABAW papers do; then
metrics.json says ``"selected_on": "val"`` and stage three marks the run's val scores as fitted on
the same frames. Either way the predictions of every val (and test) clip are written.

**Fitting on the selection clips.** A head may fit something on its predictions rather than by
gradient (the proportional head's m, n): after every epoch's selection pass the loop calls
:meth:`Head.fit_on` with the outputs of the labelled selection frames, then scores the head's
outputs derived with what it fitted. The final pass (best epoch) fits again, as the paper does,
before the val and test predictions are written with the fitted choice.

**Bagging members** (``bag.member >= 0``, set by ``stages/fuse.py``) train on a bootstrap resample
of the training videos left after the dev slice, drawn from the member's own seed
(:func:`pipeline.fusion.folds.bootstrap`); they select on the same dev slice as a single run.

**Multi-task heads** (expressions and action units) train and score through
:mod:`pipeline.fusion.tasks`; they also write ``predictions/<split>/au.npz``.

**Threads.** ``train.threads`` defaults to 1: these heads multiply small matrices, where extra
intra-op threads gain little, and on a busy 2-core machine they spin against other processes
(an ``mfm`` epoch took 13 times longer with 2 threads than with 1 there). Raise it on a
dedicated many-core machine.

**Determinism.** The model is built right after ``torch.manual_seed(seed)``; all sampling draws
come from one ``numpy`` generator seeded with ``seed``; torch runs with
``use_deterministic_algorithms(True)``. The same config on the same machine gives the same
predictions bit for bit.

**Size.** This file is longer than one purpose usually needs (about 500 lines) because the loop's
state lives in one class (:class:`_Run`: epochs, selection, resume, the final predictions), and
cutting it would spread that state over modules that all reach into it; what stands on its own is
elsewhere already (configs, the run directory, folds, multi-task epochs, bagging).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from pipeline.config import to_dict
from pipeline.data.frames import nearest_face
from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.data.manifest import Clip, fingerprint
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion import folds, moe, sampling
from pipeline.fusion.config import SELECTED_ON, FuseConfig, TrainConfig
from pipeline.fusion.data import (
    OTHER,
    ClipStream,
    FeatureRequest,
    Table,
    check_inputs,
    feature_keys,
)
from pipeline.fusion.heads import Head, head_class
from pipeline.fusion.rundir import FACE_RULE, RunDir, changes, identity
from pipeline.fusion.tasks import (
    AUEvaluator,
    au_pos_weight,
    in_split,
    run_splits as task_splits,
    selection_score,
    split_labels,
    task_metrics,
    train_epoch_tasks,
)
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.runs.predictions import (
    AUPredictionWriter,
    FaceMaskWriter,
    PredictionWriter,
    face_mask_path,
    prediction_path,
)
from pipeline.metrics.scores import seven_class_from_confusion
from pipeline.runs.plots import plot_history


@dataclass
class RunResult:
    """What a finished :func:`train` call reports (the CLI prints it)."""

    run_dir: Path
    method: str
    outputs: tuple[str, ...]  # the head's outputs; predictions exist for each
    primary: str  # the output early stopping used
    val_macro_f1: dict[str, float]  # validation macro-F1 per output, best epoch ({}: no val clips)
    best_epoch: int
    epochs_run: int  # epochs trained in total (over all resumptions)
    resumed_from: int  # the epoch this call continued from (0: a fresh run)
    already_complete: bool  # nothing to do: the run directory was already complete
    metrics: dict[str, Any]  # the content of metrics.json
    val_au: dict[str, Any] | None = None  # AU scores at 0.5, best epoch (multi-task runs)


@contextlib.contextmanager
def _deterministic(threads: int, device: str) -> Iterator[None]:
    """Deterministic torch kernels (and a thread count) for the duration of a run.

    On CUDA some kernels have no deterministic version: torch then warns instead of failing.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=not device.startswith("cpu"))
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def _optimizer(head: Head, config: TrainConfig) -> torch.optim.Optimizer:
    groups = head.parameter_groups()  # a head may give some parameters their own lr
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


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


def predict_table(head: Head, table: Table, batch_size: int) -> dict[str, np.ndarray]:
    """Every output's probabilities for every row of ``table``, the faceless-frame rule applied."""
    probs = head.predict(table, batch_size)
    for name in head.filled_outputs:
        for i in range(len(table.clip_ids)):
            rows = table.clip_rows(i)
            probs[name][rows] = probs[name][rows][nearest_face(table.valid[rows])]
    return head.derive(probs)


def run_splits(clips: Sequence[Clip], config: FuseConfig,
               tasks: Sequence[str] = ("expr",)) -> dict[str, list[Clip]]:
    """The clips of a run by role: ``train`` (what trains; a bootstrap resample for a bagging
    member), ``dev`` (the held-out training clips selection uses; empty with select_on val),
    ``val`` and ``test`` (predicted and written). A clip is in a split when it is there for one
    of the run's ``tasks`` (:func:`pipeline.fusion.tasks.run_splits`)."""
    out = {"dev": [], **task_splits(clips, tasks)}
    if config.train.select_on == "dev" and out["train"]:
        out["train"], out["dev"] = folds.dev_slice(out["train"], config.train.dev_fraction,
                                                   config.train.dev_seed)
    if config.bag.member >= 0 and out["train"]:
        # Its own stream (not the run's generator): the resample is fixed before the model is built.
        out["train"] = folds.bootstrap(out["train"], seed=(config.seed, 1))
    return out


# ---- the loop -----------------------------------------------------------------------------------


class _Run:
    """The state of one training run (one call of :func:`train`)."""

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
        if not self.splits["train"]:
            raise PipelineError(f"no training clips in {config.manifests or 'the manifests'}")
        if not self.splits[self.select]:
            raise PipelineError(f"no {self.select} clips in {config.manifests or 'the manifests'}:"
                                " early stopping needs them")
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
        moe.install(self.head, self.config.classifier)
        self.head = self.head.to(self.device)
        if self.config.task.classes == 7:
            mask_other(self.head)
        self.optimizer = _optimizer(self.head, self.config.train)
        self.epoch, self.best_score, self.best_epoch, self.bad_epochs = 0, -math.inf, 0, 0
        self.stopped: str | None = None
        self.history: list[dict] = []
        self.best_state: dict[str, torch.Tensor] = {}

    def state(self) -> dict[str, Any]:
        return {
            "identity": identity(self.config, self.features, self.labels_fingerprint),
            "config": to_dict(self.config),
            "dims": {k: list(v) for k, v in self.dims.items()},
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "history": self.history,
            "model": self.head.state_dict(),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.head.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        self.rng.bit_generator.state = json.loads(saved["numpy_rng"])
        self.epoch, self.best_score = saved["epoch"], saved["best_score"]
        self.best_epoch, self.bad_epochs = saved["best_epoch"], saved["bad_epochs"]
        self.stopped, self.history = saved["stopped"], saved["history"]
        self.best_state = saved["best_model"]

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

    def train_epoch(self, rates: np.ndarray) -> tuple[float, int]:
        if self.head.au_outputs:
            return train_epoch_tasks(self, rates)
        self.head.train()
        cfg = self.config.train
        batch_size = cfg.batch_size or self.head_class.batch_size
        order = [self.splits["train"][i] for i in self.rng.permutation(len(self.splits["train"]))]
        total, weight, examples_seen = 0.0, 0, 0
        for table in self.stream.tables(order, train=True):
            counts = sampling.draw(table.labels, self.trainable(table), rates, self.rng)
            examples = self.head.examples(table, counts, self.rng)
            examples = examples[self.rng.permutation(examples.size)]
            for begin in range(0, examples.size, batch_size):
                chunk = examples[begin:begin + batch_size]
                inputs, targets, weights = self.head.batch(table, chunk, counts)
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                targets = targets.to(self.device)
                weights = None if weights is None else weights.to(self.device)
                loss = self.head.loss(self.head(inputs), targets, weights, self.config.loss)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.head.parameters(), cfg.grad_clip)
                self.optimizer.step()
                total += float(loss.detach()) * chunk.size
                weight += chunk.size
            examples_seen += examples.size
        return total / max(weight, 1), examples_seen

    def evaluate(self, split: str, writers: dict[str, PredictionWriter] | None = None,
                 faces: FaceMaskWriter | None = None, score: bool = True, fit: bool = False):
        """Scores of every output on ``split`` (its labelled frames), or None without ``score``;
        writes the predictions (and the face masks) if given writers.

        With ``fit`` (only ever on the selection split) and a head that fits on its predictions,
        the model outputs of the labelled frames are kept, :meth:`Head.fit_on` fits on them, and
        the outputs derived with the fit are scored.
        """
        assert not fit or split == self.select, (split, self.select)
        self.head.eval()
        evaluator = self.head.evaluator()
        au_evaluator = AUEvaluator() if self.head.au_outputs and score else None
        fitting = score and fit and self.head_class.fits_on_validation
        kept: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        for table in self.stream.tables(self.splits[split]):
            probs = predict_table(self.head, table, self.config.train.eval_batch_size)
            if fitting:
                keep = table.labels != UNLABELED
                kept.append(({name: probs[name][keep] for name in (self.head_class.model_outputs or self.head_class.outputs)},
                             table.labels[keep]))
            elif au_evaluator is not None:
                # The dev slice is made of training clips: their labels are the training split's.
                labels, au_labels = split_labels(table, self.clips,
                                                 "train" if split == "dev" else split)
                evaluator.add(probs, labels)
                au_evaluator.add(probs[self.head.au_outputs[0]], au_labels)
            elif score:
                evaluator.add(probs, table.labels)
            if writers is not None:
                for i, clip_id in enumerate(table.clip_ids):
                    rows = table.clip_rows(i)
                    for name, writer in writers.items():
                        task = "au" if name in self.head.au_outputs else "expr"
                        if in_split(self.clips[clip_id], task, split):
                            writer.add(clip_id, probs[name][rows])
                    if faces is not None:
                        faces.add(clip_id, table.valid[rows].astype(bool))
            if writers is not None:  # the final pass (not every epoch's validation)
                self.progress(ProgressEvent(f"predict {split}", advance=len(table.clip_ids),
                                            total=len(self.splits[split])))
        if not score:
            return None
        fitted: dict[str, Any] = {}
        if fitting:
            outputs = {name: np.concatenate([k[0][name] for k in kept])
                       for name in (self.head_class.model_outputs or self.head_class.outputs)}
            labels = np.concatenate([k[1] for k in kept])
            fitted = self.head.fit_on(outputs, labels)
            # Each table a head fits says where: "train-dev" or "val" (stage three reads it).
            fitted = {k: {**v, "fitted_on": SELECTED_ON[self.select]} if isinstance(v, dict) else v
                      for k, v in fitted.items()}
            evaluator.add(self.head.derive(outputs), labels)
        scores, extra = evaluator.finish()
        if au_evaluator is not None:
            extra["val_au"] = au_evaluator.finish().to_json()
        return scores, {**extra, **fitted}

    # -- the whole run

    def fit(self) -> None:
        cfg = self.config.train
        rates = self.class_rates()
        self.au_pos_weight = au_pos_weight(self) if self.head.au_outputs else None
        self.progress(ProgressEvent("epochs", advance=self.epoch, total=cfg.epochs))
        while self.epoch < cfg.epochs and self.stopped != "early":
            began, waited = time.perf_counter(), self.stream.wait_seconds
            loss, examples = self.train_epoch(rates)
            scores, extra = self.evaluate(self.select, fit=True)
            self.epoch += 1
            f1 = {name: s.macro_f1 for name, s in scores.items()}
            score = selection_score(cfg.select_task, f1[self.head_class.primary],
                                    extra.get("val_au"))
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
                self.best_state = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - began
            data_seconds = self.stream.wait_seconds - waited
            self.history.append({
                "epoch": self.epoch, "train_loss": loss, f"{self.select}_macro_f1": f1,
                "examples": examples,
                "seconds": seconds, "data_seconds": data_seconds, **extra,
            })
            if self.bad_epochs >= cfg.patience:
                self.stopped = "early"
            elif self.epoch >= cfg.epochs:
                self.stopped = "epochs"
            self.dir.save_checkpoint(self.state())  # holds the best weights too
            if improved:
                self._save_best()
            self.progress(ProgressEvent("epochs", advance=1, info={
                "epoch": self.epoch, "loss": loss, "on": self.select,
                **{f"f1 {name}": value for name, value in f1.items()},
                "best": self.best_score, "data s": data_seconds, "s": seconds}))
        if self.stopped is None:  # resumed with fewer epochs than already trained
            self.stopped = "epochs"
            self.dir.save_checkpoint(self.state())

    def _save_best(self) -> None:
        self.dir.save_best({"epoch": self.best_epoch, "config": to_dict(self.config),
                            "dims": {k: list(v) for k, v in self.dims.items()},
                            "model": self.best_state})

    def finish(self, resumed_from: int) -> dict[str, Any]:
        """Predictions of the best epoch for val and test, metrics.json (last), curve.png."""
        self.head.load_state_dict(self.best_state)
        self._save_best()  # (again: an interruption may have come between checkpoint and best.pt)
        outputs = self.head_class.outputs
        selection = self._final_selection()
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
                faces = stack.enter_context(FaceMaskWriter(face_mask_path(self.run_dir, split)))
                result = self.evaluate(split, writers, faces, score=split == "val",
                                       fit=split == self.select)
            if result is not None:
                scores, extra = result
        if selection is not None:  # what was fitted, on dev (its AU score stays the dev one's)
            extra = {**extra, **{k: v for k, v in selection[1].items() if k != "val_au"}}
        plot_history(self.history,
                     f"{self.config.method}: training loss and {self.select} macro-F1",
                     self.dir.curve)
        metrics = {
            "method": self.config.method,
            "outputs": list(outputs),
            "primary": self.head_class.primary,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "stopped": self.stopped,
            "seed": self.config.seed,
            "val_macro_f1": {name: s.macro_f1 for name, s in scores.items()},
            "val_scores": {name: s.to_json() for name, s in scores.items()},
            **self._seven_class_record(scores),
            "history": self.history,
            "splits": {split: [c.clip_id for c in clips] for split, clips in self.splits.items()
                       if split not in ("train", "dev") and clips},
            "features": self.features,
            "manifest_fingerprint": self.labels_fingerprint,
            "faceless_frames": FACE_RULE,
            "face_outputs": list(self.head.face_outputs),  # a head's config may set them
            "resumed_from": resumed_from,
            **self._selection_record(selection),
            **task_metrics(self),
            **extra,
        }
        self.dir.write_metrics(metrics)
        return metrics

    def _seven_class_record(self, scores: dict) -> dict[str, Any]:
        """task.classes = 7: the classes, and val macro-F1 over the 7 (``val_macro_f1`` averages
        all 8, Other at 0, so it is 7/8 of that; selection is the same either way)."""
        if self.config.task.classes != 7:
            return {}
        return {"classes": 7, "val_macro_f1_7class": {
            name: seven_class_from_confusion(s.confusion)[0] for name, s in scores.items()}}

    # -- selection on the dev slice (kept apart from the loop above)

    def _final_selection(self):
        """With select_on dev: the best epoch's scores on the dev slice, and what a head fits
        there (fitted now, so the val and test predictions use it). None with select_on val
        (the val pass itself fits)."""
        if self.select != "dev":
            return None
        return self.evaluate("dev", fit=True)

    def _selection_record(self, selection) -> dict[str, Any]:
        """metrics.json's account of where the run selected its epoch and fitted choices."""
        record: dict[str, Any] = {"selected_on": SELECTED_ON[self.select]}
        if selection is not None:
            scores, _ = selection
            record["dev_macro_f1"] = {name: s.macro_f1 for name, s in scores.items()}
            record["dev_clips"] = [c.clip_id for c in self.splits["dev"]]
            record["dev"] = {"fraction": self.config.train.dev_fraction,
                             "seed": self.config.train.dev_seed}
        if self.config.bag.member >= 0:
            record["bootstrap"] = [c.clip_id for c in self.splits["train"]]
        return record


def train(config: FuseConfig, run_dir: str | Path, clips: Sequence[Clip], store: FeatureStore,
          progress: ProgressFn = silent, restart: bool = False, force: bool = False) -> RunResult:
    """Train ``config.method`` on ``clips`` (all splits; train, val and optionally test) from
    ``store`` into ``run_dir``, resuming what is there.

    ``progress`` gets an ``"epochs"`` event after each epoch's checkpoint is written (so an
    exception raised there, like an interruption, loses nothing), and a ``"predict <split>"``
    event per group of clips predicted.
    """
    run_dir = Path(run_dir)
    run = _Run(config, run_dir, clips, store, progress)
    if restart:
        run.dir.clear()
    saved = run.dir.load_checkpoint()
    new_identity = identity(config, run.features, run.labels_fingerprint)
    if saved is not None and "labels" not in saved["identity"]:
        new_identity.pop("labels", None)  # a checkpoint written before labels were part of it
    changed = [] if saved is None else changes(saved["identity"], new_identity)
    if changed and not force:
        raise PipelineError(f"{run_dir}: an existing run has another config ({', '.join(changed)}"
                            " differ); use --restart to discard it, --force to continue it with "
                            "this config, or --name for a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    with _deterministic(config.train.threads, config.train.device):
        run.build()
        if saved is not None:
            try:
                run.restore(saved)
            except (RuntimeError, ValueError, KeyError) as e:
                raise PipelineError(f"{run.dir.checkpoint}: cannot continue this run with the new config "
                                    f"({str(e).splitlines()[0]}); use --restart") from None
        resumed_from = run.epoch
        more = run.stopped is None or (run.stopped == "epochs" and run.epoch < config.train.epochs)
        if not more and run.dir.metrics.exists():
            metrics = run.dir.read_metrics()
            return _result(run, metrics, resumed_from, already_complete=True)
        if more:
            run.dir.metrics.unlink(missing_ok=True)  # the run is incomplete again until it finishes
            if run.stopped == "epochs":
                run.stopped = None
            run.fit()
        metrics = run.finish(resumed_from)
    return _result(run, metrics, resumed_from, already_complete=False)


def _result(run: _Run, metrics: dict, resumed_from: int, already_complete: bool) -> RunResult:
    return RunResult(
        run_dir=run.run_dir,
        method=run.config.method,
        outputs=run.head_class.outputs,
        primary=run.head_class.primary,
        val_macro_f1=dict(metrics["val_macro_f1"]),
        best_epoch=int(metrics["best_epoch"]),
        epochs_run=int(metrics["epochs_run"]),
        resumed_from=resumed_from,
        already_complete=already_complete,
        metrics=metrics,
        val_au=metrics.get("val_au"),
    )

