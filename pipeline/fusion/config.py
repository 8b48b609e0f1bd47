"""Stage two's configuration: the training loop (:class:`TrainConfig`) and a run (:class:`FuseConfig`).

:func:`build_config` is the one way to make a run's config (through :func:`pipeline.config.build`):
the method's defaults < a paper's preset (:mod:`pipeline.fusion.presets`) < a TOML file (e.g. a
run's ``config.toml``) < ``key=value`` overrides < the command's own options (method, store,
manifests, seed). Each config checks itself in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.config import build, from_dict, read_toml
from pipeline.errors import PipelineError
from pipeline.training.folds import SELECT_ON
from pipeline.training.config import ClassifierConfig
from pipeline.training.losses import LossConfig
from pipeline.fusion.presets import check_extraction, preset_overrides
from pipeline.training.sampling import SamplingConfig
from pipeline.training.schedules import ScheduleConfig


class Optimizer(str, Enum):
    """The optimizers of ``train.optimizer``."""

    adamw = "adamw"
    sgd = "sgd"


OPTIMIZERS = tuple(o.value for o in Optimizer)
SCHEDULES = ("batch", "epoch", "joint")  # train.task_schedule (pipeline.fusion.tasks)
SELECT_TASKS = ("expr", "au", "va")  # train.select_task: the task whose score selects the epoch


@dataclass
class BagConfig:
    """Soft-voting bagging (paper 001): ``k`` members of one head, each trained on a bootstrap
    resample of the training videos, their probabilities averaged (see ``stages/fuse.py``)."""

    k: int = 0  # members; 0 = no bagging
    seed: int = 0  # with the run's seed, seeds every member's weights, sampling and resample
    member: int = -1  # set in a member's own config: it is member i (-1: not a member)

    def __post_init__(self) -> None:
        if self.k < 0 or self.k == 1:
            raise PipelineError(f"bag.k {self.k}: need 0 (no bagging) or 2 or more members")
        if self.k and self.member >= 0:
            raise PipelineError("bag.member is set in a member's config, where bag.k is 0")


@dataclass
class ClassesConfig:
    """The expression classes a run learns (the ``task`` table)."""

    # 8: the ABAW 2022+ classes. 7: the ABAW 2020/2021 track's (no Other): frames annotated Other
    # are unlabelled for training, selection and the run's own scores, and the expression
    # outputs never predict Other (its logit is masked: probability 0 in the predictions).
    classes: int = 8

    def __post_init__(self) -> None:
        if self.classes not in (7, 8):
            raise PipelineError(f"task.classes {self.classes}: choose 8 (with Other) or 7 "
                                "(without, as the ABAW 2021 track)")


def member_seed(seed: int, bag_seed: int, member: int) -> int:
    """Member ``member``'s own seed: independent streams for every (run seed, bag seed, member)."""
    return int(np.random.SeedSequence([seed, bag_seed, member]).generate_state(1)[0] >> 1)


