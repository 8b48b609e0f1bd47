"""``timm``: any timm image model on face crops: a pooled vector per frame, optionally its map.

``config.model`` is any timm name: ``vit_small_patch14_dinov2`` (DINOv2), ``resnet18``/``resnet50``
(DAN, paper 001: torchvision/VGGFace2/MS-Celeb ResNets share timm's names), ``convnext_*``,
``efficientnet_*``, swin, ... Each runs with its own input size and eval preprocessing (timm's
``resolve_model_data_config`` + ``create_transform``; ``crop_pct`` overrides the centre crop,
``mean``/``std`` the normalisation, for checkpoints trained with other statistics).
The stored vector is timm's own ``forward_head(forward_features(x), pre_logits=True)``.

``map = true`` also stores the final feature map as ``<name>_map`` ``[H, W, C]`` (channels last:
CNN maps are transposed from NCHW; a ViT's patch tokens are laid on their grid, class/register
tokens dropped): ``[7, 7, 512]`` for ResNet-18 and ``[7, 7, 2048]`` for ResNet-50 at 224. Maps are
big (float16: 49 KB/frame for ResNet-18, 196 KB for ResNet-50); ``map_size = k`` average-pools
the map to ``k x k`` cells before storing (adaptive average pooling, as a head's own pooling
would): ResNet-50 at 3x3 is 36 KB/frame; that changes what a head sees. ``map_every = k`` keeps
the map as it is but only at every k-th frame (frames 0, k, 2k, ... of each clip, as paper 004
samples frames at equal intervals): the other rows are zeros, which the store's compressor all but
removes (about 1/k of the bytes), and ``<name>_map_valid`` (the store's companion-mask rule,
:func:`pipeline.features.store_format.mask_name`) marks the frames that hold one. A head reading
the map trains only on those frames and sees exactly the maps it would see with
``map_every = 1``; frames between take the prediction of the nearest frame with a map (the
faceless-frame rule of stage two). No channel reduction is offered yet.

``crops`` lists extra centre-crop fractions: the vector (and map) is then the mean over the
model's own crop and each listed one (multi-crop averaging, as the 2026 ABAW leader averages
re-crops of each face). ``preprocess`` stacks the crops along the channel axis
(``[3 * n_crops, H, W]``, so the stage batches them like any image) and ``forward`` splits them.

Weights: ``--weights`` names a file or folder in any layout :mod:`checkpoints` reads (a folder
``fer-pipeline finetune`` wrote brings its preprocessing: input size, mean/std, crop; the options
above still win; :mod:`pipeline.features.weights_record`); a whole pickled model needs
``--set trust_code=true`` (it runs the file's code; docs/trust.md). Without weights: seeded random,
as every extractor.
"""

from pipeline.compat import ensure_torchvision

ensure_torchvision()

from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import timm.data  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register  # noqa: E402
from pipeline.features.extractors.timm_models import build_timm, feature_map, timm_probe  # noqa: E402
from pipeline.features.store_format import mask_name  # noqa: E402
from pipeline.features.weights_record import check_family, image_data_config  # noqa: E402


@dataclass
class TimmImageConfig:
    model: str = "resnet50"  # any timm model name (timm.list_models())
    map: bool = False  # also store the final feature map [H, W, C] as <name>_map
    map_size: int = 0  # average-pool the stored map to map_size x map_size cells; 0: as is
    map_every: int = 1  # store the map at every k-th frame only (zeros between, <name>_map_valid)
    # Centre-crop fraction of the eval transform; unset: the weights record's, else the model's
    # own. 1.0 keeps the whole crop.
    crop_pct: float | None = None
    crops: tuple[float, ...] = ()  # extra crop fractions averaged with the main crop (multi-crop)
    # Per-channel (R, G, B) normalisation in 0..1 units; unset: the weights record's, else the
    # model's own (ImageNet for most).
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@register
class TimmImage(ImageExtractor):
    name = "timm"
    Config = TimmImageConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        self._probe = probe = timm_probe(c.model)
        if c.map and probe.layout == "unknown":
            raise PipelineError(f"timm: {c.model} gives no spatial map {probe.token_shape}; unset map")
        if c.map_size < 0 or (c.map_size and c.map and c.map_size > min(probe.map_shape[:2])):
            raise PipelineError(f"timm: map_size {c.map_size} outside 0..{min(probe.map_shape[:2])}")
        if c.map_every < 1:
            raise PipelineError(f"timm: map_every {c.map_every}: need 1 (every frame) or more")
        if any(not 0 < p <= 1 for p in c.crops):
            raise PipelineError(f"timm: crop fractions must be in (0, 1], got {c.crops}")
        check_family(self.weights_record, "timm", c.model, self.weights)
        data_config = image_data_config(probe.data_config, self.weights_record)
        if c.crop_pct is not None:
            data_config["crop_pct"] = c.crop_pct
        for key in ("mean", "std"):
            if getattr(c, key) is not None:
                data_config[key] = tuple(getattr(c, key))
        self.data_config = data_config
        self._transforms = [timm.data.create_transform(**data_config, is_training=False)] + [
            timm.data.create_transform(**{**data_config, "crop_pct": p}, is_training=False)
            for p in c.crops]

    def key_config(self) -> dict:
        # ``trust_pickle`` was this config's field (now stage one's trust_code): kept in the key
        # under its old name and value, so stores written before keep their keys.
        return {**super().key_config(), "trust_pickle": self.trust_code}

    def outputs(self) -> dict[str, ArraySpec]:
        specs = {self.name: ArraySpec((self._probe.num_features,))}
        if self.config.map:
            h, w, ch = self._probe.map_shape
            k = self.config.map_size
            specs[f"{self.name}_map"] = ArraySpec((k, k, ch) if k else (h, w, ch))
            if self.config.map_every > 1:
                specs[mask_name(f"{self.name}_map")] = ArraySpec((), dtype="bool")
        return specs

    def assemble(self, clip: Any, buffers: dict[str, np.ndarray],
                 arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """As every extractor, then (``map_every > 1``) the map kept at every k-th frame only."""
        k = self.config.map_every
        name = f"{self.name}_map"
        if self.config.map and k > 1:
            kept = np.zeros(clip.n_frames, dtype=bool)
            kept[::k] = True
            buffers = dict(buffers)
            if name in buffers:
                buffers[name] = np.where(kept.reshape(-1, 1, 1, 1), buffers[name], 0)
            arrays = {**arrays, mask_name(name): kept}
        return super().assemble(clip, buffers, arrays)

    def load(self) -> None:
        if self._model is None:
            model = self.build(lambda: build_timm(self.config.model, self.weights,
                                                  self.trust_code, option="configs.timm.model"))
            self._model = self.freeze(model, channels_last=True)

    def preprocess(self, image: Any) -> torch.Tensor:
        return torch.cat([t(image) for t in self._transforms], dim=0)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.load()
        n_crops = len(self._transforms)
        b, c3, h, w = batch.shape
        x = batch.reshape(b * n_crops, c3 // n_crops, h, w).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            tokens = self._model.forward_features(x)
            pooled = self._model.forward_head(tokens, pre_logits=True)
        out = {self.name: pooled.float().reshape(b, n_crops, -1).mean(dim=1).cpu()}
        if self.config.map:
            fmap = feature_map(tokens.float(), self._probe)  # [B * n_crops, H, W, C]
            if self.config.map_size:
                k = self.config.map_size
                fmap = F.adaptive_avg_pool2d(fmap.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)
            out[f"{self.name}_map"] = fmap.reshape(b, n_crops, *fmap.shape[1:]).mean(dim=1).cpu()
        return out
