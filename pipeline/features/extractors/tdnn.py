"""``tdnn``: an x-vector TDNN over log-mel windows, 512-d per window (standing in for paper 003's).

Paper 003 (Jin et al. 2021) says only that a TDNN (citing Peddinti et al. 2015) over a TorchAudio
mel spectrogram (64 mels, 10 ms window, 5 ms stride) gives its 512-d audio features, trained with
the visual model frozen. The network below, its window per video frame (paper 000's 32/48/64
frames) and the per-window mean normalisation are our choices.

Our network is the x-vector of Snyder et al. (2018): five frame-level layers (dilated 1-D
convolutions with contexts [t-2..t+2], {t-2, t, t+2}, {t-3, t, t+3}, {t}, {t}; widths 512, 512,
512, 512, 1500; each conv -> ReLU -> BatchNorm), statistics pooling (mean and standard
deviation over time), and the segment-level affine layer to 512 whose output (before its
nonlinearity) is the embedding. Its input is the ``jin2021`` log-mel (64 mels, 10 ms window,
5 ms hop) of one window centred on a video frame, mean-normalised over the window (cepstral mean
normalisation, as x-vector recipes do) when ``mean_norm`` is set.

State-dict names, for a weights file (``torch.save(module.state_dict())`` of :class:`XVector`):
``frames.{i}.conv.{weight,bias}``, ``frames.{i}.norm.{weight,bias,running_mean,running_var,
num_batches_tracked}`` for i = 0..4, and ``segment.{weight,bias}``.

The convolutions are unpadded (receptive field 15 frames, 75 ms); a window shorter than that is
padded by repeating its edge frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor
from pipeline.features.extractors.base import register
from pipeline.features.extractors.logmel import LogMelConfig


class FrameLayer(nn.Module):
    """One frame-level TDNN layer: dilated conv over time, ReLU, BatchNorm (Kaldi's order)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=kernel, dilation=dilation)
        self.norm = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class XVector(nn.Module):
    """``[B, T, n_mels]`` -> ``[B, embedding_dim]``."""

    def __init__(self, n_mels: int, channels: tuple[int, ...], kernels: tuple[int, ...],
                 dilations: tuple[int, ...], embedding_dim: int) -> None:
        super().__init__()
        widths = (n_mels, *channels)
        self.frames = nn.ModuleList(
            FrameLayer(c_in, c_out, k, d)
            for c_in, c_out, k, d in zip(widths[:-1], widths[1:], kernels, dilations))
        self.segment = nn.Linear(2 * channels[-1], embedding_dim)
        self.receptive_field = 1 + sum((k - 1) * d for k, d in zip(kernels, dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # conv over time: [B, n_mels, T]
        short = self.receptive_field - x.shape[-1]
        if short > 0:
            x = F.pad(x, (short // 2, short - short // 2), mode="replicate")
        for layer in self.frames:
            x = layer(x)
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=False)], dim=-1)
        return self.segment(stats)


@dataclass
class TdnnConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    # The log-mel each window is cut from (paper 003: 64 mels, 10 ms window, 5 ms hop).
    frontend: LogMelConfig = field(default_factory=lambda: LogMelConfig(preset="jin2021"))
    channels: tuple[int, ...] = (512, 512, 512, 512, 1500)  # frame-level layer widths (x-vector)
    kernels: tuple[int, ...] = (5, 3, 3, 1, 1)  # frame-level context sizes
    dilations: tuple[int, ...] = (1, 2, 3, 1, 1)  # frame-level dilations
    embedding_dim: int = 512  # paper 003: 512-d audio features
    mean_norm: bool = True  # subtract each window's per-band mean over time before the network


@register
class Tdnn(AudioEmbeddingExtractor):
    name = "tdnn"
    Config = TdnnConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        if not (len(c.channels) == len(c.kernels) == len(c.dilations) > 0):
            raise PipelineError(f"tdnn: channels, kernels and dilations differ in length: {c}")

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def load(self) -> None:
        if self._model is None:
            c = self.config
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = XVector(self.frontend.params.n_mels, tuple(c.channels), tuple(c.kernels),
                                tuple(c.dilations), c.embedding_dim)
            if self.weights is not None:
                self.load_weights_file(model)
            self._model = self.freeze(model)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        self.load()
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        with torch.inference_mode(), self.autocast():
            if self.config.mean_norm:
                x = x - x.mean(dim=1, keepdim=True)
            return self._model(x).float().cpu()
