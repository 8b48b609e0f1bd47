"""One optimiser step over one or more micro-batches, as both training loops take it.

:class:`Stepper` owns what happens between a loss and the next weights:

* **Accumulation.** With ``accumulate = k`` the gradients of ``k`` micro-batches add up (each
  loss divided by ``k``) before one step; the epoch's last micro-batch always closes its group.
* **DDP sync.** Under ``DistributedDataParallel`` every backward all-reduces the gradients;
  with accumulation only the group's last micro-batch needs to. :meth:`Stepper.micro_batch`
  runs the others, forward and backward, under the model's ``no_sync()`` (DDP's reducer is
  prepared in the forward, so the context has to cover both). A model that is not DDP, or
  ``accumulate = 1``, syncs as before.
* **fp16.** ``precision = "fp16"`` autocasts to float16, whose small gradients underflow to
  zero: a :class:`torch.amp.GradScaler` scales the loss up before backward, unscales the
  gradients before clipping, skips a step whose gradients overflowed and adapts the scale. With
  bf16 or fp32 the scaler is disabled and every call is a pass-through (the same numbers as a
  plain ``backward``/``step``).
* **The step.** Gradient clipping (``grad_clip`` > 0: total norm over ``parameters``), the
  optimiser's step, a per-step learning-rate schedule's step, and clearing the gradients
  (``set_to_none``: a parameter without a gradient is skipped by the optimiser, not decayed).

Stage two's heads use it with one micro-batch per step and no scaler; the fine-tune uses all of
it. The scaler's state belongs in a checkpoint (:meth:`Stepper.state_dict`) when enabled.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from torch import nn


class Stepper:
    """Accumulation, DDP ``no_sync``, the fp16 GradScaler and the step (see the module doc)."""

    def __init__(self, optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter], *,
                 accumulate: int = 1, grad_clip: float = 0.0, precision: str = "fp32",
                 device: torch.device | str = "cpu", scheduler: Any = None) -> None:
        if accumulate < 1:
            raise ValueError(f"accumulate {accumulate}: need at least 1")
        self.optimizer, self.parameters = optimizer, list(parameters)
        self.accumulate, self.grad_clip, self.scheduler = accumulate, grad_clip, scheduler
        device = torch.device(device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def closes_group(self, k: int, total: int) -> bool:
        """Whether micro-batch ``k`` (0-based) of ``total`` is the last of its group (a step
        follows it)."""
        return (k + 1) % self.accumulate == 0 or k + 1 >= total

    @contextlib.contextmanager
    def micro_batch(self, model: nn.Module, k: int, total: int) -> Iterator[None]:
        """Wrap micro-batch ``k``'s forward and backward: under ``model.no_sync()`` unless it
        closes its group (or ``model`` is not DDP)."""
        if self.closes_group(k, total) or not hasattr(model, "no_sync"):
            yield
        else:
            with model.no_sync():
                yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss`` divided by ``accumulate`` (scaled when fp16)."""
        (self.scaler.scale(loss / self.accumulate)).backward()

    def step(self) -> None:
        """Clip, step (skipped by the scaler on overflow), schedule, clear the gradients."""
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state (None when disabled: nothing to keep)."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
