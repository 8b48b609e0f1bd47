"""Stage one's worker: one shard of clips through the extractors and into the store.

:func:`run_shard` runs wherever the executor puts it (this process, a pool process, a dask
worker). Three kinds of threads keep the model busy:

* the **producer** (one thread) walks the shard's clips: takes a clip's lock, re-checks what it
  still needs, lists its frame files, and submits decode jobs to the loader pool: chunks of
  frames (read JPEG, each image extractor's ``preprocess``), the clip's audio (decoded once per
  sample rate and shared with the next clip of the same video) and log-mel windows. The futures
  go, in order, into a bounded queue: it is what bounds memory and how far loading runs ahead.
* the **model** thread (the caller's) takes them in order and keeps one stream per model input
  (an image extractor, an audio embedding extractor at one window length). Streams collect rows
  across clip boundaries and run whenever a full batch is there; a short batch, at the end or
  before the producer blocks on a lock, is padded to ``batch_size`` so that every forward has the
  same shape (oneDNN and cuDNN choose kernels by shape, and a frame's fp32 result can differ in
  the last bit between batch sizes; padding makes it independent of its neighbours).
* the **writer** (one thread) writes each finished clip's arrays, ``valid`` last, each followed by
  its completion marker, then releases the clip's lock.

A clip with unreadable input (a missing, empty or corrupt JPEG, an undecodable audio file) is
dropped whole: none of its arrays is written and its outcome names the file and the reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.data.manifest import Clip
from pipeline.data.media import MediaError, decode_audio, read_image
from pipeline.features.audio_windows import fill_strided, frame_windows, strided_indices
from pipeline.features.extractors.base import (
    AudioEmbeddingExtractor,
    AudioExtractor,
    Extractor,
    ImageExtractor,
)
from pipeline.features.store import FeatureStore

VALID = "valid"  # bool [T]: frame i had a face image on disk
VALID_KEY = "valid-1"  # its cache key: it depends on nothing but the frame files


def array_keys(ext: Extractor, audio_stride: int, has_audio: bool) -> dict[str, str]:
    """Store array name -> the cache key it must carry to be reused.

    Audio embeddings depend on ``audio_stride`` too (frames between the computed ones are
    interpolated), and the zeros stored for a clip without audio must not be taken for features
    if the clip gains an audio track, so both are part of those arrays' keys.
    """
    key = ext.cache_key
    if isinstance(ext, AudioEmbeddingExtractor):
        key = f"{key}-stride{audio_stride}"
    if isinstance(ext, (AudioExtractor, AudioEmbeddingExtractor)) and not has_audio:
        key = f"{key}-noaudio"
    return {name: key for name in ext.outputs()}


@dataclass(frozen=True)
class ClipJob:
    """One clip of a shard and what the plan found missing."""

    clip: Clip
    extractors: tuple[str, ...]  # extractors whose arrays are to be (re)computed
    write_valid: bool  # the valid array is missing or stale


@dataclass
class ShardTask:
    """Everything a worker needs; small and picklable (extractors travel unloaded)."""

    store: str
    jobs: list[ClipJob]
    # Every extractor of the run, unloaded (models are built on first use): the same set in
    # every shard, so that a worker's cached models serve all of them.
    extractors: dict[str, Extractor]
    batch_size: int
    audio_stride: int
    loader_threads: int
    prefetch: int
    wait: bool  # block on clips another process holds (else report them "locked")


@dataclass
class ClipOutcome:
    """What happened to one clip. ``status``: done, by_other, skipped or locked."""

    clip_id: str
    status: str
    clip_frames: int  # the clip's n_frames (progress advances by it whatever the status)
    frames: int = 0  # frames computed (n_frames when done, else 0)
    written: list[str] = field(default_factory=list)  # arrays written
    reused: int = 0  # arrays the plan wanted but found complete when the clip was locked
    file: str | None = None  # for skipped: the unreadable file
    reason: str | None = None  # for skipped: why


class _InputError(Exception):
    """Bad input for one clip (the clip is skipped, the shard goes on)."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


def _input_error(path: str | Path, error: MediaError) -> _InputError:
    message = str(error)
    prefix = f"{path}: "
    return _InputError(str(path), message[len(prefix):] if message.startswith(prefix) else message)


# ---- worker-process state ------------------------------------------------------------------------

