"""DAN's building blocks (Wen et al. 2021, arXiv 2109.07270; paper 001 extends it), shared by
stage two's ``dan`` head (:mod:`pipeline.fusion.heads.dan`, on a frozen face map) and the
end-to-end fine-tune (``finetune --set head=dan``, :mod:`pipeline.finetune.dan`, on the backbone's
own map): the affinity and partition losses, the spatial and channel attention units, one
cross-attention head, and :class:`DANNetConfig` (the options both share).

* **Affinity loss**: with ``p_i = GAP(f_i)`` and learned class centres ``c_1..c_8``::

      L_af = sum_i w_i ||p_i - c_{y_i}||^2 / sigma_c^2  /  sum_i w_i,
      sigma_c^2 = sum_d Var_k(c_kd)        (unbiased variance over the 8 centres, summed over d)

* **Partition loss**: ``v_ij = Var_k(h_ikj)`` over the K heads; ``"code"``:
  ``log(1 + K / (mean_ij v_ij + eps))`` (the authors' code), ``"paper"``:
  ``mean_ij log(1 + K / (v_ij + eps))`` (DAN's paper); K = 1 has none.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.labels import UNLABELED
from pipeline.errors import PipelineError

PARTITION_FORMS = ("code", "paper")
EPS = sys.float_info.epsilon  # DAN's code: keeps 1 / variance finite when the heads agree


@dataclass
class DANNetConfig:
    """DAN's attention heads and auxiliary losses (``dan.*`` of ``finetune``)."""

    heads: int = 4  # attention heads K (paper 001 and DAN: 4)
    reduction: int = 16  # channel unit's hidden size = width // reduction (DAN: 512 -> 32)
    affinity_weight: float = 1.0  # weight of the affinity loss (DAN's code: 1)
    partition_weight: float = 1.0  # weight of the partition loss (DAN's code: 1)
    partition: str = "code"  # "code": log(1 + K / mean variance); "paper": mean log(1 + K / var)

    def __post_init__(self) -> None:
        check_dan(self.heads, self.reduction, 2 * self.reduction, self.affinity_weight,
                  self.partition_weight, self.partition)


def check_dan(heads: int, reduction: int, width: int, affinity_weight: float,
              partition_weight: float, partition: str) -> None:
    """One-line refusals of DAN options both stages share."""
    if partition not in PARTITION_FORMS:
        raise PipelineError(f"dan.partition {partition!r}: choose from {', '.join(PARTITION_FORMS)}")
    if heads < 1 or reduction < 1 or width < 2 * reduction:
        raise PipelineError(f"dan heads {heads}, width {width}, reduction {reduction}: need "
                            "heads >= 1 and width >= 2 * reduction")
    if min(affinity_weight, partition_weight) < 0:
        raise PipelineError("dan affinity_weight and partition_weight: need >= 0")


# ---- the two auxiliary losses -------------------------------------------------------------------


