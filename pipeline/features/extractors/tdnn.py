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
5 ms hop) of one window centred on a video frame, mean-normalised (cepstral mean normalisation):

Normalisation is part of how a set of weights was trained, so by default (``mean_norm`` unset) it
follows the weights: a folder written by ``fer-pipeline finetune`` records its ``mean_norm``,
``cmn_seconds`` and log-mel frontend and the extractor applies them
(:mod:`pipeline.features.weights_record`); with random weights nothing is normalised (``"none"``:
a random network has learnt no level invariance, and CMN would erase the level cues a head on its
features can still read: on the demo, mfm 0.23 with sliding CMN, 0.75 without); a weights file
without a record gets ``"sliding"``, the x-vector recipe such checkpoints follow. Set explicitly:

* ``mean_norm = "sliding"``: each log-mel row minus the mean of the
  ``cmn_seconds`` (3 s) of rows centred on it, the window shifted to stay inside the clip (the
  whole clip when shorter): Kaldi's ``apply-cmvn-sliding --norm-vars=false --center=true
  --cmn-window=300`` at 10 ms, as the x-vector recipe of Snyder et al. runs it. It is part of the
  frontend, so a row's normalised value is the same in every window, which is what lets the
  frame-level layers run once per clip;
* ``"window"`` (version 1's): each window minus its own mean; only with ``per_clip = false``;
* ``"none"``.

``per_clip`` (default true) runs the frame-level layers once over the clip and pools each window
from prefix sums (:mod:`pipeline.features.window_pooling`): the same pooled frames as the network
on the window alone, so the two agree to float rounding for every window of at least the receptive
field (15 rows, 75 ms); a shorter window takes its one output from the clip's real neighbouring
rows instead of repeated edge rows. ``per_clip = false`` keeps the per-window computation.
Version 2 (cache keys changed): sliding CMN and the per-clip path.

State-dict names, for a weights file (``torch.save(module.state_dict())`` of :class:`XVector`):
``frames.{i}.conv.{weight,bias}``, ``frames.{i}.norm.{weight,bias,running_mean,running_var,
num_batches_tracked}`` for i = 0..4, and ``segment.{weight,bias}``.

The convolutions are unpadded (receptive field 15 frames, 75 ms); a window shorter than that is
padded by repeating its edge frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor
from pipeline.features.extractors.base import register
from pipeline.features.extractors.logmel import LogMelConfig
from pipeline.features.weights_record import WeightsRecord, check_family, recorded_frontend


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

    def frame_level(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, T]`` -> ``[B, C, T - receptive_field + 1]`` (unpadded)."""
        for layer in self.frames:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # conv over time: [B, n_mels, T]
        short = self.receptive_field - x.shape[-1]
        if short > 0:
            x = F.pad(x, (short // 2, short - short // 2), mode="replicate")
        x = self.frame_level(x)
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=False)], dim=-1)
        return self.segment(stats)


MEAN_NORMS = ("sliding", "window", "none")


def sliding_cmn(x: np.ndarray, window: int) -> np.ndarray:
    """``x [T, F]`` minus, per row, the mean of ``window`` rows centred on it, shifted to stay
    inside ``x`` (all of ``x`` when shorter): Kaldi's sliding CMN with ``center=true``."""
    n = x.shape[0]
    if n <= window:
        return (x - x.mean(axis=0, dtype=np.float64)).astype(np.float32)
    begin = np.clip(np.arange(n) - window // 2, 0, n - window)
    cum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0, dtype=np.float64)])
    return (x - (cum[begin + window] - cum[begin]) / window).astype(np.float32)


DEFAULT_CMN_SECONDS = 3.0  # Kaldi's x-vector recipe: 300 rows x 10 ms


@dataclass
class TdnnConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    # The log-mel each window is cut from (paper 003: 64 mels, 10 ms window, 5 ms hop).
    frontend: LogMelConfig = field(default_factory=lambda: LogMelConfig(preset="jin2021"))
    channels: tuple[int, ...] = (512, 512, 512, 512, 1500)  # frame-level layer widths (x-vector)
    kernels: tuple[int, ...] = (5, 3, 3, 1, 1)  # frame-level context sizes
    dilations: tuple[int, ...] = (1, 2, 3, 1, 1)  # frame-level dilations
    embedding_dim: int = 512  # paper 003: 512-d audio features
    # Cepstral mean normalisation: "sliding" (per row, over cmn_seconds centred on it), "window"
    # (each window's own mean; needs per_clip = false) or "none"; unset: what the weights record
    # says, "none" for random weights, "sliding" for a weights file without a record (see the
    # module docstring).
    mean_norm: str | None = None
    cmn_seconds: float | None = None  # the sliding CMN's span; unset: the record's, else 3.0 (Kaldi)
    per_clip: bool = True  # frame-level layers once per clip, windows pooled from prefix sums