# Loaded models survive between the shards a pool or dask worker runs (keyed by what they are),
# so each worker builds each model once; in-process, between runs of one session. Only the last
# configuration's models are kept.
_LOADED: dict[tuple[str, str, str], Extractor] = {}
_LOADED_LOCK = threading.Lock()  # a dask worker may run two shards at once


def _worker_extractors(extractors: dict[str, Extractor]) -> dict[str, Extractor]:
    wanted = {(e.name, e.cache_key, e.device): e for e in extractors.values()}
    with _LOADED_LOCK:
        for stale in set(_LOADED) - set(wanted):  # a new configuration: drop the old models
            del _LOADED[stale]
        for key, ext in wanted.items():
            _LOADED.setdefault(key, ext)
        return {key[0]: _LOADED[key] for key in wanted}


class _AudioCache:
    """The last decoded waveform per sample rate: ``_left``/``_right`` clips share a video's audio."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[str, np.ndarray]] = {}

    def get(self, path: str, sample_rate: int) -> np.ndarray:
        with self._lock:  # decoding under the lock: the second clip of a video waits, not re-decodes
            entry = self._entries.get(sample_rate)
            if entry is None or entry[0] != path:
                try:
                    entry = (path, decode_audio(path, sample_rate))
                except MediaError as e:
                    raise _input_error(path, e) from None
                self._entries[sample_rate] = entry
            return entry[1]


# ---- per-clip state (owned by the model thread once the producer has queued it) ----------------


class _ClipState:
    def __init__(self, job: ClipJob, lock: contextlib.ExitStack, needed: list[Extractor],
                 write_valid: bool, reused: int) -> None:
        self.clip = job.clip
        self.lock = lock  # released by the writer (or on failure)
        self.needed = needed
        self.write_valid = write_valid
        self.reused = reused
        self.valid = np.zeros(job.clip.n_frames, dtype=bool)
        self.arrays: dict[str, np.ndarray] = {}  # finished arrays by store name
        self.partial: dict[str, np.ndarray] = {}  # embeddings at the strided frames, float32
        self.indices: np.ndarray | None = None  # the strided frames of the audio embeddings
        self.outstanding = 0  # pieces in a stream, not yet run
        self.ended = False  # the producer queued everything of this clip
        self.finished = False  # handed to the writer, or dropped
        self.failure: _InputError | None = None

    def put(self, name: str, rows: np.ndarray, values: np.ndarray, length: int, dtype: Any,
            partial: bool) -> None:
        target = self.partial if partial else self.arrays
        if name not in target:
            target[name] = np.zeros((length, *values.shape[1:]), dtype=dtype)
        target[name][rows] = values


# ---- batch streams -------------------------------------------------------------------------------


class _Stream:
    """Rows for one model input, collected across clips; runs on full (or padded) batches."""

    def __init__(self, run: Callable[[Any], dict[str, Any]], batch_size: int,
                 scatter: Callable[[_ClipState, np.ndarray, dict[str, np.ndarray]], None]) -> None:
        self.run = run  # tensor [batch_size, ...] -> {array name: tensor [batch_size, ...]}
        self.batch_size = batch_size
        self.scatter = scatter  # (clip, rows, {name: values}) -> stores the values
        self.pieces: deque[tuple[_ClipState, np.ndarray, Any]] = deque()
        self.count = 0

    def add(self, clip: _ClipState, rows: np.ndarray, tensor: Any) -> None:
        self.pieces.append((clip, rows, tensor))
        self.count += len(rows)
        clip.outstanding += 1

    def step(self, flush: bool) -> list[_ClipState]:
        """Run every full batch (and, if ``flush``, the rest); return clips that lost a piece."""
        import torch

        touched: list[_ClipState] = []
        while self.count >= self.batch_size or (flush and self.count):
            taken: list[tuple[_ClipState, np.ndarray, int]] = []
            tensors = []
            need = self.batch_size
            while need and self.pieces:
                clip, rows, tensor = self.pieces.popleft()
                if len(rows) > need:  # split: the tail stays queued as its own piece
                    self.pieces.appendleft((clip, rows[need:], tensor[need:]))
                    clip.outstanding += 1
                    rows, tensor = rows[:need], tensor[:need]
                taken.append((clip, rows, len(rows)))
                tensors.append(tensor)
                need -= len(rows)
                self.count -= len(rows)
            batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            n = batch.shape[0]
            if n < self.batch_size:
                batch = torch.cat([batch, batch.new_zeros((self.batch_size - n, *batch.shape[1:]))])
            with torch.inference_mode():
                outputs = {k: v[:n].float().cpu().numpy() for k, v in self.run(batch).items()}
            start = 0
            for clip, rows, count in taken:
                if clip.failure is None:
                    self.scatter(clip, rows, {k: v[start:start + count] for k, v in outputs.items()})
                start += count
                clip.outstanding -= 1
                touched.append(clip)
        return touched


# ---- the shard runner ----------------------------------------------------------------------------

_DONE = object()  # end of the producer's (or writer's) queue
_FLUSH = object()  # run short batches now: the producer is about to wait for a lock


def _load_images(paths: list[Path], extractors: list[ImageExtractor]) -> dict[str, Any]:
    """Decode a chunk of frames and preprocess it for each image extractor (a loader job)."""
    import torch

    images = []
    for path in paths:
        try:
            images.append(read_image(path))
        except MediaError as e:
            raise _input_error(path, e) from None
    return {e.name: torch.stack([e.preprocess(image) for image in images]) for e in extractors}


def _windows(mel: np.ndarray, mel_rate: float, n_frames: int, fps: float, window: int,
             indices: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(frame_windows(mel, mel_rate, n_frames, fps, window, indices))


class _ShardRunner:
    def __init__(self, task: ShardTask, on_outcome: Callable[[ClipOutcome], None] | None) -> None:
        self.task = task
        self.store = FeatureStore(task.store, "a")
        self.extractors = _worker_extractors(task.extractors)
        self.on_outcome = on_outcome
        self.outcomes: list[ClipOutcome] = []
        self.audio = _AudioCache()
        self.stop = threading.Event()
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, task.prefetch))
        self.writes: queue.Queue = queue.Queue(maxsize=2)
        self.writer_error: BaseException | None = None
        self.live: set[_ClipState] = set()  # clips holding a lock (released on failure)
        self.live_lock = threading.Lock()
        self.streams: dict[tuple, _Stream] = {}
        self.loader = cf.ThreadPoolExecutor(task.loader_threads, thread_name_prefix="fer-loader")

    # -- bookkeeping (any thread) --

    def _record(self, outcome: ClipOutcome) -> None:
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _release(self, state: _ClipState) -> None:
        with self.live_lock:
            self.live.discard(state)
        state.lock.close()

    def _put(self, target: queue.Queue, item: Any) -> None:
        """Put into a bounded queue, giving up when the run is being stopped."""
        while True:
            if self.stop.is_set():
                raise _Stopped
            if target is self.writes and self.writer_error is not None:
                raise self.writer_error
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- producer thread --

    def _open(self, job: ClipJob) -> _ClipState | None:
        """Lock and re-check a clip; None when there is nothing to do (outcome recorded)."""
        clip = job.clip
        if clip.n_frames < 1:
            self._record(ClipOutcome(clip.clip_id, "skipped", 0, file=clip.frames_dir or "",
                                     reason="the clip has no frames"))
            return None
        lock = contextlib.ExitStack()
        if not lock.enter_context(self.store.lock_clip(clip.clip_id)):
            lock.close()
            if not self.task.wait:
                self._record(ClipOutcome(clip.clip_id, "locked", clip.n_frames))
                return None
            # Another process holds it: run our short batches first (one of its clips could be
            # waiting behind ours), then wait for its lock.
            self._put(self.queue, _FLUSH)
            lock = contextlib.ExitStack()
            lock.enter_context(self.store.lock_clip(clip.clip_id, blocking=True))
        try:
            has_audio = clip.audio_path is not None
            self.store.ensure_clip(clip.clip_id, clip.n_frames, clip.fps, {"has_audio": has_audio})
            needed, reused = [], 0
            for name in job.extractors:
                ext = self.extractors[name]
                keys = array_keys(ext, self.task.audio_stride, has_audio)
                if all(self.store.is_complete(clip.clip_id, a, k) for a, k in keys.items()):
                    reused += len(keys)  # another process finished it meanwhile
                else:
                    needed.append(ext)
            write_valid = not self.store.is_complete(clip.clip_id, VALID, VALID_KEY)
            reused += job.write_valid and not write_valid
        except BaseException:
            lock.close()
            raise
        if not needed and not write_valid:
            lock.close()
            self._record(ClipOutcome(clip.clip_id, "by_other", clip.n_frames, reused=reused))
            return None
        state = _ClipState(job, lock, needed, write_valid, reused)
        with self.live_lock:
            self.live.add(state)
        return state

    def _queue_clip(self, state: _ClipState) -> None:
        clip = state.clip
        images = [e for e in state.needed if isinstance(e, ImageExtractor)]
        audio = [e for e in state.needed if isinstance(e, AudioExtractor)]
        embeddings = [e for e in state.needed if isinstance(e, AudioEmbeddingExtractor)]
        audio_future = None
        if (audio or embeddings) and clip.audio_path is not None:
            # Submitted first: it decodes while the frames are queued.
            audio_future = self.loader.submit(self._load_audio, clip.audio_path, audio, embeddings)
        if clip.frames_dir is not None:
            try:
                present = set(os.listdir(clip.frames_dir))  # one listing, not a stat per frame
            except OSError as e:
                self._put(self.queue, ("fail", state, _InputError(clip.frames_dir, f"unreadable frame folder ({e.strerror})")))
                self._put(self.queue, ("end", state))
                return
            state.valid = np.array([clip.frame_path(i).name in present for i in range(clip.n_frames)], bool)
        if images:
            frames = np.flatnonzero(state.valid)
            for start in range(0, len(frames), self.task.batch_size):
                rows = frames[start:start + self.task.batch_size]
                paths = [clip.frame_path(int(i)) for i in rows]
                self._put(self.queue, ("image", state, rows, self.loader.submit(_load_images, paths, images)))
        if audio_future is not None:
            try:
                arrays, mels = audio_future.result()
            except _InputError as e:
                self._put(self.queue, ("fail", state, e))
                self._put(self.queue, ("end", state))
                return
            self._put(self.queue, ("arrays", state, arrays))
            state.indices = strided_indices(clip.n_frames, self.task.audio_stride)
            for ext in embeddings:
                frontend = ext.frontend
                for window in ext.windows:
                    for start in range(0, len(state.indices), self.task.batch_size):
                        rows = np.arange(start, min(start + self.task.batch_size, len(state.indices)))
                        future = self.loader.submit(_windows, mels[ext.name], frontend.frame_rate,
                                                    clip.n_frames, clip.fps, window, state.indices[rows])
                        self._put(self.queue, ("window", state, (ext.name, window), rows, future))
        self._put(self.queue, ("end", state))

    def _load_audio(self, path: str, audio: list[AudioExtractor],
                    embeddings: list[AudioEmbeddingExtractor]) -> tuple[dict, dict]:
        """Decode once per sample rate; log-mel arrays and each embedding extractor's frontend."""
        arrays = {}
        for ext in audio:
            (name,) = ext.outputs()
            arrays[name] = ext.compute(self.audio.get(path, ext.sample_rate))
        mels = {ext.name: ext.frontend.compute(self.audio.get(path, ext.frontend.sample_rate))
                for ext in embeddings}
        return arrays, mels

    def _produce(self) -> None:
        try:
            for job in self.task.jobs:
                state = self._open(job)
                if state is not None:
                    self._queue_clip(state)
            self._put(self.queue, _DONE)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001  (re-raised in the model thread)
            with contextlib.suppress(_Stopped):
                self._put(self.queue, ("error", e))

    # -- model thread --

    def _stream(self, key: tuple) -> _Stream:
        if key not in self.streams:
            batch = self.task.batch_size
            if key[0] == "image":
                ext = self.extractors[key[1]]
                specs = ext.outputs()

                def scatter(clip: _ClipState, rows: np.ndarray, values: dict) -> None:
                    for name, v in values.items():
                        clip.put(name, rows, v, clip.clip.n_frames, specs[name].dtype, partial=False)

                self.streams[key] = _Stream(ext.forward, batch, scatter)
            else:
                ext = self.extractors[key[1]]
                name = f"{ext.name}_w{key[2]}"

                def scatter(clip: _ClipState, rows: np.ndarray, values: dict) -> None:
                    clip.put(name, rows, values[name], len(clip.indices), np.float32, partial=True)

                self.streams[key] = _Stream(lambda x, e=ext, n=name: {n: e.embed(x)}, batch, scatter)
        return self.streams[key]

    def _fail(self, state: _ClipState, error: _InputError) -> None:
        if state.failure is None:
            state.failure = error

    def _finish(self, state: _ClipState) -> None:
        """A clip whose rows have all run: drop it (bad input) or hand it to the writer."""
        if not state.ended or state.outstanding or state.finished:
            return
        state.finished = True
        if state.failure is not None:
            self._release(state)
            self._record(ClipOutcome(state.clip.clip_id, "skipped", state.clip.n_frames,
                                     file=state.failure.file, reason=state.failure.reason))
            return
        self._put(self.writes, state)

    def _step(self, flush: bool) -> None:
        for stream in self.streams.values():
            for clip in stream.step(flush):
                self._finish(clip)

    def _consume(self) -> None:
        while True:
            item = self.queue.get()
            if item is _DONE:
                self._step(flush=True)
                return
            if item is _FLUSH:
                self._step(flush=True)
                continue
            kind, state = item[0], item[1]
            if kind == "error":
                raise state
            if kind == "end":
                state.ended = True
                self._finish(state)
                continue
            if kind == "fail":
                self._fail(state, item[2])
                continue
            if kind == "arrays":
                state.arrays.update(item[2])
                continue
            if state.failure is not None:
                continue  # the clip is dropped: do not spend the model on it
            try:
                loaded = item[-1].result()
            except _InputError as e:
                self._fail(state, e)
                continue
            if kind == "image":
                for name, tensor in loaded.items():
                    self._stream(("image", name)).add(state, item[2], tensor)
            else:  # "window": one stream per window length in log-mel rows (it varies with fps)
                self._stream(("window", *item[2], loaded.shape[1])).add(state, item[3], loaded)
            self._step(flush=False)

    # -- writer thread --

    def _assemble(self, state: _ClipState) -> dict[str, tuple[np.ndarray, float]]:
        """The clip's arrays in write order (features first, ``valid`` last), with their rates."""
        clip = state.clip
        out: dict[str, tuple[np.ndarray, float]] = {}
        for ext in state.needed:
            specs = ext.outputs()
            rate = ext.frame_rate if isinstance(ext, AudioExtractor) else clip.fps
            for name, spec in specs.items():
                data = state.arrays.get(name)
                if data is None and name in state.partial:
                    data = fill_strided(state.partial[name], state.indices, clip.n_frames)
                if data is None:
                    # No face in any frame, or no audio track: zeros (log-mel gets no rows).
                    rows = 0 if spec.rate == "audio" else clip.n_frames
                    data = np.zeros((rows, *spec.shape), dtype=spec.dtype)
                out[name] = (np.asarray(data, dtype=spec.dtype), rate)
        if state.write_valid:
            out[VALID] = (state.valid, clip.fps)
        return out

    def _write(self) -> None:
        while not self.stop.is_set():
            try:
                state = self.writes.get(timeout=0.1)
            except queue.Empty:
                continue
            if state is _DONE:
                return
            clip = state.clip
            try:
                keys = {VALID: VALID_KEY}
                for ext in state.needed:
                    keys.update(array_keys(ext, self.task.audio_stride, clip.audio_path is not None))
                written = []
                for name, (data, rate) in self._assemble(state).items():
                    self.store.write(clip.clip_id, name, data, keys[name], rate)
                    written.append(name)
            except BaseException as e:  # noqa: BLE001  (re-raised in the model thread)
                self.writer_error = e
                return
            finally:
                self._release(state)
            self._record(ClipOutcome(clip.clip_id, "done", clip.n_frames, clip.n_frames,
                                     written, state.reused))

    # -- run --

    def run(self) -> list[ClipOutcome]:
        producer = threading.Thread(target=self._produce, name="fer-producer", daemon=True)
        writer = threading.Thread(target=self._write, name="fer-writer", daemon=True)
        producer.start()
        writer.start()
        try:
            self._consume()
            self._put(self.writes, _DONE)
            writer.join()
            if self.writer_error is not None:
                raise self.writer_error
        except BaseException:
            self.stop.set()
            raise
        finally:
            producer.join()
            writer.join()
            self.loader.shutdown(wait=True, cancel_futures=True)
            with self.live_lock:
                held = list(self.live)
            for state in held:  # a failed run leaves no lock behind in a long-lived process
                self._release(state)
        return self.outcomes


class _Stopped(Exception):
    """The run is stopping (an error elsewhere): the producer gives up."""


def run_shard(task: ShardTask, on_outcome: Callable[[ClipOutcome], None] | None = None) -> list[ClipOutcome]:
    """Extract one shard of clips (see the module docstring); returns every clip's outcome.

    ``on_outcome`` is called as each clip ends (only in-process: it cannot travel to workers).
    """
    return _ShardRunner(task, on_outcome).run()
