"""The one way to declare a frozen feature extractor: a base class, a config dataclass, ``@register``.

Kinds, by what they consume (each kind's base class also says how stage one's engine feeds it:
``feed``, ``run_batch``, ``buffer``, ``assemble``; see :mod:`pipeline.features.feeding`):

* ``image``: face crops -> one vector (or token map) per frame. ``preprocess`` turns a PIL image
  into a CHW float tensor and is cheap and picklable (it runs in loader threads, off the model's
  thread); ``forward`` runs the frozen model on a batch and returns ``{array_name: [B, ...]}``.
* ``audio``: a mono waveform -> a time-frequency array at its own frame rate (log-mel). ``compute``
  maps ``float32 [n_samples]`` at ``config.sample_rate`` to ``float32 [T_audio, n_mels]``;
  ``frame_rate`` is frames per second of that output.
* ``audio_embedding`` (:mod:`~pipeline.features.extractors.audio_embedding`): windows of a
  frontend (log-mel by default) centred on each video frame -> one vector per window. ``embed``
  maps ``float32 [B, T_window, F]`` to ``[B, D]``; the stage builds windows of each length in
  ``config.windows`` (in video frames) and stores ``<name>_w<length>`` arrays.

A new kind is a new base class with its own ``feed`` (and whichever of ``run_batch``, ``buffer``,
``assemble`` differ from the defaults here); the engine needs no change.

Every extractor is frozen (``eval()``, no grad) and loads its weights from a file the user names.
Without a file it builds random weights drawn from its own generator (seeded from its name and
seed: :meth:`Extractor.build`, :mod:`~pipeline.features.extractors.seeding`) and
``random_weights`` is True, which every summary must show loudly. Its :attr:`cache_key` hashes
its name, config, preprocessing and the sha256 of the
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
from enum import Enum
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Iterator

import numpy as np

from pipeline.errors import PipelineError
from pipeline.features.extractors.seeding import RANDOM_INIT, seeded_build, weights_generator
from pipeline.features.feeding import ClipContext, Job, Loaded, StreamKey
from pipeline.features.weights_record import WeightsRecord, read_record, sha256_file
from pipeline.registry import Registry


class Precision(str, Enum):
    """The ``--precision`` choices: ``auto`` (resolved per device by
    :func:`pipeline.features.config.resolve_precision`, never given to an extractor) or an
    autocast precision of the frozen models (:data:`PRECISIONS`)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# The precisions an extractor runs in (what "auto" resolves to).
PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision if p is not Precision.auto)


@dataclass(frozen=True)
class ArraySpec:
    """What one stored array looks like, per time step: ``[T, *shape]`` of ``dtype``."""

    shape: tuple[int, ...]  # per-frame shape, e.g. (768,) or (7, 7, 768)
    dtype: str = "float16"  # storage dtype (features are stored as float16)
    rate: str = "video"  # "video": one row per video frame; "audio": one row per audio frame