def resolve_preprocessing(config: TdnnConfig, record: WeightsRecord | None,
                          weights: Any) -> TdnnConfig:
    """``config`` with ``mean_norm``, ``cmn_seconds`` and the frontend decided: the user's where
    set, else the weights record's, else ``"none"`` for random weights and ``"sliding"`` over
    3 s for a weights file without a record. A frontend set by the user that differs from the
    record's is refused: the network learnt on the record's."""
    check_family(record, "tdnn", "xvector", weights)
    pre = record.preprocessing if record is not None else {}
    mean_norm = config.mean_norm or pre.get("mean_norm") or ("none" if weights is None else "sliding")
    cmn = config.cmn_seconds or pre.get("cmn_seconds") or DEFAULT_CMN_SECONDS
    frontend = config.frontend
    if "frontend" in pre:
        recorded = recorded_frontend(record, weights, LogMelConfig)
        if frontend not in (recorded, TdnnConfig().frontend):
            raise PipelineError(f"{weights}: trained on log-mel {pre['frontend']}, not on "
                                f"configs.tdnn.frontend {dataclasses.asdict(frontend)}; unset it")
        frontend = recorded
    return dataclasses.replace(config, mean_norm=mean_norm, cmn_seconds=float(cmn), frontend=frontend)


@register
class Tdnn(AudioEmbeddingExtractor):
    name = "tdnn"
    Config = TdnnConfig
    version = 2  # 2: sliding CMN by default, the per-clip path (see the module docstring)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The cache key hashes the resolved config: what the computation really uses.
        self.config = c = resolve_preprocessing(self.config, self.weights_record, self.weights)
        if not (len(c.channels) == len(c.kernels) == len(c.dilations) > 0):
            raise PipelineError(f"tdnn: channels, kernels and dilations differ in length: {c}")
        if c.mean_norm not in MEAN_NORMS:
            raise PipelineError(f"tdnn: mean_norm {c.mean_norm!r}: choose from {', '.join(MEAN_NORMS)}")
        if c.mean_norm == "window" and c.per_clip:
            raise PipelineError("tdnn: mean_norm 'window' differs per window: set configs.tdnn.per_clip=false")
        if c.cmn_seconds <= 0:
            raise PipelineError(f"tdnn: cmn_seconds must be positive, got {c.cmn_seconds}")
        self._context = sum((k - 1) * d for k, d in zip(c.kernels, c.dilations))

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def load(self) -> None:
        if self._model is None:
            c = self.config
            model = self.build(lambda: XVector(self.frontend.params.n_mels, tuple(c.channels),
                                               tuple(c.kernels), tuple(c.dilations), c.embedding_dim))
            if self.weights is not None:
                self.load_weights_file(model)
            self._model = self.freeze(model)

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        mel = self.frontend.compute(waveform)
        if self.config.mean_norm != "sliding":
            return mel
        return sliding_cmn(mel, max(1, round(self.config.cmn_seconds * self.frontend_frame_rate)))

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        self.load()
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        with torch.inference_mode(), self.autocast():
            if self.config.mean_norm == "window":
                x = x - x.mean(dim=1, keepdim=True)
            return self._model(x).float().cpu()

    # ---- the per-clip path (pipeline.features.window_pooling) ----------------------------------

    def frame_context(self) -> tuple[int, int] | None:
        if not self.config.per_clip:
            return None
        # Output t of the unpadded convs reads rows t .. t + context: centred, it reads half each side.
        return self._context // 2, self._context - self._context // 2

    def frame_level(self, rows: np.ndarray) -> torch.Tensor:
        self.load()
        x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(self.device)
        with torch.inference_mode(), self.autocast():
            return self._model.frame_level(x.T[None])[0].T.float().cpu()

    def pool_segment(self, sums: torch.Tensor, sums_sq: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        self.load()
        n = counts.clamp(min=1)[:, None]  # a padded batch row has count 0
        mean = sums / n
        std = (sums_sq / n - mean * mean).clamp(min=0).sqrt()  # float64: no cancellation to speak of
        stats = torch.cat([mean, std], dim=1).float().to(self.device)
        with torch.inference_mode(), self.autocast():
            return self._model.segment(stats).float().cpu()
