"""The ``audio_embedding`` kind: windows of a per-clip frontend centred on video frames -> vectors.

Per clip the engine decodes the audio at :attr:`~AudioEmbeddingExtractor.frontend_sample_rate`,
runs :meth:`~AudioEmbeddingExtractor.compute_frontend` once (``float32 [T_f, F]`` at
:attr:`~AudioEmbeddingExtractor.frontend_frame_rate` rows/s), cuts the window of each length in
``windows`` (video frames) around every ``audio_stride``-th frame with
:func:`~pipeline.features.audio_windows.frame_windows` (rows outside the clip padded as
:attr:`~AudioEmbeddingExtractor.pad_mode` says), batches the windows across clips through
:meth:`~AudioEmbeddingExtractor.embed`, and fills the frames between by linear interpolation
(:func:`~pipeline.features.audio_windows.fill_strided`). Arrays: ``<name>_w<length>``, ``[T, D]``.

**Once per clip.** An extractor whose network is frame-level layers followed by statistics pooling
and segment-level layers (``tdnn``) offers :meth:`~AudioEmbeddingExtractor.frame_context`,
:meth:`~AudioEmbeddingExtractor.frame_level` and :meth:`~AudioEmbeddingExtractor.pool_segment`.
The engine then runs the frame-level layers once over the clip and pools every window from prefix
sums (:mod:`pipeline.features.window_pooling`, which says exactly which rows a window pools):
loader jobs send ``float64 [B, 2C + 1]`` rows (sum, sum of squares, count per window) to the
model thread, where :meth:`~AudioEmbeddingExtractor.pool_segment` finishes them. Without these
(or with ``config.per_clip`` false) each window runs through :meth:`~AudioEmbeddingExtractor.embed`
whole, as before. A mean-pooling extractor (``hf_audio``) fits the same pair with no frame-level
layers (``frame_context() == (0, 0)``); ECAPA does not (its squeeze-excitation blocks and
attentive pooling look at the whole window).

The default frontend is a :class:`~pipeline.features.extractors.logmel.LogMel` configured by the
subclass's ``config.frontend`` (``tdnn``, ``swin_audio``); other frontends (a raw waveform for a
wav2vec2-style model, say) override the three ``frontend`` members.
"""

from __future__ import annotations

from abc import abstractmethod
from concurrent.futures import Future
from typing import Any, ClassVar, Hashable, Iterator

import numpy as np

from pipeline.errors import PipelineError
from pipeline.features.audio_windows import (
    PAD_MODES,
    fill_strided,
    frame_windows,
    strided_indices,
    window_length,
    window_starts,
)
from pipeline.features.extractors.base import ArraySpec, Extractor
from pipeline.features.extractors.logmel import LogMel
from pipeline.features.feeding import ClipContext, Job, Loaded, StreamKey
from pipeline.features.window_pooling import ClipFrames, pooled_ranges


