"""One training loop for every head: seeded, deterministic, resumable, streaming from the store.

:func:`train` fits a registered head on the training clips, stops early on validation macro-F1
of the head's primary output, and writes a run directory::

    RUN/config.toml            the full FuseConfig (enough to reproduce the run)
    RUN/checkpoint.pt          last epoch: model, optimizer, RNG states, epoch, best score and
                               weights, history, config
    RUN/best.pt                the best epoch's weights, config and feature sizes (for inference)
    RUN/metrics.json           written last: the run is complete when it exists
    RUN/curve.png              training loss and validation macro-F1 per epoch
    RUN/predictions/<split>/<output>.npz   float32 [T, 8] per clip, every frame, val and test

**Threads.** ``train.threads`` defaults to 1: these heads multiply small matrices, where extra
intra-op threads gain little, and on a busy 2-core machine they spin against other processes
(an ``mfm`` epoch took 13 times longer with 2 threads than with 1 there). Raise it on a
dedicated many-core machine.

**Determinism.** The model is built right after ``torch.manual_seed(seed)``; all sampling draws
come from one ``numpy`` generator seeded with ``seed``; torch runs with
``use_deterministic_algorithms(True)``. The same config on the same machine gives the same
predictions bit for bit.

**Resume.** ``checkpoint.pt`` is written (atomically) after every epoch, with the torch and
numpy generator states, so rerunning the same command after an interruption continues from the
last finished epoch and ends exactly as an uninterrupted run would. A run whose saved config
differs from the new one is refused with a one-line error, unless ``force`` (continue with the
new config) or ``restart`` (discard the old run). ``train.epochs`` may change (raising it extends
a finished run, unless it had stopped early), and so may ``train.cache_mb``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from pipeline.config import from_dict, save_toml, to_dict
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion import sampling
from pipeline.fusion.data import ClipStream, FeatureRequest, Table, check_inputs, feature_keys
from pipeline.fusion.heads import Head, head_class
from pipeline.fusion.losses import LossConfig
from pipeline.fusion.sampling import SamplingConfig
from pipeline.fusion.windows import nearest_valid
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.predictions import PredictionWriter, prediction_path

OPTIMIZERS = ("adamw", "sgd")
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.json", "curve.png", "config.toml")
FACE_RULE = "nearest frame with a face (same clip; ties: the earlier frame)"


@dataclass
class TrainConfig:
    epochs: int = 30  # most epochs to train (raising it later extends a finished run)
    patience: int = 6  # stop after this many epochs without a better validation macro-F1
    batch_size: int = 0  # training examples per step; 0 = the head's own (64 frames, 16 windows)
    eval_batch_size: int = 1024  # frames per forward pass at inference
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    lr: float = 1e-3  # learning rate (constant: a schedule would tie the run to `epochs`)
    weight_decay: float = 0.01  # decoupled for AdamW, L2 for SGD
    momentum: float = 0.9  # SGD momentum
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    buffer_clips: int = 32  # clips per streamed group (samples are shuffled within a group)
    cache_mb: float = 1024.0  # keep clips read from the store in memory up to this many MiB
    threads: int = 1  # torch CPU threads; 0 = torch's default (one per core), see below
    device: str = "cpu"  # "cpu" or "cuda" (determinism is guaranteed on CPU)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise PipelineError(f"train.optimizer {self.optimizer!r}: choose from "
                                f"{', '.join(OPTIMIZERS)}")
        for name in ("epochs", "patience", "eval_batch_size", "buffer_clips"):
            if getattr(self, name) < 1:
                raise PipelineError(f"train.{name} {getattr(self, name)}: need at least 1")
        if self.batch_size < 0:
            raise PipelineError(f"train.batch_size {self.batch_size}: need >= 1 (or 0: the head's)")


@dataclass
class FuseConfig:
    method: str = "mfm"  # a registered head (pipeline.fusion.heads.registry())
    seed: int = 0  # seeds the model's initial weights and every sampling draw
    store: str = ""  # the feature store (stage one's output)
    manifests: str = ""  # the manifest directory the store was extracted from
    head: Any = None  # the method's own config dataclass (a table in TOML; defaults if absent)
    train: TrainConfig = field(default_factory=TrainConfig)  # the loop
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # which frames train, how often
    loss: LossConfig = field(default_factory=LossConfig)  # the per-frame loss

    def __post_init__(self) -> None:
        config_class = head_class(self.method).Config
        if self.head is None:
            self.head = config_class()
        elif isinstance(self.head, dict):  # from TOML, or after config.override()
            self.head = from_dict(config_class, self.head, f"head ({self.method})")
        elif not isinstance(self.head, config_class):
            raise PipelineError(f"head config {type(self.head).__name__} is not the config of "
                                f"method {self.method!r} ({config_class.__name__})")


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


# ---- small helpers ------------------------------------------------------------------------------


def _identity(config: FuseConfig, features: dict[str, str]) -> dict[str, Any]:
    """What must match for a run to resume: the config and the features. Not compared:
    ``train.epochs`` (raising it extends a run) and ``train.cache_mb`` (changes no result)."""
    saved = to_dict(config)
    for key in ("epochs", "cache_mb"):
        saved["train"].pop(key, None)
    return {"config": saved, "features": features}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


def predict_table(head: Head, table: Table, batch_size: int) -> dict[str, np.ndarray]:
    """Every output's probabilities for every row of ``table``, the faceless-frame rule applied."""
    probs = head.predict(table, batch_size)
    for name in head.face_outputs:
        for i in range(len(table.clip_ids)):
            rows = table.clip_rows(i)
            probs[name][rows] = probs[name][rows][nearest_valid(table.valid[rows])]
    return head.derive(probs)


