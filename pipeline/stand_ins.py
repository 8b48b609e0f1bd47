"""Smaller members of a paper's backbone family that stand in for it where the paper's cannot run.

``fer-pipeline recipe NAME --scale demo`` runs on a 2-core CPU and the demo data, where ResNet-50
at the paper's batch, DINOv2 ViT-L/14 (518 px) and BEiT-L do not fit in minutes: the paper's model
-> its stand-in. The recipe prints each substitution with its plan; the fuse presets accept a
stand-in's features only when told (``fuse --allow-stand-ins``, which the demo scale passes),
never silently (:func:`pipeline.fusion.presets.check_extraction`). The ``fer_demo_`` models are
ours (:mod:`pipeline.features.extractors.demo_models`).

The audio encoders of the 2026 leaders (wav2vec2, WavLM-large: ``hf_audio`` reads them from a
folder) have theirs in :data:`AUDIO_STAND_INS`: a recipe's step writes the stand-in's folder
(``fer-pipeline stand-in NAME --out DIR``: seeded random weights of a 4-layer, 128-wide model of
the same family, :mod:`pipeline.features.extractors.demo_audio_models`) and its extract reads it
with ``--weights hf_audio=DIR``.
"""

from __future__ import annotations

STAND_INS: dict[str, str] = {
    "resnet50": "resnet18",
    "vit_large_patch14_dinov2.lvd142m": "fer_demo_vit_small_patch14_dinov2",
    "beit_large_patch16_224.in22k_ft_in22k_in1k": "fer_demo_beit_small_patch16",
}

# the paper's audio encoder (a recipe's ``pretrained["hf_audio"]``) -> the folder standing in
AUDIO_STAND_INS: dict[str, str] = {
    "wav2vec2": "fer_demo_wav2vec2",
    "WavLM-large": "fer_demo_wavlm",
}
