"""``tcn``: dilated temporal convolutions over long windows (up to 300 frames and more).

The ABAW 2023 expression winner ran temporal convolutions and a transformer over 300-frame
windows (``shared/papers/README.md``); this head is the temporal-convolution part, over the
cached per-frame features of a window (:mod:`pipeline.fusion.heads.windowed`)::

    x_t = Linear(Concat(LayerNorm(face_t), LayerNorm(audio_t), has_face_t, has_audio_t))
    per level i = 0 .. levels-1 (dilation 2^i):
        x = (x + Conv1d_k,2^i(GELU(Conv1d_k,2^i(x)) * inside)) * inside    residual
    y_t = Linear(LayerNorm(x_t))

Each level has two non-causal convolutions of kernel ``kernel`` dilated by ``2^i``, so the
receptive field is ``1 + 2 (kernel - 1) (2^levels - 1)`` frames: 253 with the defaults (kernel
3, 6 levels), about 8 s at 30 fps, inside the default 300-frame window. Positions outside the
clip are zero before every convolution (the convolution's own zero padding continues them), so
a frame's output does not depend on the padding of its batch. A frame's face features are zeroed
where it has no face (its flag says so), and ``sequence``-style modality dropout zeroes a whole
window's modality in training.

Choices (the ABAW 2023 winner's exact TCN is not in the papers here): kernel, levels, width,
GELU, the residual form, windows of 300 frames every 100 in training and every 150 at inference
with uniform soft voting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.data.labels import NUM_CLASSES
from pipeline.errors import PipelineError
from pipeline.fusion.heads import register
from pipeline.fusion.heads.sequence import drop_window_modalities
from pipeline.fusion.heads.windowed import WindowConfig, WindowHead


@dataclass
class TCNConfig(WindowConfig):
    length: int = 300  # frames per window (the ABAW 2023 winner: 300)
    train_stride: int = 100  # frames between training windows (random phase each epoch)
    eval_stride: int = 150  # frames between inference windows (soft voting over overlaps)
    dim: int = 128  # channels of every level
    kernel: int = 3  # convolution kernel (odd: "same" padding)
    levels: int = 6  # residual levels, dilations 1, 2, 4, .. 2^(levels-1)


class Level(nn.Module):
    def __init__(self, dim: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.first = nn.Conv1d(dim, dim, kernel, padding=pad, dilation=dilation)
        self.second = nn.Conv1d(dim, dim, kernel, padding=pad, dilation=dilation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """``x`` [B, dim, L], zero outside the clip; ``inside`` [B, 1, L]. Each convolution reads
        zeros outside the clip, as its own padding would give at the clip's ends."""
        h = self.dropout(nn.functional.gelu(self.first(x))) * inside
        return (x + self.dropout(self.second(h))) * inside


@register
class TCNHead(WindowHead):
    name = "tcn"
    Config = TCNConfig

    def __init__(self, config: TCNConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        if config.kernel < 1 or config.kernel % 2 == 0 or config.levels < 1:
            raise PipelineError(f"tcn kernel {config.kernel}, levels {config.levels}: need an odd "
                                "kernel and at least one level")
        self.norm_image = nn.LayerNorm(self.d_image)
        self.norm_audio = nn.LayerNorm(self.d_audio) if self.d_audio else None
        self.project = nn.Linear(self.d_image + self.d_audio + 2, config.dim)
        self.levels = nn.ModuleList(Level(config.dim, config.kernel, 2 ** i, config.dropout)
                                    for i in range(config.levels))
        self.norm = nn.LayerNorm(config.dim)
        self.classify = nn.Linear(config.dim, NUM_CLASSES)
        self.add_au_output(config.dim)  # AU and VA layers on y_t's features (head.tasks)

    @property
    def receptive_field(self) -> int:
        return 1 + 2 * (self.config.kernel - 1) * (2 ** self.config.levels - 1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = drop_window_modalities(inputs, self.config, self.training)
        parts = [self.norm_image(inputs["image"])]
        if self.norm_audio is not None:
            parts.append(self.norm_audio(inputs["audio"]))
        inside = inputs["mask"].to(inputs["image"].dtype)[:, None, :]  # [B, 1, L]
        x = self.project(torch.cat([*parts, inputs["flags"]], dim=-1)).transpose(1, 2)
        x = x * inside
        for level in self.levels:
            x = level(x, inside)
        x = self.norm(x.transpose(1, 2))
        return self.with_au(x, {"main": self.classify(x)})
