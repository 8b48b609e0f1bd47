"""``xattn``: a dual-branch temporal transformer with safe cross-attention both ways.

After Yu et al. 2026 (arXiv 2603.08034, ABAW10 expression 0.5029: BEiT-large faces and
WavLM-large audio, "a dual-branch Transformer architecture featuring a safe cross-attention
mechanism and a modality dropout strategy", focal loss, "sliding-window soft voting"). Over a
window of ``L`` frames (:mod:`pipeline.fusion.heads.windowed`)::

    V = LayerNorm + Linear(face features) + position      [L, dim]   (masked: no face, padding)
    A = LayerNorm + Linear(audio features) + position     [L, dim]   (masked: no audio, padding)
    V = self-attention layers (V), A = self-attention layers (A)          ``layers`` each
    per cross layer:  V' = V + SafeAttention(q = V, kv = A)
                      A' = A + SafeAttention(q = A, kv = V)
                      V, A = V' + FF(V'), A' + FF(A')                     ``cross_layers``
    y_t = Linear(LayerNorm(mean of V_t and A_t over the modalities present at t))

**Safe attention.** Where every key of a window is masked (no face in the whole window, a clip
without audio, a modality dropped), the attention output is exactly 0 instead of the NaN of a
softmax over nothing, so the residual keeps the query branch unchanged: with all faces masked the
audio branch sees no cross-attention, the fusion at each frame is the audio branch alone, and
the output equals :meth:`XAttnHead.audio_only` (a test holds this). Masked inputs are zeroed
before they enter, so whatever the store holds there cannot leak.

Not stated in the reachable text (abstract), so ours, each a config field: layer counts, widths,
pre-norm blocks, learned positions, the per-frame fusion (mean over the present branches), the
window (64 frames, training stride 16, inference stride 32) and the voting weights (uniform).
Modality dropout masks a whole window's modality (``pipeline.fusion.modality``). Focal loss is
the loop's ``loss.kind = "focal"`` (the ``yu2026`` preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.data.labels import NUM_CLASSES
from pipeline.fusion import modality
from pipeline.fusion.heads import register
from pipeline.fusion.heads.windowed import WindowConfig, WindowHead


@dataclass
class XAttnConfig(WindowConfig):
    dim: int = 128  # width of both branches
    heads: int = 4  # attention heads
    layers: int = 1  # self-attention layers per branch before the cross layers
    cross_layers: int = 1  # cross-attention layers (each both ways)
    ff: int = 256  # feed-forward width


def safe_attention(attention: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor,
                   key_mask: torch.Tensor) -> torch.Tensor:
    """``attention(query, keys, keys)`` over the keys where ``key_mask`` [B, K] is True; exactly 0
    for a sample with no key at all (instead of NaN)."""
    any_key = key_mask.any(dim=1)
    usable = key_mask | ~any_key[:, None]  # keyless samples attend to anything, then are zeroed
    out, _ = attention(query, keys, keys, key_padding_mask=~usable, need_weights=False)
    return torch.where(any_key[:, None, None], out, torch.zeros_like(out))


class Block(nn.Module):
    """Pre-norm attention (self or cross) and feed-forward, with safe attention."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm_q, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None  # self-attention: the query's norm
        self.attention = nn.MultiheadAttention(dim, heads, dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None, key_mask: torch.Tensor
                ) -> torch.Tensor:
        """``keys`` is None in a self-attention block (it attends over ``x``)."""
        q = self.norm_q(x)
        kv = q if self.norm_kv is None else self.norm_kv(keys)
        x = x + safe_attention(self.attention, q, kv, key_mask)
        return x + self.ff(self.norm_ff(x))


@register
class XAttnHead(WindowHead):
    name = "xattn"
    Config = XAttnConfig

    def __init__(self, config: XAttnConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        d = config.dim
        self.embed_image = nn.Sequential(nn.LayerNorm(self.d_image), nn.Linear(self.d_image, d))
        self.embed_audio = nn.Sequential(nn.LayerNorm(max(self.d_audio, 1)),
                                         nn.Linear(max(self.d_audio, 1), d))
        self.position = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, config.length, d),
                                                           std=0.02))

        def blocks(n: int, cross: bool) -> nn.ModuleList:
            return nn.ModuleList(Block(d, config.heads, config.ff, config.dropout, cross)
                                 for _ in range(n))

        self.self_image, self.self_audio = blocks(config.layers, False), blocks(config.layers, False)
        self.cross_image = blocks(config.cross_layers, True)
        self.cross_audio = blocks(config.cross_layers, True)
        self.norm = nn.LayerNorm(d)
        self.classify = nn.Linear(d, NUM_CLASSES)
        self.add_au_output(d)

    def _masks(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Face and audio masks [B, L], modality dropout applied (training only)."""
        image_mask, audio_mask = inputs["image_mask"], inputs["audio_mask"]
        keep_image, keep_audio = modality.modality_keep(
            image_mask.shape[0], self.config.modality_dropout, self.config.modality_dropout_which,
            self.training, image_mask.device)
        return image_mask & keep_image[:, None], audio_mask & keep_audio[:, None]

    def _branch(self, features: torch.Tensor, mask: torch.Tensor, embed: nn.Module,
                layers: nn.ModuleList) -> torch.Tensor:
        if features.shape[-1] == 0:  # no audio arrays: a branch of zeros, always masked
            features = features.new_zeros(*features.shape[:-1], 1)
        x = embed(torch.where(mask[..., None], features, torch.zeros_like(features)))
        x = x + self.position[:, :x.shape[1]]
        for layer in layers:
            x = layer(x, None, mask)
        return x

    def _classify(self, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        trunk = self.norm(fused)  # AU and VA layers sit here too (head.tasks)
        return self.with_au(trunk, {"main": self.classify(trunk)})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image_mask, audio_mask = self._masks(inputs)
        v = self._branch(inputs["image"], image_mask, self.embed_image, self.self_image)
        a = self._branch(inputs["audio"], audio_mask, self.embed_audio, self.self_audio)
        for to_image, to_audio in zip(self.cross_image, self.cross_audio):
            v, a = to_image(v, a, audio_mask), to_audio(a, v, image_mask)
        mi, ma = image_mask[..., None], audio_mask[..., None]
        both = torch.where(mi, v, torch.zeros_like(v)) + torch.where(ma, a, torch.zeros_like(a))
        fused = both / (mi.to(v.dtype) + ma.to(a.dtype)).clamp_min(1.0)
        return self._classify(fused)

    def audio_only(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The audio branch alone (no face branch, no cross-attention): what ``forward`` must
        equal when every face is masked."""
        audio_mask = inputs["audio_mask"]
        a = self._branch(inputs["audio"], audio_mask, self.embed_audio, self.self_audio)
        for to_audio in self.cross_audio:
            a = a + to_audio.ff(to_audio.norm_ff(a))  # the cross layer with nothing to attend
        return self._classify(torch.where(audio_mask[..., None], a, torch.zeros_like(a)))
