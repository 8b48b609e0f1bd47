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

**Importing this package is cheap** (no torch model code, no timm): :func:`names` reads the
extractor names from the modules' source (:mod:`ast`, nothing is imported) and from the entry
points; a module is imported when :func:`create` needs it, or by :func:`registry`, which imports
them all. So ``fer-pipeline --help`` lists every extractor without loading a backbone library.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import pkgutil
from typing import Any

from pipeline.errors import PipelineError
from pipeline.features.extractors.base import (
    PRECISIONS,
    REGISTRY,
    ArraySpec,
    AudioExtractor,
    Extractor,
    ImageExtractor,
    Precision,
    register,
)
from pipeline.suggest import did_you_mean

ENTRY_POINT_GROUP = "fer_pipeline.extractors"

__all__ = [
    "ENTRY_POINT_GROUP",
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


def _registered_names(source: str) -> list[str]:
    """``name`` of each ``@register``-decorated class defined in a module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        decorators = [d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", None)
                      for d in node.decorator_list]
        if "register" not in decorators:
            continue
        for statement in node.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
            else:  # an annotated assignment, or anything else (no target)
                target = getattr(statement, "target", None)
            value = getattr(statement, "value", None)
            if (isinstance(target, ast.Name) and target.id == "name"
                    and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                found.append(value.value)
    return found


@functools.lru_cache(maxsize=1)
def _package_index() -> dict[str, str]:
    """Extractor name -> module of this package that registers it (read, not imported)."""
    index = {}
    for info in pkgutil.iter_modules(__path__):
        spec = importlib.util.find_spec(f"{__name__}.{info.name}")
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        with open(spec.origin, encoding="utf-8") as f:
            for name in _registered_names(f.read()):
                index[name] = spec.name
    return index


def _entry_points() -> dict[str, str]:
    """Extractor name -> module, from installed packages' ``fer_pipeline.extractors`` entry points."""
    return {ep.name: ep.module for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _modules() -> dict[str, str]:
    return {**_entry_points(), **_package_index()}  # a built-in name wins over a plug-in's


def names() -> list[str]:
    """Every extractor's name (built in, from entry points, or registered already); imports none."""
    return sorted({*_modules(), *REGISTRY})


def registry() -> dict[str, type[Extractor]]:
    """Every extractor class by name (imports every extractor module)."""
    for module in sorted(set(_modules().values())):
        importlib.import_module(module)
    return dict(REGISTRY)


def is_known(name: str) -> bool:
    """Whether ``name`` is an extractor; imports every module only for a name not found cheaply
    (a class whose ``name`` is not a plain string literal is found that way too)."""
    return name in names() or name in registry()


def extractor_class(name: str) -> type[Extractor]:
    """The class registered as ``name`` (imports only its module when the name was indexed)."""
    if name not in REGISTRY and name in _modules():
        module = _modules()[name]
        importlib.import_module(module)
        if name not in REGISTRY:  # an entry point whose name is not what its module registers
            raise PipelineError(
                f"extractor {name!r}: module {module} (entry point {name} of group "
                f"{ENTRY_POINT_GROUP}) registers no extractor of that name; an entry point's name "
                f"must be its class's `name` (registered now: {', '.join(sorted(REGISTRY))})")
    if name not in REGISTRY and not is_known(name):
        raise KeyError(f"unknown extractor {name!r}; choose from {', '.join(names())}"
                       f"{did_you_mean(name, names())}")
    return REGISTRY[name]


def create(name: str, **kwargs: Any) -> Extractor:
    """Build a registered extractor by name (``kwargs`` go to its constructor)."""
    return extractor_class(name)(**kwargs)
