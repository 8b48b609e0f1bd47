"""What stage one's engine and an extractor kind exchange: a clip's context, loader jobs, results.

The engine (:mod:`pipeline.features.runner`) knows no extractor kind by name. For each clip it
groups the extractors still to run by ``kind`` and calls the kind's ``feed`` classmethod once per
group (so that, for example, every image extractor shares one decode of each JPEG) with a
:class:`ClipContext`. ``feed`` returns an iterator of :class:`Job`: work submitted to the loader
pool, each resolving to a :class:`Loaded` (rows for the model, or finished arrays). The engine
batches the rows of each :class:`StreamKey` across clips, runs them through the extractor's
``run_batch``, scatters the outputs into per-clip buffers (``buffer``), and hands the buffers to
the extractor's ``assemble`` when the clip is complete.

This module is cheap to import (no torch, no media library): extractor base classes import it.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from pipeline.data.manifest import Clip


class InputError(Exception):
    """Bad input for one clip (the clip is skipped whole, the shard goes on)."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class StreamKey:
    """One batch stream: rows of one extractor's model input (``part``: e.g. a window length).

    The engine also keys streams by the rows' shape, so rows of one stream always concatenate.
    """

    extractor: str
    part: Hashable = None


@dataclass
class Loaded:
    """What a loader job produced for a clip."""

    # Model input rows per stream, each [len(Job.rows), ...] (torch tensors).
    batches: dict[StreamKey, Any] = field(default_factory=dict)
    # Arrays finished without the model (e.g. log-mel), by store name.
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Job:
    """A piece of a clip's input, submitted to the loader pool."""

    future: cf.Future  # resolves to a Loaded, or raises InputError
    rows: np.ndarray | None = None  # buffer rows its batches fill (None: arrays only)


@dataclass
class ClipContext:
    """A clip as the kinds' ``feed`` and ``assemble`` see it."""

    clip: Clip
    valid: np.ndarray  # bool [n_frames]: frames with a face image on disk
    batch_size: int  # rows per forward: the size to cut jobs at
    audio_stride: int  # audio embeddings at every k-th frame (and the last), interpolated between
    submit: Callable[..., cf.Future]  # run fn(*args) in the loader pool
    waveform: Callable[[int], np.ndarray]  # the clip's audio at a rate (decoded once; InputError)
    # Set when the waveform was read and its track ends before the video (loading.ShortAudio):
    # the writer then stores which frames the audio covers (store_format.AUDIO_VALID).
    audio_short: Any = None

    @property
    def n_frames(self) -> int:
        return self.clip.n_frames

    @property
    def has_audio(self) -> bool:
        return self.clip.audio_path is not None