class Extractor(ABC):
    """Base class: subclasses set ``name``, ``kind``, ``Config`` and implement their kind's method."""

    name: ClassVar[str]
    kind: ClassVar[str]  # extractors of one kind are fed together (see feed)
    Config: ClassVar[type]  # a dataclass with a comment on every field
    # Bump when preprocessing or the computation changes in a way the config does not capture.
    version: ClassVar[int] = 1
    # False for fixed transforms (log-mel): they have no weights, so they are never "random".
    has_weights: ClassVar[bool] = True
    # Reads the clip's audio: a clip without audio gets zeros, stored under a "-noaudio" key.
    needs_audio: ClassVar[bool] = False
    # Computed at every audio_stride-th frame and interpolated: the stride is part of the key.
    strided: ClassVar[bool] = False

    def __init__(
        self,
        config: Any = None,
        weights: str | Path | None = None,
        device: str = "cpu",
        precision: Precision | str = "fp32",
        seed: int = 0,
        trust_code: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise PipelineError(
                f"{self.name}: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        precision = Precision(precision).value  # a plain string in cache keys and descriptions
        self.config = config if config is not None else self.Config()
        self.weights = None if weights is None else Path(weights)
        try:
            self.weights_sha256 = None if weights is None else sha256_file(weights)
        except OSError as e:
            raise PipelineError(f"{weights}: cannot read weights ({e.strerror or e})") from None
        # A folder written by `fer-pipeline finetune` records the preprocessing its weights were
        # trained with; the extractor applies it (pipeline.features.weights_record).
        self.weights_record: WeightsRecord | None = read_record(weights)
        self.device = device
        self.precision = precision
        self.seed = seed
        # Whether loading the weights may run code from them (a pickled model, HyperPyYAML's
        # object tags, TorchScript): the user's explicit --set trust_code=true (docs/trust.md).
        # Not in the cache key: a file that loads gives the same weights either way.
        self.trust_code = trust_code
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
            "config": self.key_config(),
            "weights_sha256": self.weights_sha256,
            "seed": self.seed if self.random_weights else None,
            "precision": self.precision,
        }
        if self.random_weights:  # only there: keys of extractors with weights files stay as they were
            spec["random_init"] = RANDOM_INIT
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def key_config(self) -> dict:
        """The config as it enters :attr:`cache_key` (an extractor may keep a retired field's
        old value there, so stores written before keep their keys)."""
        return dataclasses.asdict(self.config)

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
        """Build the model and load its weights (called once per worker, before its threads start).

        Idempotent. ``forward``/``embed`` call it themselves when it has not run yet.
        """

    # ---- how stage one's engine feeds it (pipeline.features.feeding) ---------------------------

    @classmethod
    @abstractmethod
    def feed(cls, extractors: list["Extractor"], clip: ClipContext) -> Iterator[Job]:
        """The loader jobs of ``extractors`` (all of this kind, in run order) for one clip.

        Called in the engine's producer thread. Work submitted before returning runs while other
        kinds queue theirs; the iterator is drained lazily (submit each job as it is yielded, so
        that the engine's bounded queue bounds how far loading runs ahead).
        """

    def run_batch(self, part: Hashable, batch: Any) -> dict[str, Any]:
        """The model on one padded batch of stream ``StreamKey(self.name, part)``."""
        raise NotImplementedError(f"{self.name}: its kind feeds no batches")

    def buffer(self, name: str, clip: ClipContext) -> tuple[int, str]:
        """(rows, dtype) of the clip's buffer that ``run_batch`` outputs ``name`` fill."""
        return clip.n_frames, self.outputs()[name].dtype

    def array_rate(self, fps: float) -> float:
        """Rows per second of this extractor's arrays (recorded in their markers)."""
        return fps

    def assemble(self, clip: ClipContext, buffers: dict[str, np.ndarray],
                 arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The clip's finished arrays, by store name in ``outputs()`` order, each of its dtype.

        ``buffers``: what the batches filled; ``arrays``: what the loader jobs finished. An array
        neither holds (no face in any frame, no audio track) is zeros; audio-rate arrays get no rows.
        """
        out = {}
        for name, spec in self.outputs().items():
            data = arrays.get(name)
            if data is None:
                data = buffers.get(name)
            if data is None:
                rows = 0 if spec.rate == "audio" else clip.n_frames
                data = np.zeros((rows, *spec.shape), dtype=spec.dtype)
            out[name] = np.asarray(data, dtype=spec.dtype)
        return out

    # Helpers shared by the torch-based extractors (torch is imported lazily: base stays cheap).

    def generator(self) -> Any:
        """This extractor's own random stream for its random weights, never torch's global
        generator (which every thread shares; :func:`~pipeline.features.extractors.seeding.
        weights_generator`)."""
        return weights_generator(self.name, self.seed)

    def build(self, make: Callable[[], Any]) -> Any:
        """``make()``'s module; with random weights, its own initialisation drawn from this
        extractor's seed (:func:`~pipeline.features.extractors.seeding.seeded_build`), so the
        model is the same whichever thread builds it and when."""
        import torch

        if self.random_weights:
            return seeded_build(make, self.name, self.seed)
        with torch.random.fork_rng(devices=[]):  # the constructor's draws leave the caller's stream
            return make()

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
        """Load ``self.weights`` (a ``.pth`` or ``.safetensors`` state dict, or a folder holding
        ``model.safetensors``) with strict names.

        Accepts a bare state dict or a checkpoint dict holding one under ``state_dict``; a
        ``module.`` prefix left by DataParallel/DDP is removed. Any mismatch is a PipelineError.
        """
        import torch

        path = self.weights
        if path.is_dir():  # a HF-layout folder, e.g. one `fer-pipeline finetune` wrote
            from pipeline.features.extractors.checkpoints import resolve_folder

            path = resolve_folder(path)
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
    """Face crops, one row per frame with a face: ``preprocess`` in loader threads, then ``forward``."""

    kind: ClassVar[str] = "image"

    @abstractmethod
    def preprocess(self, image: "Any") -> "Any":
        """PIL image -> float32 CHW tensor. Cheap, thread-safe, needs no model."""

    @abstractmethod
    def forward(self, batch: "Any") -> dict[str, "Any"]:
        """[B, C, H, W] tensor -> {array name: [B, *shape] tensor}; frozen, no grad."""

    @classmethod
    def feed(cls, extractors: list[Extractor], clip: ClipContext) -> Iterator[Job]:
        """Chunks of ``batch_size`` face frames, each decoded once for every image extractor."""
        frames = np.flatnonzero(clip.valid)
        for start in range(0, len(frames), clip.batch_size):
            rows = frames[start:start + clip.batch_size]
            paths = [clip.clip.frame_path(int(i)) for i in rows]
            yield Job(clip.submit(_load_images, paths, extractors), rows)

    def run_batch(self, part: Hashable, batch: Any) -> dict[str, Any]:
        return self.forward(batch)


def _load_images(paths: list[Path], extractors: list[ImageExtractor]) -> Loaded:
    """Decode a chunk of frames and preprocess it for each image extractor (a loader job)."""
    import torch

    from pipeline.features.loading import read_images

    images = read_images(paths)
    return Loaded(batches={StreamKey(e.name): torch.stack([e.preprocess(image) for image in images])
                           for e in extractors})


class AudioExtractor(Extractor):
    """A waveform -> a time-frequency array at its own rate, computed in a loader thread."""

    kind: ClassVar[str] = "audio"
    needs_audio: ClassVar[bool] = True

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

    def array_rate(self, fps: float) -> float:
        return self.frame_rate

    @classmethod
    def feed(cls, extractors: list[Extractor], clip: ClipContext) -> Iterator[Job]:
        """One job computing every array of the clip (submitted now: it runs while others queue)."""
        if not clip.has_audio:
            return iter(())
        return iter([Job(clip.submit(_compute_audio, extractors, clip))])


def _compute_audio(extractors: list[AudioExtractor], clip: ClipContext) -> Loaded:
    arrays = {}
    for ext in extractors:
        (name,) = ext.outputs()
        arrays[name] = ext.compute(clip.waveform(ext.sample_rate))
    return Loaded(arrays=arrays)


# Every extractor by name (pipeline.registry): the modules of this package and entry points of
# group fer_pipeline.extractors; pipeline.features.extractors reads it (names(), create()).
EXTRACTORS: Registry[type[Extractor]] = Registry("extractor", "pipeline.features.extractors",
                                                 "fer_pipeline.extractors")
register = EXTRACTORS.register  # class decorator: make an extractor available by its ``name``
