"""The clip stream of stage two: the tables of a list of clips, group by group, the next group
loaded in a background thread while the caller trains on the current one (the reasons, the
groups' byte bound and the cache: :mod:`pipeline.fusion.data`, whose :class:`~pipeline.fusion.
data.Table` it yields)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.data import ClipArrays, FeatureRequest, Table, concat, read_clip


class ClipStream:
    """Tables of consecutive groups of clips (up to ``buffer_mb / 3`` MiB each), the next loaded
    while one is used.

    Clips read from the store are kept in memory across epochs while their total stays within
    ``cache_mb`` MiB (the first that fit stay; nothing is evicted), so a small dataset (the demo,
    a validation split) is read once per run, and a large one costs at most that much memory.
    ``wait_seconds`` accumulates the time the consumer spent waiting for data (loading that did
    not overlap compute): the figure the benchmark reports as data loading.
    """

    def __init__(self, store: FeatureStore, request: FeatureRequest,
                 dims: dict[str, tuple[int, ...]], buffer_mb: float, cache_mb: float = 0) -> None:
        if not buffer_mb > 0:
            raise PipelineError(f"train.buffer_mb {buffer_mb}: need a positive size")
        self.store, self.request, self.dims = store, request, dims
        self._group_bytes = buffer_mb * (1 << 20) / 3  # three groups alive at most
        self.wait_seconds = 0.0
        self._budget = int(cache_mb * (1 << 20))
        self._cache: dict[tuple[str, bool], ClipArrays] = {}
        self._cached_bytes = 0

    def _clip(self, clip: Clip, train: bool) -> ClipArrays:
        """A clip's arrays, from the cache or the store (runs in the loader thread only)."""
        key = (clip.clip_id, train)
        if key in self._cache:
            return self._cache[key]
        part = read_clip(self.store, clip, self.request, self.dims, train)
        if self._cached_bytes + part.nbytes <= self._budget:
            self._cache[key] = part
            self._cached_bytes += part.nbytes
        return part

    def _load(self, clips: Sequence[Clip], start: int, carry: ClipArrays | None,
              train: bool) -> tuple[Table, int, ClipArrays | None]:
        """The group from ``carry`` (a clip read by the previous call) and ``clips[start:]`` up
        to the byte budget: (its table, the next clip's index, the clip read but left over)."""
        parts = [] if carry is None else [carry]
        total = sum(p.nbytes for p in parts)
        while start < len(clips):
            part = self._clip(clips[start], train)
            start += 1
            if parts and total + part.nbytes > self._group_bytes:
                return concat(parts), start, part
            parts.append(part)
            total += part.nbytes
        return concat(parts), start, None

    def tables(self, clips: Sequence[Clip], train: bool = False) -> Iterator[Table]:
        if not clips:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-stream") as pool:
            pending = pool.submit(self._load, clips, 0, None, train)
            while pending is not None:
                began = time.perf_counter()
                table, start, carry = pending.result()
                self.wait_seconds += time.perf_counter() - began
                more = start < len(clips) or carry is not None
                pending = pool.submit(self._load, clips, start, carry, train) if more else None
                del carry
                yield table
                del table  # let the group go before the one after next is loaded
