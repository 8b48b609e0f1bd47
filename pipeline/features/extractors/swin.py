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

Weights come from a file through timm's own loader (``pretrained_cfg_overlay=dict(file=...)``, a
``.pth``/``.safetensors`` state dict in timm or original Swin format; a classifier head in it is
dropped). Because timm then loads with ``strict=False``, :func:`build_timm` checks that the file
covered every weight of the model and refuses a file that did not. Without a file the model is
built under ``torch.manual_seed(seed)``. Preprocessing is the model's own eval transform
(``resolve_model_data_config`` + ``create_transform``), built from a meta-device model, so it
needs neither weights nor memory and runs in loader threads before ``load()``.

The helpers here (:func:`timm_probe`, :func:`build_timm`) also serve ``swin_audio``.
"""

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import functools  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import timm  # noqa: E402
import timm.data  # noqa: E402
import torch  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register  # noqa: E402

SWIN_TINY = "swin_tiny_patch4_window7_224"


@dataclass(frozen=True)
class TimmProbe:
    """What a timm model needs and gives, read off a meta-device build (no weights, no memory)."""

    data_config: dict  # timm's resolved eval data config: input_size, mean, std, crop_pct, ...
    num_features: int  # width of the pooled pre-logits output
    token_shape: tuple[int, ...]  # per-image shape of forward_features (NHWC for Swin: 7, 7, 768)


@functools.lru_cache(maxsize=8)
def timm_probe(model_name: str) -> TimmProbe:
    """Data config and output shapes of a timm model, cached per process (do not mutate)."""
    if not timm.is_model(model_name):
        raise PipelineError(f"unknown timm model {model_name!r}")
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
        data_config = timm.data.resolve_model_data_config(model)
        tokens = model.forward_features(torch.empty(1, *data_config["input_size"]))
    return TimmProbe(data_config, int(model.num_features), tuple(tokens.shape[1:]))


def build_timm(model_name: str, weights: Path | None, seed: int) -> torch.nn.Module:
    """A headless (``num_classes=0``) timm model: from a weights file, or seeded random weights."""
    timm_probe(model_name)  # a clear error for an unknown name
    # fork_rng: seeding for the build must not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if weights is None:
            return timm.create_model(model_name, pretrained=False, num_classes=0)
        try:
            model = timm.create_model(
                model_name, pretrained=True, num_classes=0,
                pretrained_cfg_overlay=dict(file=str(weights)),
            )
        except Exception as e:  # torch.load/safetensors raise many types for a bad file
            reason = " ".join(str(e).split())[:200]
            raise PipelineError(f"{weights}: cannot load as {model_name} weights ({reason})") from None
    _check_covered(model, model_name, weights)
    return model


def _check_covered(model: torch.nn.Module, model_name: str, weights: Path) -> None:
    """Refuse a file that left some of the model's weights at their random init.

    timm drops the checkpoint's classifier for ``num_classes=0`` and then loads with
    ``strict=False``, which would silently accept a file of some other network.
    """
    state = timm.models.load_state_dict(str(weights))
    # The same conversion timm applied (original Swin checkpoints use other names).
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        state = convert(state, model)
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise PipelineError(
            f"{weights}: not {model_name} weights: {len(missing)} of the model's tensors are "
            f"missing from it (e.g. {missing[0]})")


@dataclass
class SwinConfig:
    model: str = SWIN_TINY  # timm model name (paper 000: Swin-Tiny, 224x224, 768-d)
    tokens: bool = False  # also store the final token map as swin_tokens ([7, 7, 768] for Swin-Tiny)
    # Centre-crop fraction of the eval transform; unset: the model's own (0.9 for Swin-Tiny).
    # 1.0 keeps the whole (already tight, aligned) face crop.
    crop_pct: float | None = None


@register
class Swin(ImageExtractor):
    name = "swin"
    Config = SwinConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        probe = timm_probe(self.config.model)
        data_config = dict(probe.data_config)
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
            model = build_timm(self.config.model, self.weights, self.seed)
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
