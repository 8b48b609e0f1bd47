"""What the long-window heads (``xattn``, ``tcn``) share: windows, batches, soft voting.

A window head reads one face array and any audio arrays per frame and classifies every frame of
a window of up to ``length`` frames at once.

* **Training windows** start every ``train_stride`` frames from a random phase drawn each epoch
  (as ``sequence``'s); a window trains when it holds a frame the sampler drew, and every drawn
  frame in it is a target weighted by how often it was drawn.
* **Window length.** A clip shorter than ``length`` is one window of its own length; in a batch,
  windows are padded to the longest clip of the table (at most ``length``) and padding is
  masked, so a frame's output never depends on which clips share its table.
* **Sliding-window soft voting** (Yu et al. 2026, arXiv 2603.08034): at inference windows start
  every ``eval_stride`` frames (the last one ending at the clip's end) and each frame's
  probabilities are the weighted mean of the softmax outputs of every window that holds it. The
  paper's reachable text does not give the weights; ``voting = "uniform"`` (default) weighs the
  windows equally, ``"triangle"`` weighs a window by how central the frame is in it
  (``min(k + 1, L - k)`` at position ``k`` of ``L``), which trusts outputs that saw context on
  both sides.
* **Memory** is bounded by the stream (groups of clips of at most ``train.buffer_mb / 3``) and
  by the batch: a training batch holds ``batch_size`` windows, an inference batch
  ``eval_batch_size // length`` windows (at least one), never a whole clip or store.
* **Faces.** A frame without a face has its face features zeroed and masked; the head predicts it
  from audio and context itself (``faceless = "own"``: ``face_outputs`` is empty, no nearest-face
  filling; ``"nearest"`` writes the nearest face's prediction there, as heads with face outputs
  do), and labelled frames with a face or audio train either way.
* **AUs and VA** (``tasks = ["expr", "au", "va"]``): AU and VA layers on the per-frame features
  the expression layer classifies; frames with a face or audio and AU (VA) labels train them, and
  their outputs are soft-voted over windows like the expression probabilities (VA values as they
  are, AU probabilities after the sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data.labels import NUM_AUS, NUM_CLASSES, UNLABELED, VA_NAMES
from pipeline.errors import PipelineError
from pipeline.fusion import modality
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.heads import Batch, Head, TaskConfig, pooled
from pipeline.fusion.heads.unimodal import DEFAULT_AUDIO, DEFAULT_IMAGE
from pipeline.training.sampling import SamplingConfig
from pipeline.training.windows import sequence_starts

VOTING = ("uniform", "triangle")


@dataclass
class WindowConfig(TaskConfig):
    image: str = DEFAULT_IMAGE  # per-frame face features [T, D] (token maps are mean-pooled)
    audio: tuple[str, ...] = DEFAULT_AUDIO  # per-frame audio arrays [T, D], concatenated
    length: int = 64  # frames per window
    train_stride: int = 16  # frames between training windows (random phase each epoch)
    eval_stride: int = 32  # frames between inference windows (soft voting over overlaps)
    voting: str = "uniform"  # soft-voting weights: "uniform" or "triangle" (centre counts more)
    dropout: float = 0.1  # dropout inside the head
    modality_dropout: float = 0.0  # training: a window loses one modality with this probability
    modality_dropout_which: str = "either"  # "either", "image" or "audio" (pipeline.fusion.modality)
    faceless: str = "own"  # frames without a face: "own" output, or the "nearest" face's prediction


def voting_weights(length: int, voting: str) -> np.ndarray:
    """float64 [length]: the soft-voting weight of each position of a window."""
    if voting == "uniform":
        return np.ones(length)
    k = np.arange(length)
    return np.minimum(k + 1, length - k).astype(np.float64)


class WindowHead(Head):
    """Base of the window heads (not registered itself)."""

    face_outputs = ()  # "faceless = own" (the default); "nearest" sets ("main",) per instance
    batch_size = 16  # windows per step

    def __init__(self, config: WindowConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        if config.length < 1 or config.train_stride < 1 or config.eval_stride < 1:
            raise PipelineError(f"{self.name} length, train_stride and eval_stride must be >= 1")
        if config.eval_stride > config.length:
            raise PipelineError(f"{self.name} eval_stride {config.eval_stride} > length "
                                f"{config.length} would leave frames without a prediction")
        if config.voting not in VOTING:
            raise PipelineError(f"{self.name} voting {config.voting!r}: choose from "
                                f"{', '.join(VOTING)}")
        modality.check(config.modality_dropout, config.modality_dropout_which, self.name)
        self.face_outputs = modality.face_outputs(config.faceless, self.name)
        self.d_image = dims[config.image][-1]
        self.d_audio = sum(dims[name][-1] for name in config.audio)

    @classmethod
    def request(cls, config: WindowConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image, *config.audio), audio=tuple(config.audio))

    def window_length(self, table: Table) -> int:
        """The table's window length: ``length``, or its longest clip if shorter."""
        return int(min(self.config.length, np.diff(table.offsets).max(initial=1)))

    def starts(self, table: Table, stride: int, rng: np.random.Generator | None) -> np.ndarray:
        length = self.window_length(table)
        starts = []
        for i in range(len(table.clip_ids)):
            rows = table.clip_rows(i)
            phase = 0 if rng is None else int(rng.integers(stride))
            starts.append(rows.start + sequence_starts(rows.stop - rows.start, length, stride,
                                                       phase))
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def trainable(self, table: Table) -> np.ndarray:
        return (table.labels != UNLABELED) & (table.valid | table.audio)

    def task_frames(self, table: Table) -> np.ndarray:
        return table.valid | table.audio  # as for expressions: a face or audio

    def examples(self, table: Table, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        starts = self.starts(table, self.config.train_stride, rng)
        rows, inside = self.example_rows(table, starts)
        return starts[((counts[rows] > 0) & inside).any(axis=1)]

    def example_rows(self, table: Table, examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return table.window(examples, np.arange(self.window_length(table)))

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        rows, inside = self.example_rows(table, examples)  # [B, L]
        face = table.valid[rows] & inside
        sound = table.audio[rows] & inside
        image = pooled(table.take(self.config.image, rows), batch_dims=2) * face[..., None]
        if self.config.audio:
            audio = np.concatenate([table.take(n, rows) for n in self.config.audio], axis=-1)
            audio *= sound[..., None]
        else:
            audio = np.zeros((*rows.shape, 0), np.float32)
        inputs = {
            "image": torch.from_numpy(image),
            "audio": torch.from_numpy(audio),
            "flags": torch.from_numpy(np.stack([face, sound], axis=-1).astype(np.float32)),
            "image_mask": torch.from_numpy(face),
            "audio_mask": torch.from_numpy(sound),
            "mask": torch.from_numpy(inside),
        }
        targets = torch.from_numpy(np.where(inside, table.labels[rows], UNLABELED))
        weights = None if counts is None else torch.from_numpy(
            np.where(inside, counts[rows], 0).astype(np.float32))
        return inputs, targets, weights

    @torch.no_grad()
    def predict(self, table: Table, batch_size: int) -> dict[str, np.ndarray]:
        """Sliding-window soft voting (module docstring)."""
        length = self.window_length(table)
        starts = self.starts(table, self.config.eval_stride, None)
        weight = voting_weights(length, self.config.voting)
        widths = {"main": NUM_CLASSES, **dict.fromkeys(self.au_outputs, NUM_AUS),
                  **dict.fromkeys(self.va_outputs, len(VA_NAMES))}
        sums = {name: np.zeros((table.n_rows, width), np.float64) for name, width in widths.items()}
        total = np.zeros(table.n_rows, np.float64)
        per_batch = max(1, batch_size // length)
        device = next(self.parameters()).device
        for begin in range(0, starts.size, per_batch):
            chunk = starts[begin:begin + per_batch]
            inputs, _, _ = self.batch(table, chunk, None)
            logits = self({k: v.to(device) for k, v in inputs.items()})
            rows, inside = self.example_rows(table, chunk)
            w = np.broadcast_to(weight, rows.shape)[inside]
            for name, part in sums.items():
                probs = self.probabilities(name, logits[name])
                np.add.at(part, rows[inside], probs[inside] * w[:, None])
            np.add.at(total, rows[inside], w)
        return {name: (part / np.maximum(total, 1e-12)[:, None]).astype(np.float32)
                for name, part in sums.items()}
