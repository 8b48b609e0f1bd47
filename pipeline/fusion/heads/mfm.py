"""``mfm``: the Modal Fusion Module of Kim et al. 2023, with its Y_I and Y_A heads.

Per target frame ``t``::

    image tokens   f_I  [K, D_i]   see "Tokens" below
    audio tokens   f_A  [A, D_a]   dynamic-window audio embeddings, one per window (and frame)
    Y_IA = Attention(q = f_A, k = v = f_I)      audio queries over the image   [A, d]
    Y_AI = Attention(q = f_I, k = v = f_A)      image queries over the audio   [K, d]
    Y    = Concat(Y_IA, Y_AI)                   along the token axis, after a [CLS] token
    Y_T  = Linear(two ViT encoder layers (Y)[CLS])
    Y_I  = Linear(frame t's image features),  Y_A = Linear(mean of frame t's audio windows)

with outputs ``fusion`` (Y_T, primary), ``image`` (Y_I) and ``audio`` (Y_A), whose probabilities
stage three may ensemble as the paper does ("the three outputs ... are ensembled").

What the paper says and what we chose:

* The paper trains both Swin-Tiny backbones (image and audio "are trained separately using a Swin
  Transformer") and then fuses; here the backbones are frozen (stage one) and only this head
  trains.
* The paper does not say how Y_I, Y_A and Y_T are trained; here they train together, on the sum
  of their three losses, in one run.
* Its attention is one scaled dot-product over the features themselves (equations 1-2); here it
  is torch's multi-head attention (``heads`` heads, with its query/key/value projections), after
  a LayerNorm + Linear projection of each modality to ``dim``.
* Y_I and Y_A are "linear layers" over the image and audio features; Y_A sees the mean of frame
  ``t``'s window embeddings (the paper has three dynamic audio features and does not say how Y_A
  combines them).
* Which frames train: Y_T and Y_A need audio and at least one window that passes purity. With
  ``image_every_face`` (the ``kim2023`` preset) Y_I trains on every labelled frame with a face, as
  the paper's separately trained image model would (its frames without such a window train Y_I
  only); without it every output trains on the frames Y_T can use.
* The encoder's MLP is ``mlp_ratio`` times ``dim`` wide: 4 in the ``kim2023`` preset, ViT's (the
  paper: "the same structure as the encoder of ViT"), 2 by default (smaller, for the demo).

Tokens (the choice this implementation makes, since the paper does not say how many there are):

* **image**: with per-frame vectors (``swin`` [T, 768]) the tokens are the features of the
  ``2 * context + 1`` frames ``t + k * stride`` for ``k = -context .. context``: the face's recent
  past and near future. With token maps (``swin_tokens`` [T, 7, 7, 768]) they are the 49 spatial
  tokens of frame ``t``. Tokens outside the clip or from frames without a face are masked.
* **audio**: one token per dynamic window (32, 48, 64 frames around ``t``). In training a window
  of frame ``t`` that fails the label-purity test is masked (the paper drops such windows); at
  inference all windows are used. With ``audio_context`` > 0 the windows of the frames
  ``t + k * stride``, ``k = -audio_context..audio_context``, are tokens too (so the module can see
  where the sound changes); purity masks only frame ``t``'s own windows.

Action units and VA (``tasks = ["expr", "au", "va"]``): one AU layer and one VA layer, both on
the fused [CLS] features that Y_T classifies (after the final LayerNorm), not on Y_I's or Y_A's
inputs: those see one modality each, and VA needs both (on the demo, valence follows the face and
arousal the audio), so the layers go where the modalities meet. Their frames are those Y_T trains
on for presence (a face and audio), without the purity test, which concerns expression labels:
the AU and VA examples attend to every window with audio.

So each softmax runs over several keys (``K + 1`` and ``A + 1``); it is never the trivial
softmax over one pooled vector. Each key set starts with a learned **null token** that is never
masked, so a frame whose image or audio tokens are all masked (no face nearby, no audio) still
has a well-defined attention (onto the null token) instead of a division by zero.
The module projects both modalities to ``dim`` with LayerNorm + Linear first, and uses learned
position embeddings (which frame offset / which window) before and after the co-attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.errors import PipelineError
from pipeline.fusion import modality
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
from pipeline.fusion.heads.unimodal import (
    DEFAULT_AUDIO,
    DEFAULT_IMAGE,
    audio_dim,
    audio_tokens,
    image_vectors,
    purity_rows,
    targets_of,
)
from pipeline.training.losses import LossConfig, batch_loss
from pipeline.training.sampling import SamplingConfig, purity_rule


@dataclass
class MFMConfig(TaskConfig):
    image: str = DEFAULT_IMAGE  # store array: [T, D] (temporal tokens) or [T, H, W, D] (spatial)
    audio: tuple[str, ...] = DEFAULT_AUDIO  # dynamic-window audio arrays [T, D]: one token each
    context: int = 4  # temporal image tokens at frames t + k * stride, k = -context..context
    audio_context: int = 0  # audio tokens of frames t + k * stride too, k = -audio_context..
    stride: int = 2  # frames between temporal image tokens
    dim: int = 64  # token width inside the module
    heads: int = 4  # attention heads, in the co-attention and the encoder layers
    layers: int = 2  # ViT encoder layers after the co-attention (the paper: 2)
    mlp_ratio: float = 2.0  # encoder MLP width, as a multiple of dim
    dropout: float = 0.1  # dropout in the module and on the Y_I / Y_A features
    hidden: int = 0  # Y_I and Y_A: 0 = linear classifiers (the paper); else a hidden layer
    modality_dropout: float = 0.0  # training: a sample loses one modality with this probability
    modality_dropout_which: str = "either"  # "either", "image" or "audio" (pipeline.fusion.modality)
    # True: Y_I trains on every labelled face frame, Y_T and Y_A on those with a pure enough audio
    # window; False: all three on the latter only
    image_every_face: bool = False


AUDIO_TRAINS = "audio_trains"  # bool [B] in a training batch's inputs: Y_T and Y_A train here


def _parameter(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))


@register
class ModalFusionHead(Head):
    name = "mfm"
    Config = MFMConfig
    outputs = ("fusion", "image", "audio")
    primary = "fusion"
    face_outputs = ("fusion", "image")
    needs_audio = True

    def __init__(self, config: MFMConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        image_shape = dims[config.image]
        if len(image_shape) not in (1, 3):
            raise PipelineError(f"image array {config.image!r} of per-frame shape {image_shape}: "
                                "need [D] vectors or [H, W, D] token maps")
        if min(config.context, config.audio_context) < 0 or config.stride < 1:
            raise PipelineError(f"mfm context {config.context}, audio_context "
                                f"{config.audio_context}, stride {config.stride}: need contexts "
                                ">= 0 and stride >= 1")
        modality.check(config.modality_dropout, config.modality_dropout_which, self.name)
        self.spatial = len(image_shape) == 3
        n_image = image_shape[0] * image_shape[1] if self.spatial else 2 * config.context + 1
        n_audio = len(config.audio) * (2 * config.audio_context + 1)
        if n_image + n_audio < 3:
            raise PipelineError("mfm needs more than one token on some side: raise mfm.context "
                                "or give several audio windows")
        d_image, d_audio, d = image_shape[-1], audio_dim(dims, config.audio), config.dim
        self.steps = np.arange(-config.context, config.context + 1) * config.stride
        self.audio_steps = np.arange(-config.audio_context, config.audio_context + 1) * config.stride

        self.y_image = Classifier(d_image, config.hidden, config.dropout)
        self.y_audio = Classifier(d_audio, config.hidden, config.dropout)
        self.embed_image = nn.Sequential(nn.LayerNorm(d_image), nn.Linear(d_image, d))
        self.embed_audio = nn.Sequential(nn.LayerNorm(d_audio), nn.Linear(d_audio, d))
        self.position_image = _parameter(1, n_image, d)
        self.position_audio = _parameter(1, n_audio, d)
        self.null_image = _parameter(1, 1, d)
        self.null_audio = _parameter(1, 1, d)
        self.attend_image = nn.MultiheadAttention(d, config.heads, config.dropout, batch_first=True)
        self.attend_audio = nn.MultiheadAttention(d, config.heads, config.dropout, batch_first=True)
        self.cls = _parameter(1, 1, d)
        self.position_fused = _parameter(1, 1 + n_audio + n_image, d)
        layer = nn.TransformerEncoderLayer(d, config.heads, int(d * config.mlp_ratio),
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.y_fusion = nn.Linear(d, NUM_CLASSES)
        self.add_au_output(d)  # on the fused [CLS] features (module docstring)

    @classmethod
    def request(cls, config: MFMConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image, *config.audio), audio=tuple(config.audio),
                              purity=purity_rule(tuple(config.audio), sampling))

    def trainable(self, table: Table) -> np.ndarray:
        if not self.config.image_every_face:
            return super().trainable(table)
        return (table.labels != UNLABELED) & table.valid  # Y_I's frames; loss() narrows Y_T, Y_A

    def loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor,
             weights: torch.Tensor | None, config: LossConfig) -> torch.Tensor:
        audio_ok = logits.pop(AUDIO_TRAINS, None)
        if audio_ok is None:
            return super().loss(logits, targets, weights, config)
        narrowed = torch.where(audio_ok, targets, torch.full_like(targets, UNLABELED))
        return (batch_loss(logits["image"], targets, weights, config)
                + batch_loss(logits["fusion"], narrowed, weights, config)
                + batch_loss(logits["audio"], narrowed, weights, config))

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        name = self.config.image
        if self.spatial:
            maps = table.take(name, examples)  # [B, H, W, D]
            tokens = maps.reshape(len(examples), -1, maps.shape[-1])
            image_mask = np.repeat(table.valid[examples][:, None], tokens.shape[1], axis=1)
            centre = pooled(maps)
        else:
            index, inside = table.window(examples, self.steps)
            tokens = table.take(name, index)  # [B, K, D]
            image_mask = inside & table.valid[index]
            centre = image_vectors(table, name, examples).numpy()
        train = counts is not None
        purity = purity_rows(examples, counts)  # AU and VA examples: every window with audio
        audio, audio_mask = audio_tokens(table, self.config.audio, examples, purity)
        index, inside = table.window(examples, self.audio_steps)  # [B, F] frames
        names = self.config.audio
        context = np.stack([table.take(n, index) for n in names], axis=2)  # [B, F, W, D]
        context_mask = np.repeat((inside & table.audio[index])[..., None], len(names), axis=2)
        if train:  # frame t's own windows: the purity test (the other frames: only presence)
            centre_step = len(self.audio_steps) // 2
            context_mask[:, centre_step] &= table.window_ok[examples] | ~purity[:, None]
        batch = len(examples)
        inputs = {
            "image": torch.from_numpy(centre),
            "image_tokens": torch.from_numpy(tokens),
            "image_mask": torch.from_numpy(image_mask),
            "audio": audio,
            "audio_mask": audio_mask,
            "audio_tokens": torch.from_numpy(context.reshape(batch, -1, context.shape[-1])),
            "audio_token_mask": torch.from_numpy(context_mask.reshape(batch, -1)),
        }
        if train and self.config.image_every_face:  # the frames Y_T and Y_A may train on
            inputs[AUDIO_TRAINS] = torch.from_numpy(
                table.audio[examples] & table.window_ok[examples].any(axis=1))
        return inputs, targets_of(table, examples), None

    def drop_modalities(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Modality dropout (training only, ``pipeline.fusion.modality``): a dropped modality's
        tokens are all masked in the fusion module, which then attends to its null token. Y_I and
        Y_A keep their input: each sees one modality, and masking it would teach them the prior."""
        keep_image, keep_audio = modality.modality_keep(
            inputs["image_mask"].shape[0], self.config.modality_dropout,
            self.config.modality_dropout_which, self.training, inputs["image_mask"].device)
        if bool(keep_image.all()) and bool(keep_audio.all()):
            return inputs
        return {**inputs, "image_mask": inputs["image_mask"] & keep_image[:, None],
                "audio_token_mask": inputs["audio_token_mask"] & keep_audio[:, None]}

    def co_attention(self, inputs: dict[str, torch.Tensor], need_weights: bool = False):
        """Y_IA [B, A, d], Y_AI [B, K, d] and (if asked) their attention weights over the keys
        (null token first): [B, A, 1 + K] and [B, K, 1 + A]."""
        image = self.embed_image(inputs["image_tokens"]) + self.position_image
        audio = self.embed_audio(inputs["audio_tokens"]) + self.position_audio
        batch = image.shape[0]
        keep = torch.ones(batch, 1, dtype=torch.bool, device=image.device)
        image_keys = torch.cat([self.null_image.expand(batch, -1, -1), image], dim=1)
        audio_keys = torch.cat([self.null_audio.expand(batch, -1, -1), audio], dim=1)
        image_mask = torch.cat([keep, inputs["image_mask"]], dim=1)
        audio_mask = torch.cat([keep, inputs["audio_token_mask"]], dim=1)
        y_ia, w_ia = self.attend_image(audio, image_keys, image_keys, key_padding_mask=~image_mask,
                                       need_weights=need_weights)
        y_ai, w_ai = self.attend_audio(image, audio_keys, audio_keys, key_padding_mask=~audio_mask,
                                       need_weights=need_weights)
        return y_ia, y_ai, w_ia, w_ai

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = self.drop_modalities(inputs)
        y_ia, y_ai, _, _ = self.co_attention(inputs)
        batch = y_ia.shape[0]
        fused = torch.cat([self.cls.expand(batch, -1, -1), y_ia, y_ai], dim=1) + self.position_fused
        keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=fused.device),
                          inputs["audio_token_mask"], inputs["image_mask"]], dim=1)
        encoded = self.encoder(fused, src_key_padding_mask=~keep)
        trunk = self.norm(encoded[:, 0])
        out = {
            "fusion": self.y_fusion(trunk),
            "image": self.y_image(inputs["image"]),
            "audio": self.y_audio(masked_mean(inputs["audio"], inputs["audio_mask"])),
        }
        if AUDIO_TRAINS in inputs:  # a training batch: passed on to loss(), which removes it
            out[AUDIO_TRAINS] = inputs[AUDIO_TRAINS]
        return self.with_au(trunk, out)
