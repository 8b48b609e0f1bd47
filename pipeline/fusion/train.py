"""One training loop for every head: seeded, deterministic, resumable, streaming from the store.

:func:`train` fits a registered head on the training clips, stops early on validation macro-F1
of the head's primary output, and writes a run directory (its files and the rules for resuming:
:mod:`pipeline.fusion.rundir`; the configs: :mod:`pipeline.fusion.config`).

**Fitting on validation.** A head may fit something on the validation predictions rather than by
gradient (the proportional head's m, n): after every epoch's validation pass the loop calls
:meth:`Head.fit_on` with the outputs of the labelled validation frames, then scores the head's
outputs derived with what it fitted. The final pass (best epoch) fits again, as the paper does.

**Threads.** ``train.threads`` defaults to 1: these heads multiply small matrices, where extra
intra-op threads gain little, and on a busy 2-core machine they spin against other processes
(an ``mfm`` epoch took 13 times longer with 2 threads than with 1 there). Raise it on a
dedicated many-core machine.

**Determinism.** The model is built right after ``torch.manual_seed(seed)``; all sampling draws
come from one ``numpy`` generator seeded with ``seed``; torch runs with
``use_deterministic_algorithms(True)``. The same config on the same machine gives the same
predictions bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from pipeline.config import save_toml, to_dict
from pipeline.data.frames import nearest_face
from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion import sampling
from pipeline.fusion.config import FuseConfig, TrainConfig
from pipeline.fusion.data import ClipStream, FeatureRequest, Table, check_inputs, feature_keys
from pipeline.fusion.heads import Head, head_class
from pipeline.fusion.rundir import FACE_RULE, RunDir, changes, identity
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.predictions import (
    FaceMaskWriter,
    PredictionWriter,
    face_mask_path,
    prediction_path,
)
from pipeline.scoring.report import plot_history


@dataclass
class RunResult:
    """What a finished :func:`train` call reports (the CLI prints it)."""

    run_dir: Path
    method: str
    outputs: tuple[str, ...]  # the head's outputs; predictions exist for each
    primary: str  # the output early stopping used
    val_macro_f1: dict[str, float]  # validation macro-F1 per output, best epoch
    best_epoch: int
    epochs_run: int  # epochs trained in total (over all resumptions)
    resumed_from: int  # the epoch this call continued from (0: a fresh run)
    already_complete: bool  # nothing to do: the run directory was already complete
    metrics: dict[str, Any]  # the content of metrics.json


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
    if config.optimizer == "sgd":
        return torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def predict_table(head: Head, table: Table, batch_size: int) -> dict[str, np.ndarray]:
    """Every output's probabilities for every row of ``table``, the faceless-frame rule applied."""
    probs = head.predict(table, batch_size)
    for name in head.face_outputs:
        for i in range(len(table.clip_ids)):
            rows = table.clip_rows(i)
            probs[name][rows] = probs[name][rows][nearest_face(table.valid[rows])]
    return head.derive(probs)


def _split(clips: Sequence[Clip]) -> dict[str, list[Clip]]:
    out: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    for clip in clips:
        out[clip.split].append(clip)
    return out


# ---- the loop -----------------------------------------------------------------------------------


