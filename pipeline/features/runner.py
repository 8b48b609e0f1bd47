"""Stage one's engine: one shard of clips through the extractors and into the store.

:func:`run_shard` runs wherever the executor puts it (this process, a pool process, a dask
worker). Three kinds of threads keep the model busy:

* the **producer** (one thread) walks the shard's clips: takes a clip's lock, re-checks what it
  still needs (:func:`pipeline.features.plan.missing`), lists its frame files, and asks each
  extractor kind to ``feed`` the clip (:mod:`pipeline.features.feeding`): decode jobs submitted
  to the loader pool (:mod:`pipeline.features.loading`). The jobs go, in order, into a bounded
  queue: it is what bounds memory and how far loading runs ahead.
* the **model** thread (the caller's) takes them in order and keeps one
  :class:`~pipeline.features.batching.BatchStream` per model input, whose batches span clips
  and are padded to ``batch_size``.
* the **writer** (:mod:`pipeline.features.writing`) writes each finished clip's arrays, ``valid``
  last, each followed by its completion marker, then releases the clip's lock.

A clip with unreadable input (a missing, empty or corrupt JPEG, an undecodable audio file, a
truncated file) is dropped whole: none of its arrays is written and its outcome names the file
and the reason. An audio track that merely ends before the video (or starts after it) keeps the
clip: its frames without audio are masked (``audio_valid``) and the outcome's ``note`` says so.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from pipeline.features.batching import BatchStream
from pipeline.features.extractors.base import Extractor
from pipeline.features.feeding import ClipContext, InputError, Job, Loaded
from pipeline.features.loading import AudioCache
from pipeline.features.plan import ClipJob, missing
from pipeline.features.store import FeatureStore
from pipeline.features.store_meta import clip_attributes
from pipeline.features.writing import ClipState, ClipWriter

__all__ = ["ClipJob", "ClipOutcome", "ShardTask", "run_shard"]


@dataclass
class ShardTask:
    """Everything a worker needs; small and picklable (extractors travel unloaded)."""

    store: str
    jobs: list[ClipJob]
    # Every extractor of the run, unloaded (each worker builds the models before its threads
    # start): the same set in every shard, so that a worker's cached models serve all of them.
    extractors: dict[str, Extractor]
    batch_size: int
    audio_stride: int
    loader_threads: int
    prefetch: int
    wait: bool  # block on clips another process holds (else report them "locked")
    audio_short_tolerance: float = 0.0  # ExtractConfig.audio_short_tolerance


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
    note: str | None = None  # for done: what was missing but masked (audio ending early), one line


# ---- messages from the producer to the model thread ----------------------------------------------

@dataclass
class _Load:
    state: ClipState
    job: Job


@dataclass
class _ClipEnd:
    state: ClipState  # everything of the clip is queued


@dataclass
class _ClipFailed:
    state: ClipState
    error: InputError


@dataclass
class _ProducerFailed:
    error: BaseException


@dataclass
class _Flush:
    """Run short batches now: the producer is about to wait for a lock."""


@dataclass
class _Done:
    """The producer queued every clip."""


class _Stopped(Exception):
    """The run is stopping (an error elsewhere): the producer gives up."""


# ---- worker-process state ------------------------------------------------------------------------

# Loaded models survive between the shards a pool or dask worker runs, keyed by what defines them
# (name, cache key: config, weights sha256, seed, precision; device), so each worker builds each
# model once; in-process, between runs of one session. Only the last configuration's models are
# kept. A model enters the cache only once it has loaded: a failed load is never kept, so a
# corrected command (the same weights at a path the worker can read, say) loads afresh.
_LOADED: dict[tuple[str, str, str], Extractor] = {}
_LOADED_LOCK = threading.Lock()  # a dask worker may run two shards at once


def _worker_extractors(extractors: dict[str, Extractor]) -> dict[str, Extractor]:
    """This worker's loaded extractors for a shard. Every model is built here, in the shard's
    own thread before its loader threads start (never lazily by whichever thread asks first)."""
    wanted = {(e.name, e.cache_key, e.device): e for e in extractors.values()}
    with _LOADED_LOCK:
        for stale in set(_LOADED) - set(wanted):  # a new configuration: drop the old models
            del _LOADED[stale]
        for key, ext in wanted.items():
            if key not in _LOADED:
                ext.load()  # raises on failure: nothing is cached
                _LOADED[key] = ext
        return {key[0]: _LOADED[key] for key in wanted}


class _ShardRunner:
    def __init__(self, task: ShardTask, on_outcome: Callable[[ClipOutcome], None] | None,
                 on_frames: Callable[[str, int], None] | None = None) -> None:
        self.task = task
        self.on_frames = on_frames
        # clip -> stream -> rows run: a clip's frames through its furthest model (see _step)
        self.rows_run: dict[str, dict[Hashable, int]] = {}
        self.store = FeatureStore(task.store, "a")
        self.extractors = _worker_extractors(task.extractors)
        self.on_outcome = on_outcome
        self.outcomes: list[ClipOutcome] = []
        self.audio = AudioCache()
        self.stop = threading.Event()
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, task.prefetch))
        self.writer = ClipWriter(self.store, task.audio_stride, self.stop, self._release, self._written)
        self.live: set[ClipState] = set()  # clips holding a lock (released on failure)
        self.live_lock = threading.Lock()
        self.streams: dict[tuple[Hashable, tuple[int, ...]], BatchStream] = {}
        self.loader = cf.ThreadPoolExecutor(task.loader_threads, thread_name_prefix="fer-loader")

    # -- bookkeeping (any thread) --

    def _record(self, outcome: ClipOutcome) -> None:
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _release(self, state: ClipState) -> None:
        with self.live_lock:
            self.live.discard(state)
        state.lock.close()

    def _written(self, state: ClipState, names: list[str]) -> None:
        n = state.context.n_frames
        short = state.context.audio_short
        note = None if short is None else f"{state.context.clip.audio_path}: {short}"
        self._record(ClipOutcome(state.clip_id, "done", n, n, names, state.reused, note=note))

    def _put(self, target: queue.Queue, item: Any) -> None:
        """Put into a bounded queue, giving up when the run is being stopped."""
        while True:
            if self.stop.is_set():
                raise _Stopped
            if target is self.writer.queue and self.writer.error is not None:
                raise self.writer.error
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- producer thread --

    def _open(self, job: ClipJob) -> ClipState | None:
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
            self._put(self.queue, _Flush())
            lock = contextlib.ExitStack()
            lock.enter_context(self.store.lock_clip(clip.clip_id, blocking=True))
        try:
            self.store.ensure_clip(clip.clip_id, clip.n_frames, clip.fps, clip_attributes(clip))
            found = missing(self.store, clip, {n: self.extractors[n] for n in job.extractors},
                            self.task.audio_stride)
        except BaseException:
            lock.close()
            raise
        # Arrays another process finished meanwhile (valid only if the plan wanted it).
        reused = found.complete - (not job.write_valid and not found.write_valid)
        if found.nothing:
            lock.close()
            self._record(ClipOutcome(clip.clip_id, "by_other", clip.n_frames, reused=reused))
            return None
        def waveform(rate: int) -> np.ndarray:
            samples, short = self.audio.get(clip.audio_path, rate, clip.n_frames, clip.fps,
                                            self.task.audio_short_tolerance)
            context.audio_short = short if short is not None else context.audio_short
            return samples

        context = ClipContext(clip, np.zeros(clip.n_frames, dtype=bool), self.task.batch_size,
                              self.task.audio_stride, self.loader.submit, waveform)
        state = ClipState(context, lock, [self.extractors[n] for n in found.extractors],
                          found.write_valid, reused)
        with self.live_lock:
            self.live.add(state)
        return state

    def _queue_clip(self, state: ClipState) -> None:
        clip = state.context.clip
        if clip.frames_dir is not None:
            try:
                present = set(os.listdir(clip.frames_dir))  # one listing, not a stat per frame
            except OSError as e:
                error = InputError(clip.frames_dir, f"unreadable frame folder ({e.strerror})")
                self._put(self.queue, _ClipFailed(state, error))
                self._put(self.queue, _ClipEnd(state))
                return
            state.context.valid = np.array(
                [clip.frame_path(i).name in present for i in range(clip.n_frames)], bool)
        groups: dict[str, list[Extractor]] = {}
        for ext in state.needed:  # extractors of one kind are fed together (shared decoding)
            groups.setdefault(ext.kind, []).append(ext)
        # Every kind first submits what it can start now, then the jobs are queued in order.
        feeds = [type(group[0]).feed(group, state.context) for group in groups.values()]
        for feed in feeds:
            for job in feed:
                self._put(self.queue, _Load(state, job))
        self._put(self.queue, _ClipEnd(state))

    def _produce(self) -> None:
        try:
            for job in self.task.jobs:
                state = self._open(job)
                if state is not None:
                    self._queue_clip(state)
            self._put(self.queue, _Done())
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001  (re-raised in the model thread)
            with contextlib.suppress(_Stopped):
                self._put(self.queue, _ProducerFailed(e))

    # -- model thread --

    def _stream(self, key: Hashable, shape: tuple[int, ...]) -> BatchStream:
        """One stream per key and row shape (e.g. a window length in frontend rows varies with fps)."""
        if (key, shape) not in self.streams:
            ext = self.extractors[key.extractor]
            self.streams[key, shape] = BatchStream(
                lambda batch, e=ext, part=key.part: e.run_batch(part, batch), self.task.batch_size,
                ext.device)
        return self.streams[key, shape]

    def _finish(self, state: ClipState) -> None:
        """A clip whose rows have all run: drop it (bad input) or hand it to the writer."""
        if not state.ended or state.pending_rows or state.finished:
            return
        state.finished = True
        if state.failure is not None:
            self._release(state)
            self._record(ClipOutcome(state.clip_id, "skipped", state.context.n_frames,
                                     file=state.failure.file, reason=state.failure.reason))
            return
        self._put(self.writer.queue, state)

    def _step(self, flush: bool) -> None:
        for (key, _), stream in self.streams.items():
            ext = self.extractors[key.extractor]
            for piece in stream.step(flush):
                state = piece.owner
                if state.failure is None:
                    state.put(ext, piece.rows, piece.outputs)
                state.pending_rows -= len(piece.rows)
                self._frames_run(state, key, len(piece.rows))
                self._finish(state)

    def _frames_run(self, state: ClipState, key: Hashable, rows: int) -> None:
        """Tell ``on_frames`` how many frames of a clip have run: the rows of the stream furthest
        along (each stream has a row per frame), so that a long clip shows progress before it
        ends; the clip's outcome then completes it."""
        if self.on_frames is None:
            return
        run = self.rows_run.setdefault(state.clip_id, {})
        before = max(run.values(), default=0)
        run[key] = run.get(key, 0) + rows
        done = min(max(run.values()), state.context.n_frames)
        if done > before:
            self.on_frames(state.clip_id, done)

    def _add(self, state: ClipState, job: Job) -> None:
        if state.failure is not None:
            return  # the clip is dropped: do not spend the model on it
        try:
            loaded: Loaded = job.future.result()
        except InputError as e:
            state.failure = e
            return
        state.arrays.update(loaded.arrays)
        for key, tensor in loaded.batches.items():
            self._stream(key, tuple(tensor.shape[1:])).add(state, job.rows, tensor)
            state.pending_rows += len(job.rows)
        self._step(flush=False)

    def _consume(self) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, _Load):
                self._add(item.state, item.job)
            elif isinstance(item, _ClipEnd):
                item.state.ended = True
                self._finish(item.state)
            elif isinstance(item, _ClipFailed):
                item.state.failure = item.state.failure or item.error
            elif isinstance(item, _Flush):
                self._step(flush=True)
            elif isinstance(item, _ProducerFailed):
                raise item.error
            else:
                assert isinstance(item, _Done), f"unexpected message {item!r}"
                self._step(flush=True)
                return

    # -- run --

    def run(self) -> list[ClipOutcome]:
        producer = threading.Thread(target=self._produce, name="fer-producer", daemon=True)
        producer.start()
        self.writer.start()
        try:
            self._consume()
            self._put(self.writer.queue, self.writer.finish())
            self.writer.thread.join()
            if self.writer.error is not None:
                raise self.writer.error
        except BaseException:
            self.stop.set()
            raise
        finally:
            producer.join()
            self.writer.thread.join()
            self.loader.shutdown(wait=True, cancel_futures=True)
            with self.live_lock:
                held = list(self.live)
            for state in held:  # a failed run leaves no lock behind in a long-lived process
                self._release(state)
        return self.outcomes


def run_shard(task: ShardTask, on_outcome: Callable[[ClipOutcome], None] | None = None,
              on_frames: Callable[[str, int], None] | None = None) -> list[ClipOutcome]:
    """Extract one shard of clips (see the module docstring); returns every clip's outcome.

    ``on_outcome`` is called as each clip ends, ``on_frames(clip_id, frames)`` as its frames run
    (both only in-process: a callback cannot travel to workers).
    """
    return _ShardRunner(task, on_outcome, on_frames).run()
