"""``proportional``: Yu et al. 2025's decision fusion, ``P = (m Pa + n Pv) / (m + n)``.

The head trains its own two classifiers (an image one, Pv, and an audio one, Pa, as ``image``
and ``audio`` heads would, summing their losses) so that one command gives a complete run; to
fuse two *existing* runs instead, stage three's ensemble applies the same rule to run
directories. After every epoch an integer pair ``0 < m, n <= max_weight`` (the paper: 5) is
chosen on the selection clips (below) and gives the ``fusion`` output, the primary one: the
training loop calls :meth:`ProportionalHead.fit_on` with the outputs of its selection clips after
every epoch. The full 5 x 5 table of macro-F1 is kept in metrics.json under ``"grid"`` (with
``"fitted_on"``). The selection clips are by default the dev slice of the training split, so the
``fusion`` val score is honest; with ``train.select_on = "val"`` the validation split itself
(optimistic, and said so).
The paper's two classifiers are FC layers with dropout 0.2 after its GCSA-enhanced backbones,
trained with its coarse-fine granularity loss; here they sit on stage one's frozen features and
train with ``loss.kind``.

**How m and n are chosen** (``weights``). The paper: "we use the key frame alignment technology
for speech and facial expressions to calculate the weights of speech and facial expressions, and
then input these weights into the feature fusion layer"; it says no more (no grid search, no
formula). ``weights = "keyframe"`` (the ``yu2025`` preset) implements that sentence as far as it
goes and guesses the rest: the weights are *calculated* from the two modalities' predictions of
the same, aligned frames (each frame's face with the audio window centred on it: stage two's
alignment of the two clocks), taken as key frames: every labelled selection frame (guessed: the
paper does not say which frames are key frames); each modality's weight is proportional to its
macro-F1 there (guessed: the paper names no score), scaled so that the better one gets
``max_weight`` and rounded half up, at least 1. ``weights = "grid"`` (the head's default) scores
all pairs instead and keeps the best. Either way ``metrics.json["grid"]`` holds the full table,
``"best"`` the pair used and ``"rule"`` which rule chose it.

**Loss on the fused prediction** (``loss.on = "fused"``, the ``yu2025`` preset): eq. 6 is the
loss of the fused P, so the branches train through P only (:func:`pipeline.training.losses.
proportional_log_probs`). Training uses the head's current pair: (1, 1) in the first epoch, then
the pair fitted after each epoch's selection pass (kept in the checkpoint, so a resumed run goes
on with the same). ``loss.on = "branches"`` sums each branch's own loss (P never enters training).

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
from pipeline.training.losses import LossConfig, batch_loss, proportional_log_probs
from pipeline.training.sampling import SamplingConfig, purity_rule
from pipeline.metrics.scores import macro_f1
from pipeline.metrics.search import proportional_search


@dataclass
class ProportionalConfig:
    image: str = DEFAULT_IMAGE  # store array of face features (token maps are mean-pooled)
    audio: tuple[str, ...] = DEFAULT_AUDIO  # dynamic-window audio arrays, averaged like `audio`
    hidden: int = 0  # 0: linear classifiers; else one hidden layer this wide
    dropout: float = 0.2  # dropout on the features (the paper: 0.2 in its FC layer)
    max_weight: int = 5  # m (audio) and n (image) range over 1..max_weight (the paper: 5)
    # How (m, n) are chosen on the selection clips: "grid" (the best macro-F1 of all pairs) or
    # "keyframe" (each modality's macro-F1 on the aligned frames, scaled; see the docstring)
    weights: str = "grid"


WEIGHT_RULES = ("grid", "keyframe")


def keyframe_weights(audio: np.ndarray, image: np.ndarray, labels: np.ndarray,
                     max_weight: int) -> tuple[int, int]:
    """(m, n) proportional to the audio and image macro-F1 on the labelled frames, the better
    modality at ``max_weight``, rounded half up, at least 1 (both 1 when neither scores)."""
    f1 = [macro_f1(labels, probs.argmax(axis=1)) for probs in (audio, image)]
    top = max(f1)
    if top <= 0:
        return 1, 1
    m, n = (max(1, int(np.floor(max_weight * f / top + 0.5))) for f in f1)
    return m, n


def fit_weights(head: Head, audio: np.ndarray, image: np.ndarray, labels: np.ndarray
                ) -> dict[str, Any]:
    """Choose ``head``'s (m, n) by its ``config.weights`` rule and store them in its buffers;
    the metrics.json table (the full grid, the pair chosen, the rule)."""
    config = head.config
    if config.weights not in WEIGHT_RULES:
        raise PipelineError(f"head.weights {config.weights!r}: choose from "
                            f"{', '.join(WEIGHT_RULES)}")
    fit = proportional_search(audio, image, labels, config.max_weight)
    m, n = ((fit.m, fit.n) if config.weights == "grid"
            else keyframe_weights(audio, image, labels, config.max_weight))
    head.m.fill_(m)
    head.n.fill_(n)
    weights = list(range(1, config.max_weight + 1))
    return {"grid": {"m": weights, "n": weights, "macro_f1": fit.grid.tolist(), "best": [m, n],
                     "rule": config.weights}}


def fused_or_branch_loss(head: Head, logits: dict[str, torch.Tensor], targets: torch.Tensor,
                         weights: torch.Tensor | None, config: LossConfig) -> torch.Tensor:
    """``loss.on = "fused"``: the loss of P = (m Pa + n Pv) / (m + n) with the head's current
    (m, n); else the sum of the two branches' losses."""
    if config.on != "fused":
        return Head.loss(head, logits, targets, weights, config)
    fused = proportional_log_probs(logits["audio"], logits["image"], float(head.m), float(head.n))
    return batch_loss(fused, targets, weights, config)


@register
class ProportionalHead(Head):
    name = "proportional"
    Config = ProportionalConfig
    outputs = ("fusion", "image", "audio")
    primary = "fusion"
    model_outputs = ("image", "audio")
    face_outputs = ("image",)  # the fusion output is derived after faceless frames are filled
    needs_audio = True
    fused_loss = True

    def __init__(self, config: ProportionalConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        if config.max_weight < 1:
            raise PipelineError(f"proportional max_weight {config.max_weight}: need at least 1")
        if config.weights not in WEIGHT_RULES:
            raise PipelineError(f"proportional weights {config.weights!r}: choose from "
                                f"{', '.join(WEIGHT_RULES)}")
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

    def loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor,
             weights: torch.Tensor | None, config: LossConfig) -> torch.Tensor:
        return fused_or_branch_loss(self, logits, targets, weights, config)

    fits_on_validation = True

    def fit_on(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        """Choose (m, n) on the selection clips' outputs; the pair is kept in the state
        (buffers)."""
        return fit_weights(self, outputs["audio"], outputs["image"], labels)