class _Run:
    """The state of one training run (one call of :func:`train`)."""

    def __init__(self, config: FuseConfig, run_dir: Path, clips: Sequence[Clip],
                 store: FeatureStore, progress: ProgressFn) -> None:
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.dir = RunDir(run_dir)
        self.splits = _split(clips)
        if not self.splits["train"]:
            raise PipelineError(f"no training clips in {config.manifests or 'the manifests'}")
        if not self.splits["val"]:
            raise PipelineError(f"no validation clips in {config.manifests or 'the manifests'}: "
                                "early stopping needs them")
        self.head_class = head_class(config.method)
        self.request = self.head_class.request(config.head, config.sampling)
        self.dims = check_inputs(store, clips, self.request)
        self.features = feature_keys(store, self.splits["train"][0].clip_id, self.request)
        self.stream = ClipStream(store, self.request, self.dims, config.train.buffer_mb,
                                 config.train.cache_mb)
        self.device = torch.device(config.train.device)

    # -- state

    def build(self) -> None:
        torch.manual_seed(self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        self.head = self.head_class(self.config.head, self.dims).to(self.device)
        self.optimizer = _optimizer(self.head, self.config.train)
        self.epoch, self.best_score, self.best_epoch, self.bad_epochs = 0, -math.inf, 0, 0
        self.stopped: str | None = None
        self.history: list[dict] = []
        self.best_state: dict[str, torch.Tensor] = {}

    def state(self) -> dict[str, Any]:
        return {
            "identity": identity(self.config, self.features),
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

    def class_rates(self) -> np.ndarray:
        """Per-class draw rates from the training split's trainable frames (labels, faces, purity)."""
        light = ClipStream(self.stream.store, FeatureRequest(arrays=(), audio=self.request.audio,
                                                             purity=self.request.purity),
                           self.dims, self.config.train.buffer_mb)
        counts = np.zeros(NUM_CLASSES, np.int64)
        for table in light.tables(self.splits["train"], train=True):
            counts += sampling.class_counts(table.labels, self.head.trainable(table))
        if not counts.any():
            raise PipelineError("no training frame can train this head (labelled, with a face, "
                                "with audio and a pure enough window, as the head needs)")
        return sampling.class_rates(counts, self.config.sampling)

    def train_epoch(self, rates: np.ndarray) -> tuple[float, int]:
        self.head.train()
        cfg = self.config.train
        batch_size = cfg.batch_size or self.head_class.batch_size
        order = [self.splits["train"][i] for i in self.rng.permutation(len(self.splits["train"]))]
        total, weight, examples_seen = 0.0, 0, 0
        for table in self.stream.tables(order, train=True):
            counts = sampling.draw(table.labels, self.head.trainable(table), rates, self.rng)
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
                 faces: FaceMaskWriter | None = None, score: bool = True):
        """Scores of every output on ``split`` (its labelled frames), or None without ``score``;
        writes the predictions (and the face masks) if given writers.

        With ``score`` and a head that fits on validation, the model outputs of the labelled
        frames are kept, :meth:`Head.fit_on` fits on them, and the outputs derived with the fit
        are scored.
        """
        self.head.eval()
        evaluator = self.head.evaluator()
        fitting = score and self.head_class.fits_on_validation
        kept: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        for table in self.stream.tables(self.splits[split]):
            probs = predict_table(self.head, table, self.config.train.eval_batch_size)
            if fitting:
                keep = table.labels != UNLABELED
                kept.append(({name: probs[name][keep] for name in (self.head_class.model_outputs or self.head_class.outputs)},
                             table.labels[keep]))
            elif score:
                evaluator.add(probs, table.labels)
            if writers is not None:
                for i, clip_id in enumerate(table.clip_ids):
                    rows = table.clip_rows(i)
                    for name, writer in writers.items():
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
            evaluator.add(self.head.derive(outputs), labels)
        scores, extra = evaluator.finish()
        return scores, {**extra, **fitted}

    # -- the whole run

    def fit(self) -> None:
        cfg = self.config.train
        rates = self.class_rates()
        self.progress(ProgressEvent("epochs", advance=self.epoch, total=cfg.epochs))
        while self.epoch < cfg.epochs and self.stopped != "early":
            began, waited = time.perf_counter(), self.stream.wait_seconds
            loss, examples = self.train_epoch(rates)
            scores, extra = self.evaluate("val")
            self.epoch += 1
            f1 = {name: s.macro_f1 for name, s in scores.items()}
            score = f1[self.head_class.primary]
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
                self.best_state = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - began
            data_seconds = self.stream.wait_seconds - waited
            self.history.append({
                "epoch": self.epoch, "train_loss": loss, "val_macro_f1": f1, "examples": examples,
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
                "epoch": self.epoch, "loss": loss,
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
        scores: dict = {}
        extra: dict = {}
        for split in ("val", "test"):
            if not self.splits[split]:
                continue
            with contextlib.ExitStack() as stack:
                writers = {name: stack.enter_context(PredictionWriter(
                    prediction_path(self.run_dir, split, name))) for name in outputs}
                faces = stack.enter_context(FaceMaskWriter(face_mask_path(self.run_dir, split)))
                result = self.evaluate(split, writers, faces, score=split == "val")
            if result is not None:
                scores, extra = result
        plot_history(self.history, f"{self.config.method}: training loss and validation macro-F1",
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
            "history": self.history,
            "splits": {split: [c.clip_id for c in clips] for split, clips in self.splits.items()
                       if split != "train" and clips},
            "features": self.features,
            "faceless_frames": FACE_RULE,
            "face_outputs": list(self.head_class.face_outputs),
            "resumed_from": resumed_from,
            **extra,
        }
        self.dir.write_metrics(metrics)
        return metrics


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
    new_identity = identity(config, run.features)
    if saved is not None and saved["identity"] != new_identity and not force:
        changed = changes(saved["identity"], new_identity)
        raise PipelineError(f"{run_dir}: an existing run has another config ({', '.join(changed)}"
                            " differ); use --restart to discard it, --force to continue it with "
                            "this config, or --name for a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_toml(config, run.dir.config)
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
    )

