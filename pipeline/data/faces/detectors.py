"""The face detectors by name (``FacesConfig.detector``): their base class, their registry, and
the detector a config asks for.

A detector is a :class:`Detector` subclass with a ``name``, registered with ``@register``:
:data:`DETECTORS` is a :class:`pipeline.registry.Registry` (the helper every plug-in kind
shares), which finds the registered classes of this package's modules by reading their source
(``mtcnn`` in :mod:`~pipeline.data.faces.mtcnn`, ``scrfd`` in :mod:`~pipeline.data.faces.scrfd`)
and those that installed packages name in entry points of group ``fer_pipeline.detectors``. So
adding a detector is one module with its registered class (docs/plugins.md); ``faces`` and
``predict`` then run it through :func:`detector_for`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, ClassVar

import numpy as np

from pipeline.data.faces.common import Face, file_sha256
from pipeline.registry import Registry

__all__ = ["DETECTORS", "Detector", "detector_for", "onnx_sha256", "register", "weights_id"]


class Detector:
    """Finds faces with five landmarks in batches of frames. Its methods take the
    :class:`~pipeline.data.faces.config.FacesConfig` (typed ``Any``: the config module imports
    this one)."""

    name: ClassVar[str]  # what FacesConfig.detector says to choose it (the registry's key)
    # Options of its own: a dataclass, built into FacesConfig.options (--set options.KEY=VALUE);
    # None: it reads FacesConfig's fields (``settings``) only.
    Config: ClassVar[type | None] = None
    # The FacesConfig fields it reads; a change of one builds another detector (a process keeps
    # one per setting), and of ``key_fields``, the subset that is not its weights, redoes every
    # video (FacesConfig.output_key).
    settings: ClassVar[tuple[str, ...]] = ()
    key_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check(cls, config: Any) -> None:
        """PipelineError (one line) for settings this detector cannot run with; called when the
        config is built, before any video is read."""

    @classmethod
    def from_config(cls, config: Any) -> "Detector":
        """The detector with ``config``'s settings, its weights read and verified."""
        raise NotImplementedError

    @classmethod
    def weights_id(cls, config: Any) -> str:
        """What identifies its weights (a video's record keeps it: other weights redo it)."""
        raise NotImplementedError

    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """uint8 RGB ``[B, H, W, 3]`` -> faces per frame, best first."""
        raise NotImplementedError


DETECTORS: Registry[type[Detector]] = Registry("detector", "pipeline.data.faces",
                                               "fer_pipeline.detectors")
register = DETECTORS.register  # class decorator: make a detector available by its ``name``


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_BUILT: dict[tuple, Detector] = {}  # per worker process: weights read and checked once


def detector_for(config: Any) -> Detector:
    """The detector ``config`` names with its settings (one per process and setting)."""
    cls = DETECTORS.get(config.detector)
    key = (config.detector, repr(getattr(config, "options", None)),
           *(_hashable(getattr(config, f)) for f in cls.settings))
    if key not in _BUILT:
        _BUILT[key] = cls.from_config(config)
    return _BUILT[key]


def weights_id(config: Any) -> str:
    """The weights identity of ``config``'s detector (see :meth:`Detector.weights_id`)."""
    return DETECTORS.get(config.detector).weights_id(config)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def onnx_sha256(path: str) -> str:
    """A file's SHA-256, computed once per process while its size and mtime stay the same."""
    stat = os.stat(path)
    return _sha256(path, stat.st_size, stat.st_mtime_ns)
