"""The backbone a fine-tune's config names (``backbone``): the one place that knows every kind.

:mod:`pipeline.finetune.backbones` holds the base class and the timm and ``tdnn`` backbones;
:mod:`pipeline.finetune.iresnet` and :mod:`pipeline.finetune.audio` stand on it. Choosing here,
above all three, keeps the imports one way (the base module imports none of its subclasses).
"""

from __future__ import annotations

from pipeline.finetune.audio import HfAudioBackbone, SwinAudioBackbone
from pipeline.finetune.backbones import AudioBackbone, Backbone, FaceBackbone
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.iresnet import IResNetBackbone


def backbone_for(config: FinetuneConfig) -> Backbone:
    """The :class:`~pipeline.finetune.backbones.Backbone` of ``config.backbone``."""
    if config.backbone == "iresnet":
        return IResNetBackbone(config)
    if config.backbone in ("swin_audio", "hf_audio"):
        return SwinAudioBackbone(config) if config.backbone == "swin_audio" else HfAudioBackbone(config)
    return FaceBackbone(config) if config.backbone == "timm" else AudioBackbone(config)
