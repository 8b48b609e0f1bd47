"""Small members of the 2026 leaders' backbone families, registered with timm for demo runs.

``fer-pipeline recipe sun2026|yu2026 --scale demo`` cannot fine-tune and extract DINOv2 ViT-L/14
(518 px, 1370 tokens) or BEiT-L on a 2-core CPU, and timm registers no DINOv2 model below 518 px
and no BEiT below base. These two are the same architectures, narrower and at the demo crops'
112 px, registered under names that say they are ours (``fer_demo_``):

- ``fer_demo_vit_small_patch14_dinov2``: DINOv2's ViT-S/14 (384 wide, 12 layers, 6 heads, layer
  scale 1e-5) at 112 px: 8x8 patches;
- ``fer_demo_beit_small_patch16``: a BEiT (relative position bias, layer scale 0.1) 384 wide,
  12 layers, 6 heads, at 112 px: 7x7 patches.

They have no pretrained weights (random starts only). Registered on import of
:mod:`pipeline.features.extractors.timm_models`, so ``finetune --model`` and ``extract --set
configs.timm.model=`` accept them like any timm name; the fuse presets accept them in place of
the paper's models only with ``--allow-stand-ins`` (:data:`pipeline.stand_ins.STAND_INS`).
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model
from timm.models._registry import generate_default_cfgs

_SIZE = 112


def _cfg(**overrides: Any) -> dict[str, Any]:
    return {"url": "", "num_classes": 0, "input_size": (3, _SIZE, _SIZE), "fixed_input_size": True,
            "crop_pct": 1.0, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.proj",
            "classifier": "head", **overrides}


# timm's register_model reads the module's default_cfgs (the data config of each name)
default_cfgs = generate_default_cfgs({
    "fer_demo_vit_small_patch14_dinov2": _cfg(),
    "fer_demo_beit_small_patch16": _cfg(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
})


@register_model
def fer_demo_vit_small_patch14_dinov2(pretrained: bool = False, **kwargs: Any):
    from timm.models._builder import build_model_with_cfg
    from timm.models.vision_transformer import VisionTransformer

    args = dict(img_size=_SIZE, patch_size=14, embed_dim=384, depth=12, num_heads=6,
                init_values=1e-5)
    return build_model_with_cfg(VisionTransformer, "fer_demo_vit_small_patch14_dinov2",
                                pretrained=False, **dict(args, **kwargs))


@register_model
def fer_demo_beit_small_patch16(pretrained: bool = False, **kwargs: Any):
    from timm.models._builder import build_model_with_cfg
    from timm.models.beit import Beit

    args = dict(img_size=_SIZE, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                mlp_ratio=4, use_abs_pos_emb=False, use_rel_pos_bias=True, init_values=0.1)
    return build_model_with_cfg(Beit, "fer_demo_beit_small_patch16", pretrained=False,
                                **dict(args, **kwargs))
