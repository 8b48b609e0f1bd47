"""Global Channel-Spatial Attention (GCSA), Yu et al. 2025, section 3.3.

For a feature map ``F`` [B, C, H, W]::

    F_channel = sigmoid(Permute^-1(MLP(Permute(F)))) * F      channel attention (3.3.1)
    F_shuffle = ChannelShuffle(F_channel, groups=4)            channel shuffle   (3.3.2)
    F_spatial = sigmoid(BN(Conv7x7(ReLU(BN(Conv7x7(F_shuffle)))))) * F_shuffle   (3.3.3)

* **Channel attention**: the channel axis is moved last, a two-layer MLP (``C -> C/4``, ReLU,
  ``C/4 -> C``) runs at every position (no pooling: the map is per position and channel), the
  axes are moved back and a sigmoid gives the map that multiplies the input.
* **Channel shuffle**: the ``C`` channels are split into 4 groups of ``C/4``, the (group,
  channel) axes transposed, and the map flattened back to ``C x H x W`` (ShuffleNet's shuffle).
* **Spatial attention**: a 7x7 convolution to ``C/4`` channels, batch norm, ReLU, a 7x7
  convolution back to ``C``, batch norm, sigmoid; the map multiplies the shuffled input.

Where the paper's equations and its text disagree, this follows the text:

* equation (1) writes ``sigma(MLP(Permute(F)))``; the text also restores the original axis order
  before the sigmoid (the inverse permutation), which a product with ``F`` needs;
* equation (3) writes ``sigma(Conv(BN(ReLU(Conv(F)))))``: ReLU *before* the first batch norm and
  no batch norm after the second convolution; the text has conv, BN, ReLU, conv, BN, sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import PipelineError


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, C, ...] with channel ``g * (C/groups) + k`` moved to position ``k * groups + g``."""
    b, c = x.shape[:2]
    return x.reshape(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def channel_unshuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The inverse of :func:`channel_shuffle` with the same ``groups``."""
    b, c = x.shape[:2]
    return x.reshape(b, c // groups, groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class GCSA(nn.Module):
    """Channel attention, channel shuffle, spatial attention on [B, C, H, W] (shape kept)."""

    def __init__(self, channels: int, reduction: int = 4, groups: int = 4, kernel: int = 7) -> None:
        super().__init__()
        if channels % reduction or channels % groups or kernel % 2 == 0:
            raise PipelineError(f"GCSA on {channels} channels: need channels divisible by the "
                                f"reduction ({reduction}) and the groups ({groups}), an odd kernel "
                                f"({kernel})")
        hidden = channels // reduction
        self.groups = groups
        self.channel_mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                         nn.Linear(hidden, channels))
        pad = kernel // 2
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel, padding=pad), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel, padding=pad), nn.BatchNorm2d(channels))

    def channel_map(self, x: torch.Tensor) -> torch.Tensor:
        """The channel attention map [B, C, H, W], values in (0, 1)."""
        return torch.sigmoid(self.channel_mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial attention map [B, C, H, W], values in (0, 1)."""
        return torch.sigmoid(self.spatial(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_map(x)
        x = channel_shuffle(x, self.groups)
        return x * self.spatial_map(x)
