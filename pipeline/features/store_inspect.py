"""What a feature store holds and whether it is intact: ``fer-pipeline store info`` and ``verify``.

:func:`summarize` reads metadata only (markers, shapes, recorded chunk sizes), so it is cheap on
any store; :func:`verify` is the full check, reading and re-hashing every byte (see
:mod:`pipeline.features.store_format` for what a reader checks on its own).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from pipeline.features.atomic import TMP_PREFIX
from pipeline.features.store_format import VALID, StoreError

if TYPE_CHECKING:
    from pipeline.features.store import FeatureStore


@dataclass(frozen=True)
class StoreProblem:
    """One incomplete or corrupt array (or clip) found by :meth:`FeatureStore.verify`."""

    clip_id: str
    array: str | None
    reason: str

    def __str__(self) -> str:
        where = self.clip_id if self.array is None else f"{self.clip_id}/{self.array}"
        return f"{where}: {self.reason}"


@dataclass
class ArraySummary:
    """One array name across the store's clips (see :meth:`FeatureStore.summary`)."""

    name: str
    complete: int = 0  # clips holding it with a completion marker
    incomplete: int = 0  # clips holding it without one (an interrupted write)
    row_shapes: set[tuple[int, ...]] = field(default_factory=set)  # shape of one row, e.g. (768,)
    dtypes: set[str] = field(default_factory=set)
    cache_keys: set[str] = field(default_factory=set)  # keys of the complete copies
    bytes: int = 0  # bytes of its chunk files (compressed, as stored)
    frames: int = 0  # video frames of the clips holding it
    without_dimension_names: int = 0  # copies written before arrays carried them (xarray fails)

    @property
    def bytes_per_frame(self) -> float:
        """Stored bytes per video frame (for audio-rate arrays too: what a clip's length costs)."""
        return self.bytes / self.frames if self.frames else 0.0


@dataclass
class StoreSummary:
    """What a store holds, read from metadata only (no chunk is decoded)."""

    path: str
    clips: int  # clip groups
    frames: int  # sum of the clips' n_frames
    clips_without_audio: int  # clips marked has_audio = false
    arrays: dict[str, ArraySummary]  # by array name
    extractors: dict[str, dict]  # the root attributes' record of each extractor
    size_bytes: int  # bytes of all files under the store
    damaged: list[str] = field(default_factory=list)  # unreadable zarr.json files, one line each

    def projected_bytes(self, frames: int) -> float:
        """The size the store would have at ``frames`` video frames, at its bytes per frame."""
        return self.size_bytes / self.frames * frames if self.frames else 0.0


def _disk_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def summarize(store: FeatureStore) -> StoreSummary:
    """Clips, arrays (shapes, dtypes, cache keys, completeness, bytes), extractors, size on disk."""
    arrays: dict[str, ArraySummary] = {}
    frames = without_audio = 0
    damaged: list[str] = []
    clip_ids = store.clip_ids()
    for clip_id in clip_ids:
        try:
            attrs = store.clip_attrs(clip_id)
            names = store.node_names(clip_id)
        except StoreError as e:  # a damaged clip group: `store verify` reports it too
            damaged.append(str(e))
            continue
        n_frames = int(attrs.get("n_frames", 0))
        frames += n_frames
        without_audio += attrs.get("has_audio") is False
        for name in names:
            try:
                array = store.array_node(clip_id, name)
            except StoreError as e:
                damaged.append(str(e))
                continue
            entry = arrays.setdefault(name, ArraySummary(name))
            marker = array.attrs.get("complete")
            entry.row_shapes.add(tuple(array.shape[1:]))
            entry.dtypes.add(str(array.dtype))
            entry.frames += n_frames
            entry.without_dimension_names += array.metadata.dimension_names is None
            if marker is None:
                entry.incomplete += 1
            else:
                entry.complete += 1
                entry.cache_keys.add(str(marker.get("cache_key")))
            chunks = (marker or {}).get("chunks")
            entry.bytes += (sum(chunks.values()) if isinstance(chunks, dict)
                            else _disk_bytes(store.path / "clips" / clip_id / name / "c"))
    return StoreSummary(str(store.path), len(clip_ids), frames, without_audio,
                        dict(sorted(arrays.items())), store.extractors(), _disk_bytes(store.path),
                        damaged)


def listed_clips(store: FeatureStore) -> list[str]:
    """Every clip the store knows of: the root's records (feature and manifest digests) and every
    folder under ``clips/``, with or without its group metadata, so that ``verify`` also sees a
    clip whose ``zarr.json`` or whole folder is gone (:meth:`FeatureStore.clip_ids` lists only
    readable groups)."""
    folders: set[str] = set()
    with contextlib.suppress(OSError):  # no clips/ folder: clip_ids() says so in one line
        folders = {e.name for e in os.scandir(store.path / "clips")
                   if e.is_dir() and not e.name.startswith(TMP_PREFIX)}
    recorded = set(store.feature_digests()) | set(store.manifest_digests())
    return sorted(set(store.clip_ids()) | recorded | folders)


def clip_group_problem(store: FeatureStore, clip_id: str) -> str | None:
    """Why the clip has no readable group: its folder or its ``zarr.json`` is gone (else None)."""
    folder = store.path / "clips" / clip_id
    if not folder.is_dir():
        return (f"{folder}: recorded in the store's root, but the folder is gone; rerun "
                "`fer-pipeline extract` to recompute the clip")
    if not (folder / "zarr.json").is_file():
        return (f"{folder / 'zarr.json'}: the clip's group metadata is missing; its arrays cannot be "
                "trusted: rerun `fer-pipeline extract` to recompute the clip")
    return None


def verify(store: FeatureStore, clip_ids: list[str] | None = None) -> Iterator[StoreProblem]:
    """Yield every incomplete or corrupt array (missing marker, missing or resized chunk, crc32c
    or sha256 mismatch, unreadable data, unreadable ``zarr.json``), coordinates included, every
    array the clip's record lists (:meth:`FeatureStore.record_arrays`) that is gone, and every
    clip of :func:`listed_clips` whose folder or group metadata is gone. A corrupt array is noted
    so that the next ``extract`` recomputes it (``time`` included)."""
    for clip_id in clip_ids if clip_ids is not None else listed_clips(store):
        gone = clip_group_problem(store, clip_id)
        if gone is not None:
            yield StoreProblem(clip_id, None, gone)
            continue
        try:
            names = store.node_names(clip_id)
        except StoreError as e:  # DamagedMetadata: the message names the file and what to run
            yield StoreProblem(clip_id, None, str(e))
            continue
        if VALID not in names:
            yield StoreProblem(clip_id, None, f"no '{VALID}' array (extraction never finished)")
        for name in sorted(set(store.recorded_arrays(clip_id)) - set(names) - {VALID}):
            yield StoreProblem(clip_id, name, "missing: recorded as written, its folder is gone; "
                               "rerun `fer-pipeline extract` with its extractor to recompute it")
        for name in names:
            try:
                marked = store.array_node(clip_id, name).attrs.get("complete") is not None
            except StoreError as e:  # DamagedMetadata: the message names the file
                yield StoreProblem(clip_id, name, str(e))
                continue
            if not marked:
                yield StoreProblem(clip_id, name, "no completion marker (interrupted write)")
                continue
            _, problem = store.inspect_array(clip_id, name, full=True)
            if problem is not None:
                yield StoreProblem(clip_id, name, f"corrupt: {problem}")
