"""The optimiser both training loops build, from parameter groups.

A loop says which parameters train at which learning rate (a group's own ``lr``; stage two's
heads give their groups through :meth:`Head.parameter_groups`, the fine-tune gives the backbone's
depth groups of layer-wise decay, :func:`pipeline.training.layer_decay.decayed_groups`, then the
class layers at ``head_lr``); :func:`make_optimizer` turns them into AdamW or SGD with the
loop's ``lr`` (for groups without their own), momentum and weight decay.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(groups: Iterable[dict[str, Any]], name: str, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """``name`` (``adamw`` or ``sgd``; SGD with ``momentum``) over ``groups``, in their order
    (a checkpoint's optimiser state follows it)."""
    groups = list(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name != "adamw":
        raise ValueError(f"optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
