"""Learning-rate schedules for ``finetune`` and ``fuse``: linear warmup, then constant, cosine or
step decay, built from :mod:`torch.optim.lr_scheduler` (:func:`build_schedule`).

A schedule multiplies every parameter group's learning rate (so the backbone's ``lr``, the
classifier's ``head_lr`` and layer-wise decay keep their ratios). Its unit is the scheduler's
step: ``finetune`` steps once per optimiser step (``steps_per_epoch`` from the epoch plan's
length), ``fuse`` once per epoch (its batches per epoch depend on the streamed tables). The
scheduler's ``state_dict`` goes into each checkpoint, so a resumed run continues the same curve.

``kind = "constant"`` without warmup builds no scheduler at all: the optimiser runs exactly as it
did before schedules existed (fuse's results stay byte-identical).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError

KINDS = ("constant", "cosine", "step")


@dataclass
class ScheduleConfig:
    """The learning-rate schedule (``schedule.*``)."""

    # "constant", "cosine" (from the learning rate after warmup down to 0 at the last epoch) or
    # "step" (times gamma every step_epochs epochs after warmup)
    kind: str = "constant"
    warmup_epochs: int = 0  # linear warmup over this many epochs first (0: none)
    warmup_start: float = 0.01  # warmup starts at this fraction of the learning rate
    step_epochs: int = 1  # kind step: epochs between decays
    gamma: float = 0.1  # kind step: the factor of each decay

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PipelineError(f"schedule.kind {self.kind!r}: choose from {', '.join(KINDS)}")
        if self.warmup_epochs < 0 or self.step_epochs < 1:
            raise PipelineError("schedule.warmup_epochs must be >= 0 and schedule.step_epochs >= 1")
        if not 0.0 < self.warmup_start <= 1.0 or not 0.0 < self.gamma <= 1.0:
            raise PipelineError("schedule.warmup_start and schedule.gamma must be in (0, 1]")


def build_schedule(optimizer: Any, config: ScheduleConfig, epochs: int,
                   steps_per_epoch: int = 1) -> Any:
    """The scheduler for ``optimizer`` over ``epochs`` epochs of ``steps_per_epoch`` scheduler
    steps each; None for a constant rate without warmup (nothing to step)."""
    from torch.optim import lr_scheduler

    spe = max(1, int(steps_per_epoch))
    warmup = min(config.warmup_epochs, epochs) * spe
    rest = max(1, (epochs * spe) - warmup)
    if config.kind == "constant" and not warmup:
        return None
    if config.kind == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=rest, eta_min=0.0)
    elif config.kind == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=config.step_epochs * spe, gamma=config.gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=config.warmup_start, end_factor=1.0,
                                 total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
