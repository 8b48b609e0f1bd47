"""Frozen feature extractors: one registry, one factory (``create``), one module per backbone.

Built in: ``swin``, ``timm`` (any timm model, optionally its feature map), ``iresnet`` and
``onnx`` (face crops); ``logmel`` (audio); ``tdnn``, ``swin_audio`` (over log-mel windows),
``hf_audio`` (wav2vec2/HuBERT/WavLM), ``ecapa``, ``xvector`` (SpeechBrain), ``egemaps``
(openSMILE functionals) and ``audio_model`` (any waveform-in ONNX/TorchScript encoder):
per-frame audio embeddings over dynamic windows; :mod:`~pipeline.features.extractors.base` and
:mod:`~pipeline.features.extractors.audio_embedding` hold the contract they share.

**Adding one** is one new module in this package with a ``@register``-decorated class (its
``name = "..."`` a plain string in the class body), or a module of another package named by an
entry point of group ``fer_pipeline.extractors`` (``NAME = "module.path"``; importing the module
registers the extractor).

The registry is :data:`EXTRACTORS`, a :class:`pipeline.registry.Registry` (the helper every
plug-in kind shares). **Importing this package is cheap** (no torch model code, no timm):
:func:`names` reads the extractor names from the modules' source (:mod:`ast`, nothing is
imported) and from the entry points; a module is imported when :func:`create` needs it, or by :func:`registry`, which imports
them all. So ``fer-pipeline --help`` lists every extractor without loading a backbone library.
"""

from __future__ import annotations

from typing import Any

from pipeline.features.extractors.base import (
    EXTRACTORS,
    PRECISIONS,
    ArraySpec,
    AudioExtractor,
    Extractor,
    ImageExtractor,
    Precision,
    register,
)

ENTRY_POINT_GROUP = EXTRACTORS.group

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXTRACTORS",
    "PRECISIONS",
    "ArraySpec",
    "AudioExtractor",
    "Extractor",
    "ImageExtractor",
    "Precision",
    "create",
    "extractor_class",
    "is_known",
    "names",
    "register",
    "registry",
]


def names() -> list[str]:
    """Every extractor's name (built in, from entry points, or registered already); imports none."""
    return EXTRACTORS.names()


def registry() -> dict[str, type[Extractor]]:
    """Every extractor class by name (imports every extractor module)."""
    return EXTRACTORS.classes()


def is_known(name: str) -> bool:
    """Whether ``name`` is an extractor; imports every module only for a name not found cheaply
    (a class whose ``name`` is not a plain string literal is found that way too)."""
    return EXTRACTORS.is_known(name)


def extractor_class(name: str) -> type[Extractor]:
    """The class registered as ``name`` (imports only its module when the name was indexed);
    :class:`pipeline.registry.UnknownName` (a KeyError) for an unknown one."""
    return EXTRACTORS.get(name)


def create(name: str, **kwargs: Any) -> Extractor:
    """Build a registered extractor by name (``kwargs`` go to its constructor)."""
    return extractor_class(name)(**kwargs)
