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

An extractor pickles without its model (``load()`` builds it in ``_model``), so it can be sent to
pool and dask workers cheaply; each worker loads once. ``precision`` "bf16"/"fp16" runs the model
under ``torch.autocast`` on ``device`` (outputs stay float32); "fp32" is exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from pipeline.errors import PipelineError

Kind = Literal["image", "audio", "audio_embedding"]
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ArraySpec:
    """What one stored array looks like, per time step: ``[T, *shape]`` of ``dtype``."""

    shape: tuple[int, ...]  # per-frame shape, e.g. (768,) or (7, 7, 768)
    dtype: str = "float16"  # storage dtype (features are stored as float16)
    rate: str = "video"  # "video": one row per video frame; "audio": one row per audio frame


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file; of a folder (HF layout): of its files' relative names and hashes."""
    if Path(path).is_dir():
        files = sorted(p for p in Path(path).rglob("*") if p.is_file() and ".git" not in p.parts)
        listing = "".join(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n" for p in files)
        return hashlib.sha256(listing.encode()).hexdigest()
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
    # False for fixed transforms (log-mel): they have no weights, so they are never "random".
    has_weights: ClassVar[bool] = True

    def __init__(
        self,
        config: Any = None,
        weights: str | Path | None = None,
        device: str = "cpu",
        precision: Precision = "fp32",
        seed: int = 0,
    ) -> None:
        if precision not in PRECISIONS:
            raise PipelineError(
                f"{self.name}: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        self.config = config if config is not None else self.Config()
        self.weights = None if weights is None else Path(weights)
        try:
            self.weights_sha256 = None if weights is None else sha256_file(weights)
        except OSError as e:
            raise PipelineError(f"{weights}: cannot read weights ({e.strerror or e})") from None
        self.device = device
        self.precision = precision
        self.seed = seed
        self._model: Any = None  # built by load(); never pickled (see __getstate__)

    def __getstate__(self) -> dict:
        # Extractors travel to pool and dask workers unloaded; each worker calls load() itself.
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    @property
    def random_weights(self) -> bool:
        """True when no weights file was given: features come from a seeded random model."""
        return self.has_weights and self.weights is None

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
        """Build the model and load its weights (called once per worker, before the first batch).

        Idempotent. ``forward``/``embed`` call it themselves when it has not run yet.
        """

    # Helpers shared by the torch-based extractors (torch is imported lazily: base stays cheap).

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context that ``precision`` asks for on ``device``; a no-op for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def freeze(self, module: Any, channels_last: bool = False) -> Any:
        """``module`` on ``device`` in eval mode with no gradients (optionally channels_last)."""
        import torch

        module = module.to(self.device).eval().requires_grad_(False)
        return module.to(memory_format=torch.channels_last) if channels_last else module

    def load_weights_file(self, module: Any) -> None:
        """Load ``self.weights`` (a ``.pth`` or ``.safetensors`` state dict) with strict names.

        Accepts a bare state dict or a checkpoint dict holding one under ``state_dict``; a
        ``module.`` prefix left by DataParallel/DDP is removed. Any mismatch is a PipelineError.
        """
        import torch

        path = self.weights
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
            reason = " ".join(str(e).split())[:200]
            raise PipelineError(f"{path}: not a readable torch state dict ({reason})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not state:
            raise PipelineError(f"{path}: holds no state dict for {self.name}")
        if all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        expected = module.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [k for k in expected
                 if k in state and getattr(state[k], "shape", None) != expected[k].shape]
        if missing or unexpected or wrong:
            parts = [f"{label} {len(keys)} (e.g. {keys[0]})"
                     for label, keys in (("missing", missing), ("unexpected", unexpected),
                                         ("wrong shape", wrong)) if keys]
            raise PipelineError(f"{path}: not {self.name} weights for this config: {'; '.join(parts)}")
        module.load_state_dict(state, strict=True)


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
    """Windows of a log-mel front end -> one vector per window.

    Subclasses' configs have ``frontend`` (a :class:`LogMelConfig`-like config of the front end)
    and ``windows`` (lengths in video frames), and subclasses set :attr:`embedding_dim`.
    """

    kind: ClassVar[Kind] = "audio_embedding"
    # Window rows outside the clip: "min" (clip minimum, log-mel silence) or "edge" (repeat rows).
    pad_mode: ClassVar[str] = "min"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        windows = self.config.windows
        if not windows or min(windows) < 1:
            raise PipelineError(f"{self.name}: windows must be positive video-frame counts, got {windows}")
        from pipeline.features.extractors.logmel import LogMel  # logmel imports this module

        frontend = getattr(self.config, "frontend", None)
        self._frontend = None if frontend is None else LogMel(frontend)

    @property
    def frontend_sample_rate(self) -> int:
        """The waveform rate ``compute_frontend`` expects (default: the log-mel's)."""
        return self._frontend.sample_rate

    @property
    def frontend_frame_rate(self) -> float:
        """Rows per second of ``compute_frontend``'s output (default: the log-mel's)."""
        return self._frontend.frame_rate

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        """float32 [n_samples] mono -> float32 [T_f, F], once per clip (default: log-mel)."""
        return self._frontend.compute(waveform)

    @property
    def frontend(self) -> Any:
        """The front end as an audio extractor (``sample_rate``, ``frame_rate``, ``compute``)."""
        if self._frontend is not None:
            return self._frontend
        from types import SimpleNamespace

        return SimpleNamespace(sample_rate=self.frontend_sample_rate,
                               frame_rate=self.frontend_frame_rate, compute=self.compute_frontend)

    @property
    def windows(self) -> tuple[int, ...]:
        """Window lengths in video frames, e.g. (32, 48, 64); arrays are ``<name>_w<length>``."""
        return tuple(self.config.windows)

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width of one window's embedding."""

    def outputs(self) -> dict[str, ArraySpec]:
        return {f"{self.name}_w{w}": ArraySpec((self.embedding_dim,)) for w in self.windows}

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