def affinity_loss(features: torch.Tensor, targets: torch.Tensor, centres: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """DAN's affinity loss: weighted mean of ``||p_i - c_{y_i}||^2`` over ``sum_d Var_k(c_kd)``.

    ``features`` [N, D], ``targets`` [N] (-1: left out), ``centres`` [8, D], ``weights`` [N].
    """
    weights = torch.ones_like(targets, dtype=features.dtype) if weights is None else weights
    keep = (targets != UNLABELED) & (weights > 0)
    if not bool(keep.any()):
        return features.sum() * 0.0 + centres.sum() * 0.0
    distance = (features[keep] - centres[targets[keep]]).pow(2).sum(dim=1)
    spread = centres.var(dim=0).sum()
    w = weights[keep].to(distance.dtype)
    return (w * distance).sum() / w.sum() / spread


def partition_loss(heads: torch.Tensor, form: str = "code") -> torch.Tensor:
    """DAN's partition loss on the fused head outputs ``heads`` [N, K, C] (see the module doc)."""
    count = heads.shape[1]
    if count < 2:
        return heads.sum() * 0.0
    variance = heads.var(dim=1)  # [N, C], unbiased over the heads
    if form == "code":
        return torch.log(1 + count / (variance.mean() + EPS))
    return torch.log(1 + count / (variance + EPS)).mean()


# ---- the network --------------------------------------------------------------------------------


class BatchNorm1d(nn.BatchNorm1d):
    """Batch norm that uses its running statistics for a training batch of a single example."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


def conv_bn(c_in: int, c_out: int, kernel: tuple[int, int]) -> nn.Sequential:
    padding = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out))


class SpatialAttention(nn.Module):
    """1x1 reduction to width / 2, then 3x3 + 1x3 + 3x1 back to width, ReLU, summed over channels:
    one map [B, 1, H, W] that multiplies the input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.reduce = conv_bn(width, width // 2, (1, 1))
        self.square = conv_bn(width // 2, width, (3, 3))
        self.row = conv_bn(width // 2, width, (1, 3))
        self.column = conv_bn(width // 2, width, (3, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.reduce(x)
        mask = F.relu(self.square(y) + self.row(y) + self.column(y)).sum(dim=1, keepdim=True)
        return x * mask, mask


class ChannelAttention(nn.Module):
    """Global average pooling, Linear-BN-ReLU-Linear-sigmoid weights on the pooled channels."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.weigh = nn.Sequential(nn.Linear(width, hidden, bias=False), BatchNorm1d(hidden),
                                   nn.ReLU(),
                                   nn.Linear(hidden, width), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = x.mean(dim=(2, 3))
        mask = self.weigh(pooled)
        return pooled * mask, mask


class CrossAttentionHead(nn.Module):
    """One head: a spatial unit then a channel unit (DAN's initialisation)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.spatial = SpatialAttention(width)
        self.channel = ChannelAttention(width, hidden)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output [B, width], spatial map [B, H, W], channel weights [B, width]."""
        attended, spatial = self.spatial(x)
        out, channel = self.channel(attended)
        return out, spatial[:, 0], channel


class DANHeads(nn.Module):
    """DAN after its feature clustering network: K cross-attention heads on the map ``f``
    [B, width, H, W], attention fusion (log-softmax over the heads when K > 1), FC then BN to the
    8 classes, and the affinity loss's class centres (N(0, 1), as DAN's code)."""

    def __init__(self, width: int, config: DANNetConfig, classes: int = 8) -> None:
        super().__init__()
        check_dan(config.heads, config.reduction, width, config.affinity_weight,
                  config.partition_weight, config.partition)
        self.config = config
        self.centres = nn.Parameter(torch.randn(classes, width))
        self.heads = nn.ModuleList(CrossAttentionHead(width, width // config.reduction)
                                   for _ in range(config.heads))
        self.fc = nn.Linear(width, classes, bias=False)
        self.bn = BatchNorm1d(classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [B, 8], pooled map [B, width], fused head outputs [B, K, width])."""
        outs = torch.stack([head(features)[0] for head in self.heads], dim=1)
        if outs.shape[1] > 1:
            outs = F.log_softmax(outs, dim=1)
        return self.bn(self.fc(outs.sum(dim=1))), features.mean(dim=(2, 3)), outs

    def auxiliary_loss(self, pooled: torch.Tensor, outs: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
        """affinity_weight * L_af + partition_weight * L_pt (the classification loss is the
        caller's: the run's ``loss`` section, focal for paper 001)."""
        cfg = self.config
        total = pooled.sum() * 0.0
        if cfg.affinity_weight:
            total = total + cfg.affinity_weight * affinity_loss(pooled, targets, self.centres,
                                                                weights)
        if cfg.partition_weight:
            total = total + cfg.partition_weight * partition_loss(outs, cfg.partition)
        return total
