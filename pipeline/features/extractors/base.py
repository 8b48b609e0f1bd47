"""The one way to declare a frozen feature extractor: a base class, a config dataclass, a registry.

Three kinds, by what they consume:

* ``image``: face crops -> one vector (or token map) per frame. ``preprocess`` turns a PIL image
  into a CHW float tensor and is cheap and picklable (it runs in loader threads, off the model's
  thread); ``forward`` runs the frozen model on a batch and returns ``{array_name: [B, ...]}``.
* ``audio``: a mono waveform -> a time-frequency array at its own frame rate (log-mel). ``compute``
  maps ``float32 [n_samples]`` at ``config.sample_rate`` to ``float32 [T_audio, n_mels]``;
  ``frame_rate`` is frames per second of that output.
* ``audio_embedding``: windows of log-mel centred on each video frame -> one vector per window.
  ``embed`` maps ``float32 [B, T_window, n_mels]`` to ``[B, D]``; the stage builds windows of each
  length in ``config.windows`` (in video frames) and stores ``<name>_w<length>`` arrays.

Every extractor is frozen (``eval()``, no grad) and loads its weights from a file the user names.
Without a file it builds seeded random weights and ``random_weights`` is True, which every summary
must show loudly. Its :attr:`cache_key` hashes its name, config, preprocessing and the sha256 of the
weights file: a stored array is reused only when this key matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

Kind = Literal["image", "audio", "audio_embedding"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class ArraySpec:
    """What one stored array looks like, per time step: ``[T, *shape]`` of ``dtype``."""

    shape: tuple[int, ...]  # per-frame shape, e.g. (768,) or (7, 7, 768)
    dtype: str = "float16"  # storage dtype (features are stored as float16)
    rate: str = "video"  # "video": one row per video frame; "audio": one row per audio frame


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Extractor(ABC):
    """Base class: subclasses set ``name``, ``kind``, ``Config`` and implement their kind's method."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    Config: ClassVar[type]  # a dataclass with a comment on every field
    # Bump when preprocessing or the computation changes in a way the config does not capture.
    version: ClassVar[int] = 1

    def __init__(
        self,
        config: Any = None,
        weights: str | Path | None = None,
        device: str = "cpu",
        precision: Precision = "fp32",
        seed: int = 0,
    ) -> None:
        self.config = config if config is not None else self.Config()
        self.weights = None if weights is None else Path(weights)
        self.weights_sha256 = None if weights is None else sha256_file(weights)
        self.device = device
        self.precision = precision
        self.seed = seed

    @property
    def random_weights(self) -> bool:
        """True when no weights file was given: features come from a seeded random model."""
        return self.weights is None

    @property
    def cache_key(self) -> str:
        """Hash of everything that determines this extractor's output."""
        spec = {
            "name": self.name,
            "version": self.version,
            "config": dataclasses.asdict(self.config),
            "weights_sha256": self.weights_sha256,
            "seed": self.seed if self.random_weights else None,
            "precision": self.precision,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """What the store's root attributes record about this extractor."""
        return {
            "name": self.name,
            "kind": self.kind,
            "config": dataclasses.asdict(self.config),
            "weights": None if self.weights is None else str(self.weights),
            "weights_sha256": self.weights_sha256,
            "random_weights": self.random_weights,
            "precision": self.precision,
            "cache_key": self.cache_key,
            "outputs": {k: dataclasses.asdict(v) for k, v in self.outputs().items()},
        }

    @abstractmethod
    def outputs(self) -> dict[str, ArraySpec]:
        """The arrays this extractor writes per clip, by store name."""

    def load(self) -> None:
        """Build the model and load its weights (called once per worker, before the first batch)."""


class ImageExtractor(Extractor):
    kind: ClassVar[Kind] = "image"

    @abstractmethod
    def preprocess(self, image: "Any") -> "Any":
        """PIL image -> float32 CHW tensor. Cheap, thread-safe, needs no model."""

    @abstractmethod
    def forward(self, batch: "Any") -> dict[str, "Any"]:
        """[B, C, H, W] tensor -> {array name: [B, *shape] tensor}; frozen, no grad."""


class AudioExtractor(Extractor):
    kind: ClassVar[Kind] = "audio"

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """The rate ``compute`` expects its waveform at."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Output frames per second."""

    @abstractmethod
    def compute(self, waveform: np.ndarray) -> np.ndarray:
        """float32 [n_samples] mono at ``sample_rate`` -> float32 [T_audio, n_features]."""


class AudioEmbeddingExtractor(Extractor):
    kind: ClassVar[Kind] = "audio_embedding"

    @property
    @abstractmethod
    def frontend(self) -> AudioExtractor:
        """The audio extractor whose output this one windows (configured by this one's config)."""

    @property
    @abstractmethod
    def windows(self) -> tuple[int, ...]:
        """Window lengths in video frames, e.g. (32, 48, 64); arrays are ``<name>_w<length>``."""

    @abstractmethod
    def embed(self, windows: "Any") -> "Any":
        """[B, T_window, n_mels] tensor -> [B, D] tensor; frozen, no grad."""


_REGISTRY: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make an extractor available by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"extractor {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Extractor]]:
    return dict(_REGISTRY)


def create(name: str, **kwargs: Any) -> Extractor:
    """Build a registered extractor by name (``kwargs`` go to its constructor)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown extractor {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


