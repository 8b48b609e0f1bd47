"""Stage one's writer thread: a finished clip's arrays into the store, ``valid`` last, then its lock.

The model thread hands over a :class:`ClipState` once every row of the clip has run. The writer
asks each extractor to :meth:`~pipeline.features.extractors.base.Extractor.assemble` its arrays
from the clip's buffers, writes them (each followed by its completion marker: the store's rule),
``valid`` last, releases the clip's lock and reports the clip done.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.features.extractors.base import Extractor
from pipeline.features.feeding import ClipContext, InputError
from pipeline.features.plan import array_keys
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import AUDIO_VALID, AUDIO_VALID_KEY, VALID, VALID_KEY


@dataclass(eq=False)
class ClipState:
    """One clip in flight (owned by the model thread once the producer has queued it)."""

    context: ClipContext
    lock: contextlib.ExitStack  # the clip's lock: released by the writer (or on failure)
    needed: list[Extractor]  # extractors to compute, in run order
    write_valid: bool  # valid is missing or stale
    reused: int  # arrays found complete once the clip was locked
    buffers: dict[str, np.ndarray] = field(default_factory=dict)  # filled by batches, by array name
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # finished by loader jobs
    pending_rows: int = 0  # rows queued in a batch stream, not yet run
    ended: bool = False  # the producer queued everything of this clip
    finished: bool = False  # handed to the writer, or dropped
    failure: InputError | None = None

    @property
    def clip_id(self) -> str:
        return self.context.clip.clip_id

    def put(self, ext: Extractor, rows: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """Store a batch's outputs for ``rows`` (buffers are allocated on first use)."""
        for name, values in outputs.items():
            if name not in self.buffers:
                length, dtype = ext.buffer(name, self.context)
                self.buffers[name] = np.zeros((length, *values.shape[1:]), dtype=dtype)
            self.buffers[name][rows] = values


def assemble(state: ClipState) -> dict[str, tuple[np.ndarray, float]]:
    """The clip's arrays in write order (features first, ``valid`` last), with their rates."""
    fps = state.context.clip.fps
    out: dict[str, tuple[np.ndarray, float]] = {}
    for ext in state.needed:
        rate = ext.array_rate(fps)
        for name, data in ext.assemble(state.context, state.buffers, state.arrays).items():
            out[name] = (data, rate)
    short = state.context.audio_short
    if short is not None:  # the audio starts after or ends before the video: the frames it covers
        frames = np.arange(state.context.n_frames)
        out[AUDIO_VALID] = ((frames >= short.first) & (frames < short.covered), fps)
    if state.write_valid:
        out[VALID] = (state.context.valid, fps)
    return out


_DONE = object()  # no more clips


class ClipWriter:
    """The writer thread. ``on_written(state, names)`` runs after the lock is released."""

    def __init__(self, store: FeatureStore, audio_stride: int, stop: threading.Event,
                 release: Callable[[ClipState], None],
                 on_written: Callable[[ClipState, list[str]], None]) -> None:
        self.store = store
        self.audio_stride = audio_stride
        self.stop = stop  # set when the run is failing: the writer gives up
        self.release = release
        self.on_written = on_written
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None  # re-raised in the model thread
        self.thread = threading.Thread(target=self._run, name="fer-writer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> Any:
        """The item that tells the writer there is nothing more."""
        return _DONE

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                state = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if state is _DONE:
                return
            try:
                clip = state.context.clip
                keys = {VALID: VALID_KEY, AUDIO_VALID: AUDIO_VALID_KEY}
                for ext in state.needed:
                    keys.update(array_keys(ext, self.audio_stride, clip.audio_path is not None))
                written = []
                for name, (data, rate) in assemble(state).items():
                    self.store.write(clip.clip_id, name, data, keys[name], rate)
                    written.append(name)
                self.store.record_arrays(clip.clip_id, written)  # what `store verify` expects
            except BaseException as e:  # noqa: BLE001  (re-raised in the model thread)
                self.error = e
                return
            finally:
                self.release(state)
            self.on_written(state, written)
