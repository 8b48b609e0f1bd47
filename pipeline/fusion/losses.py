"""Frame losses: cross-entropy, focal loss (per-class alpha, gamma) and label smoothing.

For frame ``i`` with target ``y`` and predicted distribution ``p``::

    ce_i    = (1 - s) * -log p_y  +  s * mean_k(-log p_k)         label smoothing s (as torch)
    loss_i  = alpha_y * (1 - p_y) ** gamma * ce_i                  focal (Lin et al. 2017)

``kind = "ce"`` is the same with ``gamma = 0``. ``alpha`` scales each frame's loss, as in the
focal-loss paper, and does not renormalise the mean (unlike torch's weighted cross-entropy).
The batch loss is the mean over frames weighted by each frame's sample weight (the number of
times it was drawn); targets ``-1`` contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.errors import PipelineError

LOSS_KINDS = ("ce", "focal")


@dataclass
class LossConfig:
    kind: str = "ce"  # "ce" (cross-entropy) or "focal" (Jin et al. 2021)
    gamma: float = 2.0  # focal: focusing exponent; 0 turns focal into cross-entropy
    alpha: tuple[float, ...] = ()  # per-class loss weights, 8 values in class order; () = all 1
    label_smoothing: float = 0.0  # weight of the uniform distribution mixed into each target

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise PipelineError(f"loss.kind {self.kind!r}: choose from {', '.join(LOSS_KINDS)}")
        if self.alpha and len(self.alpha) != NUM_CLASSES:
            raise PipelineError(f"loss.alpha has {len(self.alpha)} values: need {NUM_CLASSES}, "
                                "one per class (or none)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise PipelineError(f"loss.label_smoothing {self.label_smoothing}: need 0 <= s < 1")
        if self.gamma < 0:
            raise PipelineError(f"loss.gamma {self.gamma}: need gamma >= 0")


def frame_losses(logits: torch.Tensor, targets: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Per-frame loss ``[N]`` for logits ``[N, 8]`` and targets ``[N]`` in 0..7."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    loss = nll
    if config.label_smoothing:
        loss = (1 - config.label_smoothing) * nll - config.label_smoothing * log_p.mean(dim=-1)
    if config.kind == "focal" and config.gamma:
        loss = (1 - torch.exp(-nll)).pow(config.gamma) * loss
    if config.alpha:
        loss = torch.tensor(config.alpha, dtype=loss.dtype, device=loss.device)[targets] * loss
    return loss


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
               config: LossConfig) -> torch.Tensor:
    """Weighted mean frame loss; logits ``[..., 8]``, targets and weights ``[...]``.

    Frames with target ``-1`` or weight 0 are left out. A batch without any target gives a zero
    that still depends on the logits (so backward works and changes nothing).
    """
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    weights = torch.ones_like(targets, dtype=torch.float32) if weights is None else weights.reshape(-1)
    keep = (targets != UNLABELED) & (weights > 0)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    losses = frame_losses(logits[keep], targets[keep], config)
    w = weights[keep].to(losses.dtype)
    return (w * losses).sum() / w.sum()
