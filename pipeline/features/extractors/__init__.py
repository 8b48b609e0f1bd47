"""Frozen feature extractors: one registry, one factory (``create``), one module per backbone.

Importing this package registers every extractor: ``swin`` and ``iresnet`` (face crops),
``logmel`` (audio), ``tdnn`` and ``swin_audio`` (per-frame audio embeddings over log-mel windows).
See :mod:`pipeline.features.extractors.base` for the contract they share.
"""

from pipeline.features.extractors import (  # noqa: F401
    ecapa,
    egemaps,
    hf_audio,
    iresnet,
    logmel,
    onnx_face,
    swin,
    swin_audio,
    tdnn,
    timm_image,
)
from pipeline.features.extractors.base import (
    ArraySpec,
    AudioEmbeddingExtractor,
    AudioExtractor,
    Extractor,
    ImageExtractor,
    create,
    register,
    registry,
)

__all__ = [
    "ArraySpec",
    "AudioEmbeddingExtractor",
    "AudioExtractor",
    "Extractor",
    "ImageExtractor",
    "create",
    "register",
    "registry",
]
