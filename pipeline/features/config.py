"""Stage one's configuration: what ``fer-pipeline extract`` computes and how (saved in every run report).

Fields are checked when the config is built (``__post_init__``); the choice lists come from the
library (:class:`Precision`, the extractor registry's :func:`~pipeline.features.extractors.names`),
so the CLI offers exactly what is accepted.

``precision = "auto"`` (the default) is resolved per device by :func:`resolve_precision`: bf16
autocast where the hardware computes bf16 natively (a CUDA device that supports it; a CPU whose
``/proc/cpuinfo`` flags include ``avx512_bf16`` or ``amx_bf16``), fp32 elsewhere, where bf16 is
emulated and slower. Extractors, cache keys and the run report get the resolved value, never
"auto", so switching machines never mixes bf16 and fp32 arrays under one key. Measured on this
project's CPU (``avx512_bf16``): bf16 cut Swin-Tiny's CPU time 2.05x and the whole stage's 1.7x,
features at cosine 0.99998 to fp32 (``tests/bench/bench_extract.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pipeline.data.manifest import SPLITS
from pipeline.errors import PipelineError
from pipeline.features import extractors as extractor_registry
from pipeline.features.extractors.base import PRECISIONS, Precision
from pipeline.suggest import did_you_mean

DEFAULT_EXTRACTORS = ("swin", "logmel", "tdnn")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU flags of native bf16 arithmetic
log = logging.getLogger(__name__)

__all__ = ["DEFAULT_EXTRACTORS", "ExtractConfig", "Precision", "resolve_precision"]


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` is not there, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def resolve_precision(precision: str, device: str, cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """``(precision, why)`` for a resolved ``device`` ("cpu", "cuda", "cuda:N"): an explicit
    precision stays; ``auto`` becomes bf16 on native-bf16 hardware, else fp32."""
    if precision != "auto":
        return precision, "asked for"
    if device.startswith("cuda"):
        import torch

        with torch.cuda.device(torch.device(device)):
            if torch.cuda.is_bf16_supported():
                return "bf16", f"auto: {torch.cuda.get_device_name()} computes bf16 natively"
            return "fp32", f"auto: {torch.cuda.get_device_name()} has no native bf16"
    native = sorted(set(BF16_CPU_FLAGS) & cpu_flags(cpuinfo))
    if native:
        return "bf16", f"auto: this CPU has {', '.join(native)}"
    return "fp32", "auto: this CPU has no native bf16 (avx512_bf16 / amx_bf16): bf16 would be emulated"


def adopt_trust_pickle(config: "ExtractConfig", name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the retired ``trust_pickle``, whose true value sets ``trust_code``
    (old configs and commands keep working; a warning names the new spelling)."""
    if "trust_pickle" in options:
        value = options.pop("trust_pickle")
        if value not in (True, False):
            raise PipelineError(f"configs.{name}.trust_pickle: {value!r} is not true/false")
        config.trust_code = bool(config.trust_code or value)
        log.warning("configs.%s.trust_pickle is deprecated: it is now trust_code (--set "
                    "trust_code=%s), which covers pickles, yaml tags and TorchScript",
                    name, str(value).lower())
    return options


