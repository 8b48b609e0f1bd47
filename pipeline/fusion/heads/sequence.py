"""``sequence``: the multi-modal sequence model of Jin et al. 2021 over cached features.

Each frame's visual and audio features are concatenated (with two flags: the frame had a face,
the clip has audio), projected to ``dim``, given a learned position embedding, passed through a
transformer encoder (1 layer in the paper) over windows of ``length`` frames (30 in the paper),
and classified frame by frame by one linear layer.

Training windows start every ``train_stride`` frames from a random phase drawn each epoch (so
over epochs windows start everywhere); every labelled frame with a face in a window is a target,
weighted by how often the sampler drew it (majority subsampling and class balance act as frame
weights here). At inference windows start every ``eval_stride`` frames, the last one ending at
the clip's end, and each frame's probabilities are the mean over the windows that contain it.
A clip shorter than ``length`` is one padded window (padding is masked in the attention).

With ``tasks = ["expr", "au"]`` (the ``jin2021`` preset) a second linear layer classifies the 12
action units frame by frame from the same encoder output (Jin et al.'s multi-task training, here
on the sequence model: their visual backbone is stage one's frozen extractor); AU probabilities
are averaged over overlapping windows like the expression ones.

Windows may be long (``length = 300``, the ABAW 2023 winner's): memory stays bounded by the batch
(``batch_size`` windows in training, ``eval_batch_size // length`` at inference) and the stream.
``modality_dropout`` (training only, :mod:`pipeline.fusion.modality`) zeroes a whole window's
face or audio features and clears its presence flag (:func:`drop_window_modalities`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.data.labels import NUM_AUS, NUM_CLASSES, UNLABELED
from pipeline.errors import PipelineError
from pipeline.fusion import modality
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.heads import Batch, Head, TaskConfig, pooled, register
from pipeline.fusion.heads.unimodal import DEFAULT_AUDIO, DEFAULT_IMAGE
from pipeline.training.sampling import SamplingConfig
from pipeline.training.windows import sequence_starts


@dataclass
class SequenceConfig(TaskConfig):
    image: str = DEFAULT_IMAGE  # per-frame face features [T, D] (token maps are mean-pooled)
    audio: tuple[str, ...] = DEFAULT_AUDIO  # per-frame audio arrays [T, D], concatenated
    length: int = 30  # frames per window (the paper: 30)
    train_stride: int = 5  # frames between training windows (random phase each epoch)
    eval_stride: int = 15  # frames between inference windows; overlaps are averaged
    dim: int = 128  # width of the projected features and of the encoder
    heads: int = 4  # attention heads
    layers: int = 1  # transformer encoder layers (the paper: 1)
    ff: int = 256  # encoder feed-forward width
    dropout: float = 0.1  # dropout on the inputs and inside the encoder
    modality_dropout: float = 0.0  # training: a sample loses one modality with this probability
    modality_dropout_which: str = "either"  # "either", "image" or "audio" (pipeline.fusion.modality)


def drop_window_modalities(inputs: dict[str, torch.Tensor], config, training: bool
                           ) -> dict[str, torch.Tensor]:
    """Modality dropout of a window head's inputs (``pipeline.fusion.modality``; training only):
    a dropped modality's features are zeroed and its presence flag cleared over the whole window,
    as in a window without a face or a clip without audio."""
    flags = inputs["flags"]
    keep_image, keep_audio = modality.modality_keep(
        flags.shape[0], config.modality_dropout, config.modality_dropout_which, training,
        flags.device)
    if bool(keep_image.all()) and bool(keep_audio.all()):
        return inputs
    keep = torch.stack([keep_image, keep_audio], dim=1).to(flags.dtype)[:, None, :]  # [B, 1, 2]
    return {**inputs, "flags": flags * keep,
            "image": inputs["image"] * keep[..., :1], "audio": inputs["audio"] * keep[..., 1:]}


@register
class SequenceHead(Head):
    name = "sequence"
    Config = SequenceConfig
    batch_size = 16  # windows per step: 16 x 30 frames (a frame head's 64 frames would be 2)

    def __init__(self, config: SequenceConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        if config.length < 1 or config.train_stride < 1 or config.eval_stride < 1:
            raise PipelineError("sequence length, train_stride and eval_stride must be >= 1")
        if config.eval_stride > config.length:
            raise PipelineError(f"sequence eval_stride {config.eval_stride} > length "
                                f"{config.length} would leave frames without a prediction")
        modality.check(config.modality_dropout, config.modality_dropout_which, self.name)
        d_image = dims[config.image][-1]
        d_audio = sum(dims[name][-1] for name in config.audio)
        self.norm_image = nn.LayerNorm(d_image)
        self.norm_audio = nn.LayerNorm(d_audio) if config.audio else None
        self.project = nn.Sequential(nn.Dropout(config.dropout),
                                     nn.Linear(d_image + d_audio + 2, config.dim))
        self.position = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, config.length,
                                                                       config.dim), std=0.02))
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, config.ff, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.classify = nn.Linear(config.dim, NUM_CLASSES)
        self.add_au_output(config.dim)
        self.steps = np.arange(config.length)

    @classmethod
    def request(cls, config: SequenceConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image, *config.audio), audio=tuple(config.audio))

    def _starts(self, table: Table, stride: int, rng: np.random.Generator | None) -> np.ndarray:
        starts = []
        for i in range(len(table.clip_ids)):
            rows = table.clip_rows(i)
            phase = 0 if rng is None else int(rng.integers(stride))
            starts.append(rows.start + sequence_starts(rows.stop - rows.start, self.config.length,
                                                       stride, phase))
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def examples(self, table: Table, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        starts = self._starts(table, self.config.train_stride, rng)
        rows, inside = table.window(starts, self.steps)
        return starts[((counts[rows] > 0) & inside).any(axis=1)]

    def example_rows(self, table: Table, examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return table.window(examples, self.steps)

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        rows, inside = table.window(examples, self.steps)  # [B, L]
        image = pooled(table.take(self.config.image, rows), batch_dims=2)
        parts = [image]
        if self.config.audio:
            parts.append(np.concatenate([table.take(n, rows) for n in self.config.audio], axis=-1))
        flags = np.stack([table.valid[rows] & inside, table.audio[rows] & inside], axis=-1)
        inputs = {
            "image": torch.from_numpy(parts[0]),
            "audio": torch.from_numpy(parts[1]) if len(parts) > 1 else torch.zeros(*rows.shape, 0),
            "flags": torch.from_numpy(flags.astype(np.float32)),
            "mask": torch.from_numpy(inside),
        }
        targets = torch.from_numpy(np.where(inside, table.labels[rows], UNLABELED))
        weights = None if counts is None else torch.from_numpy(
            np.where(inside, counts[rows], 0).astype(np.float32))
        return inputs, targets, weights

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = drop_window_modalities(inputs, self.config, self.training)
        parts = [self.norm_image(inputs["image"])]
        if self.norm_audio is not None:
            parts.append(self.norm_audio(inputs["audio"]))
        x = self.project(torch.cat([*parts, inputs["flags"]], dim=-1))
        x = self.encoder(x + self.position[:, :x.shape[1]], src_key_padding_mask=~inputs["mask"])
        x = self.norm(x)
        return self.with_au(x, {"main": self.classify(x)})

    @torch.no_grad()
    def predict(self, table: Table, batch_size: int) -> dict[str, np.ndarray]:
        starts = self._starts(table, self.config.eval_stride, None)
        widths = {"main": NUM_CLASSES, **{name: NUM_AUS for name in self.au_outputs},
                  **{name: 2 for name in self.va_outputs}}
        sums = {name: np.zeros((table.n_rows, width), np.float64) for name, width in widths.items()}
        hits = np.zeros(table.n_rows, np.float64)
        per_batch = max(1, batch_size // self.config.length)
        device = next(self.parameters()).device
        for begin in range(0, starts.size, per_batch):
            chunk = starts[begin:begin + per_batch]
            inputs, _, _ = self.batch(table, chunk, None)
            logits = self({k: v.to(device) for k, v in inputs.items()})
            rows, inside = table.window(chunk, self.steps)
            for name, total in sums.items():
                np.add.at(total, rows[inside], self.probabilities(name, logits[name])[inside])
            np.add.at(hits, rows[inside], 1.0)
        return {name: (total / np.maximum(hits, 1.0)[:, None]).astype(np.float32)
                for name, total in sums.items()}