def _split(clips: Sequence[Clip]) -> dict[str, list[Clip]]:
    out: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    for clip in clips:
        out[clip.split].append(clip)
    return out


def _curve(history: list[dict], outputs: tuple[str, ...], primary: str, path: Path) -> None:
    """Training loss and validation macro-F1 per epoch, as a PNG (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    loss_axis = figure.add_subplot(1, 1, 1)
    epochs = [h["epoch"] for h in history]
    loss_axis.plot(epochs, [h["train_loss"] for h in history], color="black", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    f1_axis = loss_axis.twinx()
    for name in outputs:
        f1_axis.plot(epochs, [h["val_macro_f1"][name] for h in history], marker="o", markersize=3,
                     linewidth=2.0 if name == primary else 1.0, label=f"val F1 {name}")
    f1_axis.set_ylabel("validation macro-F1")
    f1_axis.set_ylim(0, 1)
    handles = loss_axis.get_legend_handles_labels()
    more = f1_axis.get_legend_handles_labels()
    f1_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="center right", fontsize=8)
    figure.subplots_adjust(left=0.1, right=0.88, bottom=0.13, top=0.95)  # (tight_layout: slow)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp)
    os.replace(tmp, path)


# ---- the loop -----------------------------------------------------------------------------------


class _Run:
    """The state of one training run (one call of :func:`train`)."""

    def __init__(self, config: FuseConfig, run_dir: Path, clips: Sequence[Clip],
                 store: FeatureStore, progress: ProgressFn) -> None:
        self.config, self.run_dir, self.progress = config, run_dir, progress
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
        self.stream = ClipStream(store, self.request, self.dims, config.train.buffer_clips,
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
            "identity": _identity(self.config, self.features),
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
                                                             purity=self.request.purity),
                           self.dims, self.config.train.buffer_clips)
        counts = np.zeros(NUM_CLASSES, np.int64)
        for table in light.tables(self.splits["train"], train=True):
            counts += sampling.class_counts(table.labels, self.trainable(table))
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
                 score: bool = True):
        """Scores of every output on ``split`` (its labelled frames), or None without ``score``;
        writes the predictions if given writers."""
        self.head.eval()
        evaluator = self.head.evaluator()
        for table in self.stream.tables(self.splits[split]):
            probs = predict_table(self.head, table, self.config.train.eval_batch_size)
            if score:
                evaluator.add(probs, table.labels)
            if writers is not None:
                for i, clip_id in enumerate(table.clip_ids):
                    for name, writer in writers.items():
                        writer.add(clip_id, probs[name][table.clip_rows(i)])
            if writers is not None:  # the final pass (not every epoch's validation)
                self.progress(ProgressEvent(f"predict {split}", advance=len(table.clip_ids),
                                            total=len(self.splits[split])))
        return evaluator.finish() if score else None

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
            _atomic_save(self.state(), self.run_dir / "checkpoint.pt")  # holds the best weights too
            if improved:
                self._save_best()
            self.progress(ProgressEvent("epochs", advance=1, info={
                "epoch": self.epoch, "loss": loss,
                **{f"f1 {name}": value for name, value in f1.items()},
                "best": self.best_score, "data s": data_seconds, "s": seconds}))
        if self.stopped is None:  # resumed with fewer epochs than already trained
            self.stopped = "epochs"
            _atomic_save(self.state(), self.run_dir / "checkpoint.pt")

    def _save_best(self) -> None:
        _atomic_save({"epoch": self.best_epoch, "config": to_dict(self.config),
                      "dims": {k: list(v) for k, v in self.dims.items()},
                      "model": self.best_state}, self.run_dir / "best.pt")

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
                result = self.evaluate(split, writers, score=split == "val")
            if result is not None:
                scores, extra = result
        _curve(self.history, outputs, self.head_class.primary, self.run_dir / "curve.png")
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
        _atomic_json(metrics, self.run_dir / "metrics.json")
        return metrics


def _clear(run_dir: Path) -> None:
    """Remove what a run writes (and nothing else) from ``run_dir``."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    predictions = run_dir / "predictions"
    if predictions.is_dir():
        for path in sorted(predictions.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        predictions.rmdir()


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
    checkpoint = run_dir / "checkpoint.pt"
    if restart:
        _clear(run_dir)
    saved = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
    identity = _identity(config, run.features)
    if saved is not None and saved["identity"] != identity and not force:
        changed = _differences(saved["identity"]["config"], identity["config"])
        if saved["identity"]["features"] != identity["features"]:
            changed.append("the store's features (re-extracted)")
        raise PipelineError(f"{run_dir}: an existing run has another config ({', '.join(changed)}"
                            " differ); use --restart to discard it, --force to continue it with "
                            "this config, or --name for a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_toml(config, run_dir / "config.toml")
    with _deterministic(config.train.threads, config.train.device):
        run.build()
        if saved is not None:
            try:
                run.restore(saved)
            except (RuntimeError, ValueError, KeyError) as e:
                raise PipelineError(f"{checkpoint}: cannot continue this run with the new config "
                                    f"({str(e).splitlines()[0]}); use --restart") from None
        resumed_from = run.epoch
        more = run.stopped is None or (run.stopped == "epochs" and run.epoch < config.train.epochs)
        metrics_path = run_dir / "metrics.json"
        if not more and metrics_path.exists():
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            return _result(run, metrics, resumed_from, already_complete=True)
        if more:
            metrics_path.unlink(missing_ok=True)  # the run is incomplete again until it finishes
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

