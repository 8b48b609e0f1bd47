"""Single-modality heads: ``image`` (Kim et al. 2023's Y_I) and ``audio`` (their Y_A).

``image`` classifies each frame from its face features (token maps are mean-pooled). ``audio``
classifies each frame from its dynamic-window audio embeddings (one per window length): the
classifier sees the mean of the windows that may train (label purity, see ``windows.py``); at
inference all windows count.

Both may also learn action units and VA (``tasks = ["expr", "au", "va"]``): AU and VA layers on
the classifier's trunk (its LayerNorm, dropout and hidden layer; with ``hidden = 0`` the trunk
holds only the LayerNorm, since the backbone itself is frozen in stage one). ``audio``'s AU and VA
examples use every window with audio: the label-purity test (:func:`purity_rows`) concerns the
expression labels around a frame, and masks windows only for the examples drawn for expressions.

The input helpers here are shared by the fusion heads that contain these two classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.heads import (
    Batch,
    Classifier,
    Head,
    TaskConfig,
    masked_mean,
    pooled,
    register,
)
from pipeline.training.sampling import SamplingConfig, purity_rule

DEFAULT_IMAGE = "swin"  # stage one's Swin-Tiny face features
DEFAULT_AUDIO = ("tdnn_w32", "tdnn_w48", "tdnn_w64")  # stage one's dynamic-window audio embeddings


def image_vectors(table: Table, name: str, rows: np.ndarray) -> torch.Tensor:
    """float32 [B, D]: the frames' image features (token maps mean-pooled; zeros without a face)."""
    return torch.from_numpy(pooled(table.take(name, rows)))


def audio_tokens(table: Table, names: tuple[str, ...], rows: np.ndarray,
                 train: bool | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, W, D] audio embeddings (one token per array) and the [B, W] mask of usable tokens.

    A token is unusable when the clip has no audio, and, in training (``train`` True, or True at
    the rows of a bool [B] array: :func:`purity_rows`), when its window fails the label-purity
    test.
    """
    tokens = np.stack([table.take(name, rows) for name in names], axis=1)
    mask = np.repeat(table.audio[rows][:, None], len(names), axis=1)
    test = np.asarray(train, dtype=bool)
    if test.any():
        mask &= table.window_ok[rows] | ~(test[:, None] if test.ndim else test)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def purity_rows(examples: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
    """bool [B]: the examples whose audio windows must pass the label-purity test: the training
    rows drawn for expressions (``counts`` > 0). Purity is a property of the expression labels
    around a frame; an AU or VA example (drawn for its own labels, ``counts`` 0) uses every window
    with audio. All False at inference (``counts`` None); all True in an expression-only run."""
    if counts is None:
        return np.zeros(len(examples), dtype=bool)
    return counts[examples] > 0


def audio_dim(dims: dict[str, tuple[int, ...]], names: tuple[str, ...]) -> int:
    """The common embedding size of the audio arrays (they are tokens of one sequence)."""
    shapes = {dims[name] for name in names}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise PipelineError("audio arrays " + ", ".join(f"{n} {dims[n]}" for n in names)
                            + ": need one vector size shared by all")
    return next(iter(shapes))[0]


def targets_of(table: Table, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(table.labels[rows])


@dataclass
class ImageConfig(TaskConfig):
    image: str = DEFAULT_IMAGE  # store array: [T, D] features or [T, H, W, D] maps (mean-pooled)
    hidden: int = 0  # 0: a linear classifier (the paper's Y_I); else one hidden layer this wide
    dropout: float = 0.1  # dropout on the features (and on the hidden layer)


@register
class ImageHead(Head):
    """Y_I: a classifier on each frame's face features."""

    name = "image"
    Config = ImageConfig

    def __init__(self, config: ImageConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        self.classifier = Classifier(dims[config.image][-1], config.hidden, config.dropout)
        self.add_au_output(self.classifier.width)

    @classmethod
    def request(cls, config: ImageConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image,))

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        return {"image": image_vectors(table, self.config.image, examples)}, \
            targets_of(table, examples), None

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.aux_outputs:
            return {"main": self.classifier(inputs["image"])}
        trunk = self.classifier.trunk(inputs["image"])
        return self.with_au(trunk, {"main": self.classifier.net[-1](trunk)})


@dataclass
class AudioConfig(TaskConfig):
    audio: tuple[str, ...] = DEFAULT_AUDIO  # dynamic-window audio arrays [T, D], one per window
    hidden: int = 0  # 0: a linear classifier (the paper's Y_A); else one hidden layer this wide
    dropout: float = 0.1  # dropout on the features (and on the hidden layer)


@register
class AudioHead(Head):
    """Y_A: a classifier on the mean of each frame's dynamic-window audio embeddings."""

    name = "audio"
    Config = AudioConfig
    face_outputs = ()
    needs_audio = True

    def __init__(self, config: AudioConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        self.classifier = Classifier(audio_dim(dims, config.audio), config.hidden, config.dropout)
        self.add_au_output(self.classifier.width)

    @classmethod
    def request(cls, config: AudioConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=tuple(config.audio), audio=tuple(config.audio),
                              purity=purity_rule(tuple(config.audio), sampling))

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        tokens, mask = audio_tokens(table, self.config.audio, examples,
                                    purity_rows(examples, counts))
        return {"audio": tokens, "audio_mask": mask}, targets_of(table, examples), None

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        audio = masked_mean(inputs["audio"], inputs["audio_mask"])
        if not self.aux_outputs:
            return {"main": self.classifier(audio)}
        trunk = self.classifier.trunk(audio)
        return self.with_au(trunk, {"main": self.classifier.net[-1](trunk)})
