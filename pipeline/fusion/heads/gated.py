"""``gated``: per-frame learned gates over any number of image and audio arrays.

After Sun and Gao 2026 (arXiv 2603.12221, the ABAW10 expression leader: DINOv2 face features
averaged over several re-crops and frame-aligned wav2vec2 features "integrated via a lightweight
gated fusion module, followed by inference-time temporal smoothing"). Per frame ``t``, with
``M`` arrays (images first, then audio)::

    h_m = GELU(Linear(LayerNorm(x_m)))                 each array projected to ``dim``
    h_m = 0 where the array is absent                  no face, no audio, purity (training)
    z   = Linear(Concat(h_1 .. h_M))                   gate logits [M] (or [M, dim])
    g_m = sigmoid(z_m) * present_m                     ``gate = "sigmoid"`` (default)
    g   = softmax over the present m of z              ``gate = "softmax"`` (0 if none present)
    y   = Classifier(sum_m g_m * h_m)                  LayerNorm, dropout, linear (or MLP)

**A missing face gives its gate 0 by construction**: its features are zeroed before the gate
sees them and its gate is multiplied by (or, for softmax, masked to) zero, so the frame's output
is the audio arrays' alone, whatever the store holds at that frame. Frames without a face are
therefore predicted by the head itself (``faceless = "own"``: ``face_outputs`` is empty, no
nearest-face filling; ``"nearest"`` writes the nearest face's prediction there instead, as heads
with face outputs do) and train with it either way; a frame trains when it is labelled and has a
face or usable audio.

**Multi-crop arrays.** Stage one may store re-crops of an image array ``NAME`` as
``NAME_crop1 .. NAME_crop{K-1}`` beside ``NAME`` (crop 0), all of the same shape; with
``crops = K`` the head reads all ``K`` and averages their (token-pooled) features per frame, as
the paper averages its re-crops' features. ``crops = 1`` reads ``NAME`` alone.

What the paper's text reachable here (its abstract and introduction) does not state, so ours,
each a config field: the gate's form (a sigmoid gate per array computed from all projected
arrays, GMU-like, generalised to ``M`` inputs; ``gate = "softmax"`` for weights that sum to one
over the present arrays), its width (one scalar per array, ``gate_width = "channel"`` for one per
channel), ``dim``, the classifier. The temporal smoothing is stage three's (``ensemble``).

AUs and VA (``tasks = ["expr", "au", "va"]``): AU and VA layers on the classifier's trunk over the
gated sum (as ``image``'s); they train on frames with a face or audio, every window with audio
(the purity test masks windows only for the examples drawn for expressions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.fusion import modality
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.heads import Batch, Classifier, Head, TaskConfig, pooled, register
from pipeline.fusion.heads.unimodal import DEFAULT_AUDIO, DEFAULT_IMAGE, targets_of
from pipeline.training.sampling import SamplingConfig, purity_rule

GATES = ("sigmoid", "softmax")
GATE_WIDTHS = ("scalar", "channel")
CROP_SUFFIX = "_crop"  # re-crop k of image array NAME is stored as NAME_crop<k> (k >= 1)


def crop_names(name: str, crops: int) -> tuple[str, ...]:
    """The store arrays of image array ``name`` with ``crops`` re-crops (crop 0 is ``name``)."""
    return (name, *(f"{name}{CROP_SUFFIX}{k}" for k in range(1, crops)))


@dataclass
class GatedConfig(TaskConfig):
    images: tuple[str, ...] = (DEFAULT_IMAGE,)  # image arrays [T, D] or maps (pooled), one gate each
    audio: tuple[str, ...] = DEFAULT_AUDIO  # audio arrays [T, D], one gate each (may be empty)
    crops: int = 1  # re-crops per image array (NAME, NAME_crop1 ..), features averaged
    dim: int = 128  # width every array is projected to
    gate: str = "sigmoid"  # "sigmoid" (independent gates) or "softmax" (over present arrays)
    gate_width: str = "scalar"  # "scalar": one gate per array; "channel": one per channel
    hidden: int = 0  # classifier: 0 = linear on the fused features, else one hidden layer
    dropout: float = 0.1  # dropout on the projections and in the classifier
    modality_dropout: float = 0.0  # training: a sample loses one modality with this probability
    modality_dropout_which: str = "either"  # "either", "image" or "audio" (pipeline.fusion.modality)
    faceless: str = "own"  # frames without a face: "own" output, or the "nearest" face's prediction


@register
class GatedHead(Head):
    name = "gated"
    Config = GatedConfig
    face_outputs = ()  # "faceless = own" (the default): faceless frames keep the audio gates' output

    def __init__(self, config: GatedConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        if not config.images and not config.audio:
            raise PipelineError("gated: name at least one image or audio array")
        if config.crops < 1 or config.gate not in GATES or config.gate_width not in GATE_WIDTHS:
            raise PipelineError(f"gated crops {config.crops}, gate {config.gate!r}, gate_width "
                                f"{config.gate_width!r}: need crops >= 1, gate one of "
                                f"{', '.join(GATES)}, gate_width one of {', '.join(GATE_WIDTHS)}")
        modality.check(config.modality_dropout, config.modality_dropout_which, self.name)
        self.face_outputs = modality.face_outputs(config.faceless, self.name)
        for name in config.images:
            shapes = {dims[crop] for crop in crop_names(name, config.crops)}
            if len(shapes) != 1:
                raise PipelineError(f"gated: the crops of {name!r} differ in shape: {sorted(shapes)}")
        arrays = (*config.images, *config.audio)
        d = config.dim
        self.project = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dims[n][-1]), nn.Linear(dims[n][-1], d), nn.GELU(),
                          nn.Dropout(config.dropout)) for n in arrays)
        m = len(arrays)
        self.gate_layer = nn.Linear(m * d, m * d if config.gate_width == "channel" else m)
        self.register_buffer("is_image", torch.tensor([True] * len(config.images)
                                                      + [False] * len(config.audio)))
        self.classifier = Classifier(d, config.hidden, config.dropout)
        self.add_au_output(self.classifier.width)

    @classmethod
    def request(cls, config: GatedConfig, sampling: SamplingConfig) -> FeatureRequest:
        images = tuple(c for name in config.images for c in crop_names(name, config.crops))
        return FeatureRequest(arrays=(*images, *config.audio), audio=tuple(config.audio),
                              purity=purity_rule(tuple(config.audio), sampling))

    def trainable(self, table: Table) -> np.ndarray:
        ok = table.labels >= 0
        present = table.valid if self.config.images else np.zeros_like(ok)
        if self.config.audio:
            present = present | (table.audio & table.window_ok.any(axis=1))
        return ok & present

    def task_frames(self, table: Table) -> np.ndarray:
        """AUs and VA train where a face or audio is present (no purity test: it concerns the
        expression labels)."""
        present = table.valid if self.config.images else np.zeros(table.n_rows, dtype=bool)
        return present | table.audio if self.config.audio else present

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        inputs: dict[str, torch.Tensor] = {}
        present = []
        for i, name in enumerate(self.config.images):
            crops = [pooled(table.take(c, examples)) for c in crop_names(name, self.config.crops)]
            inputs[f"x{i}"] = torch.from_numpy(np.mean(crops, axis=0, dtype=np.float32))
            present.append(table.valid[examples])
        offset = len(self.config.images)
        for j, name in enumerate(self.config.audio):
            inputs[f"x{offset + j}"] = torch.from_numpy(table.take(name, examples))
            usable = table.audio[examples]
            if counts is not None:  # training: the window's label purity too (expression rows)
                usable = usable & (table.window_ok[examples, j] | (counts[examples] == 0))
            present.append(usable)
        inputs["present"] = torch.from_numpy(np.stack(present, axis=1))
        return inputs, targets_of(table, examples), None

    def gates(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The gates ``g`` [B, M] (or [B, M, dim]) and the projected arrays ``h`` [B, M, dim],
        modality dropout applied in training."""
        present = inputs["present"]
        keep_image, keep_audio = modality.modality_keep(
            present.shape[0], self.config.modality_dropout, self.config.modality_dropout_which,
            self.training, present.device)
        present = present & torch.where(self.is_image, keep_image[:, None], keep_audio[:, None])
        mask = present.to(torch.float32)[..., None]
        h = torch.stack([p(inputs[f"x{i}"]) for i, p in enumerate(self.project)], dim=1)
        h = torch.where(present[..., None], h, torch.zeros_like(h))  # even if x held NaN there
        z = self.gate_layer(h.flatten(1))
        if self.config.gate_width == "channel":
            z = z.view_as(h)
        else:
            mask = mask[..., 0]
        if self.config.gate == "sigmoid":
            g = torch.sigmoid(z) * mask
        else:  # softmax over the present arrays (a finite fill: a frame with none stays finite,
            # and its gates are all 0 after the mask)
            g = torch.softmax(z.masked_fill(mask == 0, -1e9), dim=1) * mask
        return g, h

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g, h = self.gates(inputs)
        fused = (h * (g if g.dim() == 3 else g[..., None])).sum(dim=1)
        if not self.aux_outputs:
            return {"main": self.classifier(fused)}
        trunk = self.classifier.trunk(fused)
        return self.with_au(trunk, {"main": self.classifier.net[-1](trunk)})