@dataclass
class ExtractConfig:
    """Everything that decides what stage one computes and how."""

    # Registered extractor names to run (see `fer-pipeline extract --help` for the choices).
    extractors: list[str] = field(default_factory=lambda: list(DEFAULT_EXTRACTORS))
    # Per-extractor config overrides, e.g. {"swin": {"crop_pct": 1.0}, "tdnn": {"windows": [32]}};
    # keys are the fields of that extractor's Config dataclass. They change its cache key.
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Weights file per extractor (NAME -> PATH). Without one an extractor uses seeded random
    # weights, and the summary says so loudly. The file's sha256 is part of the cache key.
    weights: dict[str, str] = field(default_factory=dict)
    seed: int = 0  # seed of the random weights of extractors without a weights file
    device: str = "auto"  # "cpu", "cuda", "cuda:N", or "auto" (cuda when torch sees one)
    # "auto" (bf16 where the device computes it natively, else fp32: resolve_precision), "fp32",
    # "bf16" or "fp16" (autocast; Precision). The resolved value is part of the cache key.
    precision: str = "auto"
    batch_size: int = 32  # frames (or audio windows) per forward; every batch is padded to it
    # Audio embeddings are computed every K-th frame (and the last) and linearly interpolated
    # between (pipeline.features.audio_windows); 1 computes every frame. Part of their key.
    audio_stride: int = 1
    loader_threads: int = 4  # threads per worker decoding and preprocessing frames and audio
    prefetch: int = 8  # decode jobs (of up to batch_size frames) queued ahead of the model per worker
    # inprocess | processes:N | local:N (dask LocalCluster) | tcp://HOST:PORT (dask scheduler)
    scheduler: str = "inprocess"
    # Frames per task for pools and dask. Smaller: finer progress and balance; larger: fewer
    # padded batches (one per shard and batch stream). In-process runs use a single shard.
    shard_frames: int = 4096
    splits: list[str] = field(default_factory=lambda: list(SPLITS))  # manifest splits to extract
    # Re-read and re-hash stored arrays before reusing them (reads the whole store once per run).
    # Off (the default): trust completion markers, cache keys and the recorded chunk sizes (a few
    # stat calls per array); corrupt data is caught when it is read (crc32c per chunk, or sha256)
    # and `fer-pipeline store verify` is the full check.
    verify_existing: bool = False
    allow_skips: bool = False  # a clip with bad input does not make the run fail
    # Seconds an audio track may end before its clip's last frame on top of one video frame and
    # one audio codec frame (pipeline.data.media.short_audio) and still count as whole. A shorter
    # track in a whole file keeps the clip, its audio features past the track's end masked
    # (store array audio_valid); in a truncated file (video frames missing too) it is bad input.
    audio_short_tolerance: float = 0.0
    # Let weights files run their own code: a whole pickled model, a SpeechBrain yaml's object
    # tags beyond SpeechBrain's known classes, a TorchScript file. Only for files from a source
    # you trust (docs/trust.md). Not part of any cache key. Replaces configs.timm.trust_pickle
    # (still accepted, with a warning).
    trust_code: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.precision, Enum):  # a Precision given as the Enum itself
            self.precision = self.precision.value
        self.configs = {name: adopt_trust_pickle(self, name, dict(options))
                        if isinstance(options, dict) else options
                        for name, options in self.configs.items()}
        names = [*self.extractors, *self.configs, *self.weights]
        unknown = [n for n in names if not extractor_registry.is_known(n)]
        if unknown:
            raise PipelineError(f"unknown extractor {unknown[0]!r}; "
                                f"choose from {', '.join(extractor_registry.names())}"
                                f"{did_you_mean(unknown[0], extractor_registry.names())}")
        unused = [n for n in self.weights if n not in self.extractors]
        if unused:  # a weights file that would silently not be used is a typo or a missing -e
            raise PipelineError(f"--weights {unused[0]}=...: extractor {unused[0]!r} is not run "
                                f"(running: {', '.join(self.extractors)}); add -e {unused[0]}")
        if len(set(self.extractors)) != len(self.extractors) or not self.extractors:
            raise PipelineError(f"extractors {self.extractors}: need at least one, each once")
        if self.batch_size < 1 or self.audio_stride < 1 or self.loader_threads < 1:
            raise PipelineError("batch_size, audio_stride and loader_threads must be at least 1")
        if not self.audio_short_tolerance >= 0:
            raise PipelineError("audio_short_tolerance must be >= 0 seconds, "
                                f"got {self.audio_short_tolerance}")
        if self.precision not in ("auto", *PRECISIONS):
            raise PipelineError(f"unknown precision {self.precision!r}; "
                                f"choose from {', '.join(p.value for p in Precision)}")