class AudioEmbeddingExtractor(Extractor):
    """Windows of a frontend -> one vector per window (see the module docstring).

    Subclasses' configs have ``windows`` (lengths in video frames), and ``frontend`` (a
    :class:`LogMelConfig`) unless they override the frontend members; subclasses set
    :attr:`embedding_dim` and :meth:`embed`.
    """

    kind: ClassVar[str] = "audio_embedding"
    needs_audio: ClassVar[bool] = True
    strided: ClassVar[bool] = True
    # Window rows outside the clip: "min" = the clip's minimum value (log-mel's silence floor),
    # "edge" = repeat the first / last frame.
    pad_mode: ClassVar[str] = "min"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        windows = self.config.windows
        if not windows or min(windows) < 1:
            raise PipelineError(f"{self.name}: windows must be positive video-frame counts, got {windows}")
        assert self.pad_mode in PAD_MODES, f"{self.name}: pad_mode {self.pad_mode!r} not in {PAD_MODES}"
        self._frontend: LogMel | None = None

    # ---- the frontend (log-mel by default) -----------------------------------------------------

    @property
    def frontend(self) -> LogMel:
        """The log-mel extractor whose output this one windows (configured by ``config.frontend``)."""
        if self._frontend is None:
            self._frontend = LogMel(self.config.frontend)
        return self._frontend

    @property
    def frontend_sample_rate(self) -> int:
        """The waveform rate :meth:`compute_frontend` expects."""
        return self.frontend.sample_rate

    @property
    def frontend_frame_rate(self) -> float:
        """Rows per second of :meth:`compute_frontend`'s output."""
        return self.frontend.frame_rate

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        """float32 [n_samples] mono -> float32 [T_f, F], once per clip."""
        return self.frontend.compute(waveform)

    # ---- outputs and model ---------------------------------------------------------------------

    # The arrays' prefix when it is not the extractor's name (swin_audio_w32 writes swin_audio_w32,
    # the array swin_audio's 32-frame window writes: one extractor per window and weights folder).
    array_prefix: str | None = None

    @property
    def windows(self) -> tuple[int, ...]:
        """Window lengths in video frames, e.g. (32, 48, 64); arrays are ``<prefix>_w<length>``."""
        return tuple(self.config.windows)

    @property
    def prefix(self) -> str:
        """The arrays' prefix: :attr:`array_prefix`, else the extractor's name."""
        return self.array_prefix or self.name

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width of one window's embedding."""

    def outputs(self) -> dict[str, ArraySpec]:
        return {f"{self.prefix}_w{w}": ArraySpec((self.embedding_dim,)) for w in self.windows}

    @abstractmethod
    def embed(self, windows: Any) -> Any:
        """[B, T_window, F] tensor -> [B, D] tensor; frozen, no grad."""

    # ---- optional: the per-clip path (pipeline.features.window_pooling) -----------------------

    def frame_context(self) -> tuple[int, int] | None:
        """``(left, right)``: frontend rows before and after a row that its frame-level output
        reads; None (the default): no per-clip path, every window runs through :meth:`embed`."""
        return None

    def frame_level(self, rows: np.ndarray) -> Any:
        """``float32 [N, F]`` frontend rows -> ``[N - left - right, C]`` frame-level outputs."""
        raise NotImplementedError(f"{self.name}: no frame-level layers")

    def pool_segment(self, sums: Any, sums_sq: Any, counts: Any) -> Any:
        """Per window, float64 ``[B, C]`` sums of its frame-level outputs and of their squares and
        ``[B]`` counts -> ``[B, D]`` embeddings (statistics pooling, then the segment layers)."""
        raise NotImplementedError(f"{self.name}: no segment layers")

    @property
    def per_clip(self) -> bool:
        """Whether the engine runs the frame-level layers once per clip (``config.per_clip``)."""
        return self.frame_context() is not None and getattr(self.config, "per_clip", True)

    # ---- how the engine feeds it ---------------------------------------------------------------

    @classmethod
    def feed(cls, extractors: list[Extractor], clip: ClipContext) -> Iterator[Job]:
        """Each extractor's frontend (submitted now), then its windows in ``batch_size`` chunks."""
        if not clip.has_audio:
            return iter(())
        fronts = {ext.name: clip.submit(_frontend, ext, clip) for ext in extractors}
        return _jobs(extractors, clip, fronts)

    def run_batch(self, part: Hashable, batch: Any) -> dict[str, Any]:
        if self.per_clip:  # rows of window_sums: sum, sum of squares, count
            c = (batch.shape[1] - 1) // 2
            return {f"{self.prefix}_w{part}": self.pool_segment(batch[:, :c], batch[:, c:2 * c], batch[:, 2 * c])}
        return {f"{self.prefix}_w{part}": self.embed(batch)}

    def buffer(self, name: str, clip: ClipContext) -> tuple[int, str]:
        # Embeddings at the strided frames only, float32 until interpolated.
        return len(strided_indices(clip.n_frames, clip.audio_stride)), "float32"

    def assemble(self, clip: ClipContext, buffers: dict[str, np.ndarray],
                 arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices = strided_indices(clip.n_frames, clip.audio_stride)
        filled = {name: fill_strided(buffers[name], indices, clip.n_frames)
                  for name in self.outputs() if name in buffers}
        return super().assemble(clip, filled, arrays)


def _frontend(ext: AudioEmbeddingExtractor, clip: ClipContext) -> np.ndarray:
    return ext.compute_frontend(clip.waveform(ext.frontend_sample_rate))


def _jobs(extractors: list[AudioEmbeddingExtractor], clip: ClipContext,
          fronts: dict[str, Any]) -> Iterator[Job]:
    indices = strided_indices(clip.n_frames, clip.audio_stride)
    for ext in extractors:
        if ext.per_clip:
            yield from _pooled_jobs(ext, clip, fronts[ext.name], indices)
            continue
        for window in ext.windows:
            for start in range(0, len(indices), clip.batch_size):
                rows = np.arange(start, min(start + clip.batch_size, len(indices)))
                future = clip.submit(_windows, ext, clip, fronts[ext.name], window, indices[rows])
                yield Job(future, rows)


def _windows(ext: AudioEmbeddingExtractor, clip: ClipContext, front: Any, window: int,
             indices: np.ndarray) -> Loaded:
    """One chunk of windows (a loader job). It waits for the clip's frontend, a job submitted
    before it: the pool runs jobs in submission order, so that one is already running."""
    import torch

    windows = frame_windows(front.result(), ext.frontend_frame_rate, clip.n_frames, clip.clip.fps,
                            window, indices, pad=ext.pad_mode)
    return Loaded(batches={StreamKey(ext.name, window): torch.from_numpy(windows)})


# ---- the per-clip path -------------------------------------------------------------------------


class _ClipPooling:
    """A clip's :class:`ClipFrames`, built by the first of its jobs once the frontend is there."""

    def __init__(self, ext: AudioEmbeddingExtractor, front: Future, origin: int) -> None:
        self.ext, self.front, self.origin = ext, front, origin
        self.frames: ClipFrames | None = None

    def get(self) -> ClipFrames:
        if self.frames is None:
            self.frames = ClipFrames(self.ext, self.front.result(), self.origin)
        return self.frames


def _pooled_jobs(ext: AudioEmbeddingExtractor, clip: ClipContext, front: Future,
                 indices: np.ndarray) -> Iterator[Job]:
    """One job per ``batch_size`` frames with every window length's sums: the clip's jobs share
    the prefix sums, so each waits for the one before it (submitted earlier: already running)."""
    left, right = ext.frame_context()
    rate = ext.frontend_frame_rate
    ranges = {}
    for window in ext.windows:
        t_win = window_length(window, clip.clip.fps, rate)
        ranges[window] = pooled_ranges(window_starts(indices, clip.clip.fps, rate, t_win), t_win, left, right)
    pooling = _ClipPooling(ext, front, min(int(first.min()) for first, _ in ranges.values()))
    previous = None
    for start in range(0, len(indices), clip.batch_size):
        rows = np.arange(start, min(start + clip.batch_size, len(indices)))
        parts = {window: (first[rows], stop[rows]) for window, (first, stop) in ranges.items()}
        previous = clip.submit(_pooled, pooling, previous, parts)
        yield Job(previous, rows)


def _pooled(pooling: _ClipPooling, previous: Future | None,
            parts: dict[int, tuple[np.ndarray, np.ndarray]]) -> Loaded:
    """One loader job: the window sums of a chunk of frames, for every window length."""
    import torch

    if previous is not None:
        previous.result()  # raises the clip's InputError, if any
    firsts = np.concatenate([first for first, _ in parts.values()])
    stops = np.concatenate([stop for _, stop in parts.values()])
    sums = pooling.get().window_sums(firsts, stops)  # one call: the earliest row of the chunk first
    batches, at = {}, 0
    for window, (first, _) in parts.items():
        batches[StreamKey(pooling.ext.name, window)] = torch.from_numpy(sums[at:at + len(first)])
        at += len(first)
    return Loaded(batches=batches)
