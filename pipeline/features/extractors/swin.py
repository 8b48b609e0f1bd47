"""``swin``: Swin-Tiny face-crop features from timm, 768-d pooled per frame (paper 000's backbone).

Paper 000 (Kim et al. 2023) trains a Swin-Tiny on the aligned face crops "resized ... to 224x224"
and fuses its features; here the backbone is frozen and its weights come from a file. The paper's
input is a plain resize: ``crop_pct = 1.0`` (which the ``kim2023`` preset requires). The default
(``crop_pct`` unset) is timm's eval transform for the model, resize to 248 and centre-crop 224,
which cuts about 10% of the face's width and height.

The model is ``timm.create_model(config.model, num_classes=0)``; its output is timm's own
``forward_head(forward_features(x), pre_logits=True)`` (channels_last changes only float rounding).
With ``tokens = true`` the final token map (``forward_features``, ``[7, 7, 768]`` for Swin-Tiny at
224) is stored too, as ``swin_tokens``.

Weights come from a file or folder in any layout :mod:`checkpoints` reads (a ``.pth``/
``.safetensors`` state dict in timm or original Swin format, converted by timm's own
``checkpoint_filter_fn``; a classifier head in it is dropped); :func:`build_timm` refuses a file
that does not cover every weight of the model. Without a file its random weights are drawn from
the extractor's own generator (:mod:`~pipeline.features.extractors.seeding`). Preprocessing is
the model's own eval transform (``resolve_model_data_config`` + ``create_transform``), built from
a meta-device model, so it needs neither weights nor memory and runs in loader threads before
``load()``; a folder written by ``fer-pipeline finetune`` brings its own
(:mod:`pipeline.features.weights_record`).

The timm helpers live in :mod:`timm_models`; the ``timm`` extractor runs any other timm model.
"""

from pipeline.compat import ensure_torchvision

ensure_torchvision()

from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import timm.data  # noqa: E402
import torch  # noqa: E402

from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register  # noqa: E402
from pipeline.features.extractors.timm_models import build_timm, timm_probe  # noqa: E402
from pipeline.features.weights_record import check_family, image_data_config  # noqa: E402

SWIN_TINY = "swin_tiny_patch4_window7_224"


@dataclass
class SwinConfig:
    model: str = SWIN_TINY  # timm model name (paper 000: Swin-Tiny, 224x224, 768-d)
    tokens: bool = False  # also store the final token map as swin_tokens ([7, 7, 768] for Swin-Tiny)
    # Centre-crop fraction of the eval transform; unset: the weights record's, else the model's
    # own (0.9 for Swin-Tiny).
    # 1.0 keeps the whole (already tight, aligned) face crop.
    crop_pct: float | None = None


@register
class Swin(ImageExtractor):
    name = "swin"
    Config = SwinConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        probe = timm_probe(self.config.model)
        check_family(self.weights_record, "timm", self.config.model, self.weights)
        data_config = image_data_config(probe.data_config, self.weights_record)
        if self.config.crop_pct is not None:
            data_config["crop_pct"] = self.config.crop_pct
        self.data_config = data_config
        self._transform = timm.data.create_transform(**data_config, is_training=False)
        self._probe = probe

    def outputs(self) -> dict[str, ArraySpec]:
        specs = {self.name: ArraySpec((self._probe.num_features,))}
        if self.config.tokens:
            specs[f"{self.name}_tokens"] = ArraySpec(self._probe.token_shape)
        return specs

    def load(self) -> None:
        if self._model is None:
            model = self.build(lambda: build_timm(self.config.model, self.weights,
                                                  self.trust_code, option="configs.swin.model"))
            # channels_last speeds up the patch-embedding convolution on CPU and GPU alike.
            self._model = self.freeze(model, channels_last=True)

    def preprocess(self, image: Any) -> torch.Tensor:
        return self._transform(image)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.load()
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            tokens = self._model.forward_features(x)
            pooled = self._model.forward_head(tokens, pre_logits=True)
        out = {self.name: pooled.float().cpu()}
        if self.config.tokens:
            out[f"{self.name}_tokens"] = tokens.float().cpu()
        return out
