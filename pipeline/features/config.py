"""Stage one's configuration: what ``fer-pipeline extract`` computes and how (saved in every run report).

Fields are checked when the config is built (``__post_init__``); the choice lists come from the
library (:class:`~pipeline.features.extractors.base.Precision`, the extractor registry's
:func:`~pipeline.features.extractors.names`), so the CLI offers exactly what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.data.manifest import SPLITS
from pipeline.errors import PipelineError
from pipeline.features import extractors as extractor_registry
from pipeline.features.extractors.base import PRECISIONS, Precision

DEFAULT_EXTRACTORS = ("swin", "logmel", "tdnn")

__all__ = ["DEFAULT_EXTRACTORS", "ExtractConfig", "Precision"]


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
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (autocast; Precision); part of the cache key
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

    def __post_init__(self) -> None:
        if isinstance(self.precision, Precision):
            self.precision = self.precision.value
        names = [*self.extractors, *self.configs, *self.weights]
        unknown = [n for n in names if not extractor_registry.is_known(n)]
        if unknown:
            raise PipelineError(f"unknown extractor {unknown[0]!r}; "
                                f"choose from {', '.join(extractor_registry.names())}")
        if len(set(self.extractors)) != len(self.extractors) or not self.extractors:
            raise PipelineError(f"extractors {self.extractors}: need at least one, each once")
        if self.batch_size < 1 or self.audio_stride < 1 or self.loader_threads < 1:
            raise PipelineError("batch_size, audio_stride and loader_threads must be at least 1")
        if self.precision not in PRECISIONS:
            raise PipelineError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
