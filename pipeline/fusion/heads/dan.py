"""``dan``: DAN (Wen et al. 2021, arXiv 2109.07270) on cached face maps, as in Jeong et al. 2022.

Per frame, on the frozen backbone's face map ``x`` [C_in, H, W] (``swin_tokens`` [7, 7, 768], or
a ResNet's [7, 7, 512 | 2048]; any ``[T, H, W, C]`` array of the store)::

    feature clustering   f = ReLU(BN(Conv1x1(x)))                    [width, H, W]  (trainable)
    head k = 1..K        s_k = f * sum_c ReLU(BN(Conv3x3(g)) + BN(Conv1x3(g)) + BN(Conv3x1(g)))
                               with g = BN(Conv1x1(f)) [width/2]      spatial attention unit
                         a_k = GAP(s_k) * sigmoid(L2(ReLU(BN(L1(GAP(s_k))))))   channel unit [width]
    fusion               h = log_softmax([a_1 .. a_K], over the heads)          (K > 1 only)
    logits               BN(FC(sum_k h_k))                            FC then BN, as DAN's code
                                                                      and paper 001's text

DAN's backbone (the "feature clustering network") is trained; here the backbone is frozen in
stage one, so a trainable adapter (1x1 convolution, BN, ReLU) takes its place and the affinity
loss shapes the adapter's pooled output. Total loss::

    L = L_cls(logits)  +  affinity_weight * L_af  +  partition_weight * L_pt

* ``L_cls``: the run's ``loss`` section (``focal`` for paper 001, via the ``jeong2022`` preset).
* **Affinity loss** (DAN's eq. and code): with ``p_i = GAP(f_i)`` and learned class centres
  ``c_1..c_8`` (initialised N(0, 1), as DAN's code)::

      L_af = sum_i w_i ||p_i - c_{y_i}||^2 / sigma_c^2  /  sum_i w_i,
      sigma_c^2 = sum_d Var_k(c_kd)        (unbiased variance over the 8 centres, summed over d)

  DAN's code averages over the batch (``w_i`` = 1); unlabelled frames and weight 0 are left out.
* **Partition loss**: ``v_ij = Var_k(h_ikj)`` (unbiased variance over the K heads of channel j of
  frame i, on the log-softmax-scaled head outputs). DAN's paper writes
  ``mean_ij log(1 + K / v_ij)``; the authors' code (which paper 001 extends, and whose numbers
  the papers report) computes ``log(1 + K / (mean_ij v_ij + eps))``. ``partition = "code"``
  (default) or ``"paper"`` chooses; ``eps`` is float64 machine epsilon, as their code. K = 1
  has no partition loss (and no log-softmax), as their code.

The losses and the attention units live in :mod:`pipeline.training.dan`, shared with the
end-to-end fine-tune (``finetune --set head=dan``). Loss weights default to DAN's code (1 and 1). The forward returns a :class:`DANOutput`: the
``main`` logits (the only model output; predictions and the ensemble see nothing else) carrying
the pooled features and the fused head outputs in ``.extras`` for :meth:`DANHead.loss`, so the
auxiliary losses need no state on the module.

**Biases.** DAN's code gives the convolutions and linear layers that feed a batch norm a bias;
the batch norm cancels it (its gradient is zero), so those layers have none here.

**Batch norm with one example.** DAN's 1-d batch norms (channel unit, classifier) cannot compute
batch statistics from a single example; a training batch of one (the last of an epoch can be)
is normalised with the running statistics instead.

**Starting from the fine-tuned heads** (``init_from = DIR``, paper 001's chain as the paper ran
it): DIR is a ``finetune --set head=dan`` weights folder; its DAN heads
(``dan_heads.safetensors``, hash-checked against its record) are loaded before training, there
is no adapter (``width`` is the map's channels: the map is the fine-tuned backbone's own, and the
store must record that it was extracted with DIR), so before any training the head gives the
fine-tuned network's DAN logits on the stored map. Refused in one line: a folder without DAN
heads, heads of other shapes (``heads``, ``reduction``), a store extracted with other weights.

**Attention maps.** :meth:`DANHead.attention` gives each head's spatial map (the channel sum that
multiplies ``f``, [K, H, W]) and channel weights ([K, width]). :func:`write_attention` writes
them for a few validation frames of a finished run to ``RUN/attention.npz`` (keys below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import io as atomic
from pipeline.config import from_dict
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.features.weights_record import read_dan_heads
from pipeline.fusion.data import FeatureRequest, Table, load_table
from pipeline.fusion.heads import Batch, Head, register
from pipeline.fusion.heads.unimodal import targets_of
from pipeline.training.losses import LossConfig, batch_loss
from pipeline.training.sampling import SamplingConfig
from pipeline.runs.layout import RunPaths
from pipeline.training.dan import (
    BatchNorm1d,
    CrossAttentionHead,
    affinity_loss,
    check_dan,
    partition_loss,
)



@dataclass
class DANConfig:
    image: str = "swin_tokens"  # store array of face maps [T, H, W, C]
    width: int = 512  # adapter output channels (DAN's ResNet-18 map has 512)
    heads: int = 4  # attention heads K (paper 001 and DAN: 4)
    reduction: int = 16  # channel unit's hidden size = width // reduction (DAN: 512 -> 32)
    affinity_weight: float = 1.0  # weight of the affinity loss (DAN's code: 1)
    partition_weight: float = 1.0  # weight of the partition loss (DAN's code: 1)
    partition: str = "code"  # "code": log(1 + K / mean variance); "paper": mean log(1 + K / var)
    # a `finetune --set head=dan` weights folder: start from its DAN heads, no adapter (the map
    # must be that folder's backbone's: checked against the store); None: fresh heads + adapter
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_dan(self.heads, self.reduction, self.width, self.affinity_weight,
                  self.partition_weight, self.partition)


class DANOutput(dict):
    """The head's logits by output name, with ``extras`` (tensors the auxiliary losses need)."""

    def __init__(self, logits: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> None:
        super().__init__(logits)
        self.extras = extras


@register
class DANHead(Head):
    """DAN's clustering adapter, multi-head cross attention and attention fusion on face maps."""

    name = "dan"
    Config = DANConfig

    @classmethod
    def after_training(cls, run_dir: Any, store: FeatureStore, clips: Sequence[Clip]) -> None:
        write_attention(run_dir, store, clips)  # what each attention head looks at

    def __init__(self, config: DANConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        shape = dims[config.image]
        if len(shape) != 3:
            raise PipelineError(f"dan: image array {config.image!r} has per-frame shape {shape}; "
                                "need a face map [H, W, C] (e.g. swin_tokens)")
        if config.init_from is not None:  # the fine-tuned backbone's own map: no adapter
            width = shape[-1]
            check_dan(config.heads, config.reduction, width, config.affinity_weight,
                      config.partition_weight, config.partition)
            self.adapter: nn.Module = nn.Identity()
        else:
            width = config.width
            self.adapter = nn.Sequential(nn.Conv2d(shape[-1], width, 1, bias=False),
                                         nn.BatchNorm2d(width), nn.ReLU())
        self.centres = nn.Parameter(torch.randn(NUM_CLASSES, width))
        self.heads = nn.ModuleList(CrossAttentionHead(width, width // config.reduction)
                                   for _ in range(config.heads))
        self.fc = nn.Linear(width, NUM_CLASSES, bias=False)
        self.bn = BatchNorm1d(NUM_CLASSES)

    def start_from(self, store: FeatureStore) -> None:
        """With ``init_from``: the fine-tune's DAN heads (verified), after checking that
        ``store``'s map was extracted with that same weights folder, whole, and that the heads'
        shapes are this head's (one line naming the reason otherwise)."""
        folder = self.config.init_from
        if folder is None:
            return
        state = read_dan_heads(folder)
        check_same_weights(store, self.config.image, folder)
        mine = {k: v for k, v in self.state_dict().items() if not k.startswith("adapter.")}
        if set(state) != set(mine) or any(state[k].shape != mine[k].shape for k in mine):
            wrong = sorted(k for k in set(state) | set(mine)
                           if k not in state or k not in mine or state[k].shape != mine[k].shape)
            saved, want = state.get(wrong[0]), mine.get(wrong[0])
            raise PipelineError(
                f"{folder}: its DAN heads do not fit head dan on {self.config.image} "
                f"(head.heads={self.config.heads}, head.reduction={self.config.reduction}, width "
                f"{self.dims[self.config.image][-1]}): {wrong[0]} is "
                f"{'absent' if saved is None else tuple(saved.shape)} there, "
                f"{'absent' if want is None else tuple(want.shape)} here; set head.heads and "
                "head.reduction to the fine-tune's dan.heads and dan.reduction")
        self.load_state_dict(state, strict=False)

    @classmethod
    def request(cls, config: DANConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image,))

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        maps = torch.from_numpy(table.take(self.config.image, examples))  # [B, H, W, C]
        return {"image": maps.permute(0, 3, 1, 2).contiguous()}, targets_of(table, examples), None

    def _heads(self, inputs: dict[str, torch.Tensor]):
        features = self.adapter(inputs["image"])
        parts = [head(features) for head in self.heads]
        outs, spatial, channel = (torch.stack(p, dim=1) for p in zip(*parts))
        return features, outs, spatial, channel

    def forward(self, inputs: dict[str, torch.Tensor]) -> DANOutput:
        features, outs, _, _ = self._heads(inputs)
        if outs.shape[1] > 1:
            outs = F.log_softmax(outs, dim=1)
        logits = self.bn(self.fc(outs.sum(dim=1)))
        return DANOutput({"main": logits}, {"features": features.mean(dim=(2, 3)), "heads": outs})

    @torch.no_grad()
    def attention(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's spatial map [B, K, H, W] and channel weights [B, K, width]."""
        _, _, spatial, channel = self._heads(inputs)
        return spatial, channel

    def loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor,
             weights: torch.Tensor | None, config: LossConfig) -> torch.Tensor:
        """Classification + affinity_weight * affinity + partition_weight * partition."""
        if not isinstance(logits, DANOutput):
            raise TypeError("DANHead.loss needs the DANOutput of DANHead.forward")
        extras, cfg = logits.extras, self.config
        total = batch_loss(logits["main"], targets, weights, config)
        if cfg.affinity_weight:
            total = total + cfg.affinity_weight * affinity_loss(extras["features"], targets,
                                                                self.centres, weights)
        if cfg.partition_weight:
            total = total + cfg.partition_weight * partition_loss(extras["heads"], cfg.partition)
        return total


def check_same_weights(store: FeatureStore, array: str, folder: str | Path) -> None:
    """Refuse, in one line, a ``store`` whose ``array`` was not extracted with the weights folder
    ``folder`` (the store records each extractor's weights and their sha256, of the whole folder)
    or was pooled (``map_size``): DAN heads trained on that backbone's map see nothing else."""
    from pipeline.features.weights_record import sha256_file

    recorded = store.extractors()
    found = [(name, r) for name, r in recorded.items() if array in r.get("outputs", {})]
    if not found:
        raise PipelineError(f"{store.path}: no extractor recorded for {array!r}; extract it with "
                            f"--weights timm={folder} before head.init_from={folder}")
    name, record = found[0]
    if record.get("weights_sha256") != sha256_file(folder):
        raise PipelineError(
            f"{store.path}: {name} ({array}) was extracted with weights "
            f"{record.get('weights') or 'none (random)'}, not {folder}: head.init_from needs the "
            f"map of that same fine-tuned backbone; extract with --weights {name}={folder}")
    if record.get("config", {}).get("map_size"):
        raise PipelineError(f"{store.path}: {name} stored its map pooled (map_size="
                            f"{record['config']['map_size']}), not the map the fine-tuned DAN "
                            "heads saw; extract with map_size=0 for head.init_from")


# ---- attention maps of a finished run -----------------------------------------------------------


def write_attention(run_dir: str | Path, store: FeatureStore, clips: Sequence[Clip],
                    frames: int = 8) -> Path:
    """Write ``RUN/attention.npz``: the best epoch's attention for ``frames`` validation frames.

    One frame per clip, from clips spread evenly over the validation split: the clip's middle
    frame with a face. Keys: ``spatial`` float32 [F, K, H, W] (each head's spatial map),
    ``channel`` float32 [F, K, width] (each head's channel weights), ``probs`` float32 [F, 8],
    ``labels`` int64 [F] (-1: unlabelled), ``clip_ids`` str [F], ``frames`` int64 [F] (frame
    index in its clip). Written aside, then moved into place.
    """
    paths = RunPaths(run_dir)
    saved = torch.load(paths.best, weights_only=True)
    if saved["config"].get("method") != DANHead.name:
        raise PipelineError(f"{paths.path}: a {saved['config'].get('method')} run, not dan")
    config = from_dict(DANConfig, saved["config"]["head"], "head (dan)")
    dims = {name: tuple(shape) for name, shape in saved["dims"].items()}
    head = DANHead(config, dims)
    head.load_state_dict(saved["model"])
    head.eval()
    val = [clip for clip in clips if clip.split == "val"]
    chosen = [val[i] for i in np.unique(np.linspace(0, len(val) - 1, frames).round().astype(int))
              ] if val else []
    request = DANHead.request(config, SamplingConfig())
    found: dict[str, list] = {key: [] for key in ("spatial", "channel", "probs", "labels",
                                                  "clip_ids", "frames")}
    for clip in chosen:
        table = load_table(store, [clip], request, dims, train=False)
        faces = np.flatnonzero(table.valid)
        if not faces.size:
            continue
        row = faces[faces.size // 2:][:1]
        inputs, targets, _ = head.batch(table, row, None)
        spatial, channel = head.attention(inputs)
        with torch.no_grad():
            probs = torch.softmax(head(inputs)["main"], dim=-1)
        for key, value in (("spatial", spatial), ("channel", channel), ("probs", probs)):
            found[key].append(value[0].numpy().astype(np.float32))
        found["labels"].append(int(targets[0]))
        found["clip_ids"].append(clip.clip_id)
        found["frames"].append(int(row[0]))
    if not found["clip_ids"]:
        raise PipelineError(f"{paths.path}: no validation frame with a face to show attention for")
    arrays = {key: np.stack(value) if key in ("spatial", "channel", "probs") else np.asarray(value)
              for key, value in found.items()}
    return atomic.save_npz(paths.attention, **arrays)
