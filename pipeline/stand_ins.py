"""Smaller members of a paper's backbone family that stand in for it where the paper's cannot run.

``fer-pipeline recipe NAME --scale demo`` runs on a 2-core CPU and the demo data, where ResNet-50
at the paper's batch, DINOv2 ViT-L/14 (518 px) and BEiT-L do not fit in minutes: the paper's model
-> its stand-in. The recipe prints each substitution with its plan; the fuse presets accept a
stand-in's features only when told (``fuse --allow-stand-ins``, which the demo scale passes),
never silently (:func:`pipeline.fusion.presets.check_extraction`). The ``fer_demo_`` models are
ours (:mod:`pipeline.features.extractors.demo_models`).
"""

from __future__ import annotations

STAND_INS: dict[str, str] = {
    "resnet50": "resnet18",
    "vit_large_patch14_dinov2.lvd142m": "fer_demo_vit_small_patch14_dinov2",
    "beit_large_patch16_224.in22k_ft_in22k_in1k": "fer_demo_beit_small_patch16",
}