@dataclass
class TrainConfig:
    epochs: int = 30  # most epochs to train (raising it later extends a finished run)
    patience: int = 6  # stop after this many epochs without a better selection macro-F1
    min_epochs: int = 0  # patience counts only after this many epochs (0: from the first)
    batch_size: int = 0  # training examples per step; 0 = the head's own (64 frames, 16 windows)
    eval_batch_size: int = 1024  # frames per forward pass at inference
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    lr: float = 1e-3  # learning rate (schedule: its peak)
    # learning-rate schedule (pipeline.training.schedules), stepped once per epoch; the default,
    # constant without warmup, leaves the optimiser as it was (a schedule ties a run to `epochs`)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    weight_decay: float = 0.01  # decoupled for AdamW, L2 for SGD
    momentum: float = 0.9  # SGD momentum
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    # Score, select and write an exponential moving average of the weights over about this many
    # epochs' worth of examples (pipeline.fusion.averaging; 0: the weights themselves)
    ema_epochs: float = 1.0
    # MiB of features streamed at once: groups of consecutive clips of up to a third of it
    # (samples are shuffled within a group; a longer clip is a group of its own)
    buffer_mb: float = 1536.0
    cache_mb: float = 1024.0  # keep clips read from the store in memory up to this many MiB
    # torch CPU threads; 0 = torch's default (one per core), see train.py. 1 by default: on the
    # 2-core machine this project is built on, a one-epoch mfm run on the demo store took 5.3 s
    # wall / 1.1 s CPU with 1 thread and 47 s / 11 s with 2 (tests/bench/bench_train_threads.py).
    # Results are bit-identical for a given thread count, not across thread counts.
    threads: int = 1
    device: str = "cpu"  # "cpu" or "cuda" (determinism is guaranteed on CPU)
    # Where the epoch and the head's own choices (the proportional m,n) are selected: "dev", a
    # held-out slice of the training clips (whole videos; pipeline.training.folds.dev_slice; a
    # multi-task run's: the expression-only run's dev videos with all their clips), or
    # "val", the validation clips (then every val score of the run is optimistic, and says so).
    select_on: str = "dev"
    dev_fraction: float = 0.2  # share of the training frames (per class) held out as the dev slice
    dev_seed: int = 0  # seeds the dev slice (not `seed`: runs of several seeds share one slice)
    # train on expression labels of fewer than two classes (refused by default: it selects at
    # macro-F1 0), with a warning (pipeline.training.class_check)
    allow_single_class: bool = False
    # Multi-task heads (head.tasks = ["expr", "au"]), see pipeline.fusion.tasks: how the two tasks
    # take turns, "batch" (alternate batch by batch), "epoch" (epoch by epoch) or "joint" (every
    # batch mixes both, the sum of the two losses); and the score early stopping follows, "expr"
    # (macro-F1 of the primary output), "au" (AU mean F1 at threshold 0.5) or "va" (VA mean CCC;
    # head.tasks with "va": any of expr, au, va take turns the same way).
    task_schedule: str = "batch"
    select_task: str = "expr"

    def __post_init__(self) -> None:
        if self.select_on not in SELECT_ON:
            raise PipelineError(f"train.select_on {self.select_on!r}: choose from "
                                f"{', '.join(SELECT_ON)}")
        if not 0.0 < self.dev_fraction < 1.0:
            raise PipelineError(f"train.dev_fraction {self.dev_fraction}: need 0 < f < 1")
        if self.task_schedule not in SCHEDULES:
            raise PipelineError(f"train.task_schedule {self.task_schedule!r}: choose from "
                                f"{', '.join(SCHEDULES)}")
        if self.select_task not in SELECT_TASKS:
            raise PipelineError(f"train.select_task {self.select_task!r}: choose from "
                                f"{', '.join(SELECT_TASKS)}")
        if self.optimizer not in OPTIMIZERS:
            raise PipelineError(f"train.optimizer {self.optimizer!r}: choose from "
                                f"{', '.join(OPTIMIZERS)}")
        if not self.buffer_mb > 0:
            raise PipelineError(f"train.buffer_mb {self.buffer_mb}: need a positive size")
        if self.min_epochs < 0:
            raise PipelineError(f"train.min_epochs {self.min_epochs}: need >= 0")
        for name in ("epochs", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise PipelineError(f"train.{name} {getattr(self, name)}: need at least 1")
        if not self.ema_epochs >= 0:
            raise PipelineError(f"train.ema_epochs {self.ema_epochs}: need >= 0 (0: off)")
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
    bag: BagConfig = field(default_factory=BagConfig)  # bagging (off unless bag.k >= 2)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # mixture of experts
    task: ClassesConfig = field(default_factory=ClassesConfig)  # 8 or 7 expression classes

    def __post_init__(self) -> None:
        # Imported here: the head registry imports torch, and the CLI builds configs without it.
        from pipeline.fusion.heads import head_class

        config_class = head_class(self.method).Config
        if self.head is None:
            self.head = config_class()
        elif isinstance(self.head, dict):  # from TOML, or after config.override()
            self.head = from_dict(config_class, self.head, f"head ({self.method})")
        elif not isinstance(self.head, config_class):
            raise PipelineError(f"head config {type(self.head).__name__} is not the config of "
                                f"method {self.method!r} ({config_class.__name__})")
        if self.loss.on == "fused" and not head_class(self.method).fused_loss:
            raise PipelineError(f"loss.on = fused: method {self.method!r} has no proportional "
                                "fusion to train (gcsa and proportional have)")
        if self.task.classes == 7 and self.loss.label_smoothing:
            raise PipelineError("loss.label_smoothing with task.classes = 7: smoothing would put "
                                "weight on the masked Other class; set one of them back")


def build_config(method: str, store: str | Path, manifests: str | Path, preset: str | None = None,
                 config_file: str | Path | None = None, sets: Sequence[str] = (),
                 seed: int | None = None, allow_random_weights: bool = False,
                 allow_stand_ins: bool = False) -> FuseConfig:
    """The run config: defaults < preset < config file < ``key=value`` overrides < the options.

    With a preset, the store must hold what its paper extracted (:func:`check_extraction`);
    ``allow_random_weights`` accepts features of any backbone the store records as random
    weights (every paper's backbones are pretrained, so a preset refuses them otherwise);
    ``allow_stand_ins`` a smaller model of the paper's family in its place (demo runs)."""
    if config_file is not None:
        try:
            loaded = read_toml(config_file)
        except ValueError as e:
            raise PipelineError(str(e)) from None
        if loaded.get("method", method) != method:
            raise PipelineError(f"{config_file}: a config for method {loaded['method']!r},"
                                f" not {method!r}")
    for assignment in sets:
        key, _, value = assignment.partition("=")
        if key.strip() == "method" and value.strip().strip("\"'") != method:
            raise PipelineError(f"--set {assignment}: use --method to choose the head")
    config = build(FuseConfig, file=config_file,
                   preset=preset_overrides(preset, method) if preset is not None else None,
                   sets=sets, options={"method": method, "store": str(store),
                                       "manifests": str(manifests), "seed": seed})
    if preset is not None:
        # what the paper extracted
        check_extraction(preset, config.store, config.head, allow_random_weights,
                         allow_stand_ins)
    return config
