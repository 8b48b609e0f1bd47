"""``proportional``: Yu et al. 2025's decision fusion, ``P = (m Pa + n Pv) / (m + n)``.

The head trains its own two classifiers (an image one, Pv, and an audio one, Pa, as ``image``
and ``audio`` heads would, summing their losses) so that one command gives a complete run; to
fuse two *existing* runs instead, stage three's ensemble applies the same rule to run
directories. After every epoch all integer pairs ``0 < m, n <= max_weight`` (the paper: 5) are
scored by validation macro-F1 and the best pair (ties: the smallest m, then the smallest n)
becomes the ``fusion`` output, the primary one: the training loop calls :meth:`ProportionalHead.fit_on`
with the outputs of its selection clips after every epoch. The full 5 x 5 table is kept in
metrics.json under ``"grid"`` (with ``"fitted_on"``). The paper gives only the range (integers,
``0 < m, n < 6``), not how ``m`` and ``n`` are chosen; we choose them by a grid search on the
selection clips: by default the dev slice of the training split, so the ``fusion`` val score is
honest; with ``train.select_on = "val"`` the validation split itself (optimistic, and said so).
The paper's two classifiers are FC layers with dropout 0.2 after its GCSA-enhanced backbones,
trained with its coarse-fine granularity loss; here they sit on stage one's frozen features and
train with ``loss.kind``.

The search is stage three's :func:`pipeline.metrics.search.proportional_search` (one
implementation of the rule for the whole project; vectorised: 25 pairs over 1,000,000 frames in
about a second, see ``tests/bench/``). It needs all validation frames at once, so the loop keeps
the two outputs' probabilities of the labelled validation frames (64 bytes a frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.heads import Batch, Classifier, Head, masked_mean, register
from pipeline.fusion.heads.unimodal import (
    DEFAULT_AUDIO,
    DEFAULT_IMAGE,
    audio_dim,
    audio_tokens,
    image_vectors,
    targets_of,
)
from pipeline.fusion.sampling import SamplingConfig, purity_rule
from pipeline.metrics.search import proportional_search


@dataclass
class ProportionalConfig:
    image: str = DEFAULT_IMAGE  # store array of face features (token maps are mean-pooled)
    audio: tuple[str, ...] = DEFAULT_AUDIO  # dynamic-window audio arrays, averaged like `audio`
    hidden: int = 0  # 0: linear classifiers; else one hidden layer this wide
    dropout: float = 0.2  # dropout on the features (the paper: 0.2 in its FC layer)
    max_weight: int = 5  # m (audio) and n (image) range over 1..max_weight (the paper: 5)


@register
class ProportionalHead(Head):
    name = "proportional"
    Config = ProportionalConfig
    outputs = ("fusion", "image", "audio")
    primary = "fusion"
    model_outputs = ("image", "audio")
    face_outputs = ("image",)  # the fusion output is derived after faceless frames are filled
    needs_audio = True

    def __init__(self, config: ProportionalConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        if config.max_weight < 1:
            raise PipelineError(f"proportional max_weight {config.max_weight}: need at least 1")
        self.y_image = Classifier(dims[config.image][-1], config.hidden, config.dropout)
        self.y_audio = Classifier(audio_dim(dims, config.audio), config.hidden, config.dropout)
        # The chosen pair is part of the state, so the best checkpoint carries its own (m, n).
        self.register_buffer("m", torch.tensor(1, dtype=torch.int64))
        self.register_buffer("n", torch.tensor(1, dtype=torch.int64))

    @classmethod
    def request(cls, config: ProportionalConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image, *config.audio), audio=tuple(config.audio),
                              purity=purity_rule(tuple(config.audio), sampling))

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        audio, mask = audio_tokens(table, self.config.audio, examples, counts is not None)
        inputs = {"image": image_vectors(table, self.config.image, examples), "audio": audio,
                  "audio_mask": mask}
        return inputs, targets_of(table, examples), None

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"image": self.y_image(inputs["image"]),
                "audio": self.y_audio(masked_mean(inputs["audio"], inputs["audio_mask"]))}

    def derive(self, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m, n = float(self.m), float(self.n)
        fused = (m * probs["audio"] + n * probs["image"]) / (m + n)
        return {"fusion": fused.astype(np.float32), **probs}

    fits_on_validation = True

    def fit_on(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        """Choose (m, n) on the selection clips' outputs; the pair is kept in the state
        (buffers)."""
        fit = proportional_search(outputs["audio"], outputs["image"], labels,
                                  self.config.max_weight)
        self.m.fill_(fit.m)
        self.n.fill_(fit.n)
        weights = list(range(1, self.config.max_weight + 1))
        return {"grid": {"m": weights, "n": weights, "macro_f1": fit.grid.tolist(),
                         "best": [fit.m, fit.n]}}
