"""An exponential moving average of a head's weights: what a run scores, selects and writes.

With ``train.ema_epochs = E > 0`` (the default is 1) every optimiser step is followed by, for
every floating-point tensor of the head's state (parameters and buffers),
``average <- d * average + (1 - d) * weights`` with ``d = exp(-n / (E * N))``: ``n`` the step's
examples, ``N`` the examples of the previous epoch. So a step's share decays by a factor e over E
epochs' worth of examples whatever the batch size and the epoch's length (a fixed per-step decay
would average over very different spans of data on a large corpus and on a small one). In the
first epoch ``N`` is not known yet and the average is the weights themselves (``d = 0``). Integer
buffers are copied. Each epoch's selection pass, the best epoch's weights (``best.pt``) and the
final predictions use the average; training continues from the weights. ``E = 0`` turns it off
(the run is then what it was before this module existed).

**Why on by default.** Early stopping picks one epoch by its score on a few held-out videos, and
the weights after a given step move chaotically with anything that changes the trajectory (bf16
instead of fp32 features is enough); averaging over about an epoch damps that. It is a trade: it
steadies the heads whose early stop jumps (the demo's best member among them) and costs some
heads a little macro-F1 (docs/stability.md has the measurements; tests/bench/bench_averaging.py
makes them). One epoch is a unit, not a tuned value. The papers do not average their weights;
their presets set 0.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """The running average of one module's state (``epochs == 0``: off, every method a no-op)."""

    def __init__(self, epochs: float) -> None:
        self.epochs = epochs
        self.average: dict[str, torch.Tensor] | None = None
        self.epoch_examples = 0  # examples of the last whole epoch (0: none finished yet)

    def update(self, module: torch.nn.Module, examples: int) -> None:
        """Fold the module's weights after a step of ``examples`` examples into the average."""
        if not self.epochs:
            return
        state = module.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
            return
        decay = (math.exp(-examples / (self.epochs * self.epoch_examples))
                 if self.epoch_examples else 0.0)
        with torch.no_grad():
            for name, value in state.items():
                if value.dtype.is_floating_point:
                    self.average[name].mul_(decay).add_(value, alpha=1.0 - decay)
                else:
                    self.average[name].copy_(value)

    def end_epoch(self, examples: int) -> None:
        """An epoch of ``examples`` examples is over: its length sets the next epoch's decay."""
        self.epoch_examples = examples

    @contextlib.contextmanager
    def applied(self, module: torch.nn.Module) -> Iterator[None]:
        """The module holds the average inside the block, its own weights again after it."""
        if self.average is None:
            yield
            return
        weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.average)
        try:
            yield
        finally:
            module.load_state_dict(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average, "epoch_examples": self.epoch_examples}

    def load_state_dict(self, saved: dict[str, Any] | None) -> None:
        """Restore from a checkpoint; one written without an average (before this option, or
        with it off) starts the average afresh from the next step."""
        saved = saved or {}
        self.average = saved.get("average") if self.epochs else None
        self.epoch_examples = int(saved.get("epoch_examples", 0))
