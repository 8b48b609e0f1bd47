"""The Zarr v3 feature store: per-clip groups, float16 arrays, checksums and completion markers.

Layout (see DESIGN.md, "Stage 1")::

    STORE/                      root attrs: {"fer_pipeline_store": FORMAT_VERSION,
                                             "extractors": {name: Extractor.describe()},
                                             "manifest_digests": {clip_id: clip_digest}}
      clips/<clip_id>/          attrs: {"n_frames", "fps", "has_audio"}
        <array>                 e.g. swin [T, 768] float16, logmel [T_audio, n_mels], tdnn_w32 [T, 512]
                                attrs: {"complete": {"sha256", "cache_key", "rate"}}
        valid                   bool [T]: frame had a face image (stage one writes it last)
      .locks/                   one lock file per clip (and "root") for concurrent writers
      reports/                  one JSON report per extraction run (not part of the Zarr tree)

Rules that make extraction exact and resumable:

* **Writers own whole chunks.** Work is split by clip and every clip is its own group, so two workers
  never write the same chunk (two processes writing halves of one chunk lose data). Two *processes*
  that pick the same clip are kept apart by :meth:`FeatureStore.lock_clip` (``flock``, released by
  the kernel if the holder dies, so a SIGKILL leaves no stale lock).
* **Write, verify, then mark done.** An array's ``complete`` attribute (its sha256 and cache key) is
  written after its data. A crash leaves an array without the marker, or with a checksum that does
  not match, and :meth:`is_complete` says False, so the next run rewrites it. Existence never counts.
* **Chunks fit stage two's reads.** Stage two reads whole clips, so chunks span many frames (about
  4 MiB each) and a clip is a handful of files.

**Cache keys.** An array is reused only when its marker carries the key :func:`array_key` gives:
the extractor's cache key, plus ``-stride{k}`` for arrays computed at every k-th frame and
interpolated between (audio embeddings), plus ``-noaudio`` for the zeros stored for a clip
without audio (so that they are not taken for features if the clip gains an audio track).
``valid`` depends on nothing but the frame files: its key is :data:`VALID_KEY`.

Everything the store holds is float16 (features), float32 (log-mel stays float32 because dB values
need the range) or bool; the dtype is chosen by the extractor's :class:`ArraySpec`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from pipeline.errors import PipelineError

FORMAT_VERSION = 1
VALID = "valid"  # bool [T]: frame i had a face image on disk
VALID_KEY = "valid-1"  # its cache key: it depends on nothing but the frame files
_CHUNK_BYTES = 4 << 20
_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


class StoreError(PipelineError):
    """The store is missing, of another format, or lacks a requested array."""


@dataclass(frozen=True)
class StoreProblem:
    """One incomplete or corrupt array (or clip) found by :meth:`FeatureStore.verify`."""

    clip_id: str
    array: str | None
    reason: str

    def __str__(self) -> str:
        where = self.clip_id if self.array is None else f"{self.clip_id}/{self.array}"
        return f"{where}: {self.reason}"


def checksum(data: np.ndarray) -> str:
    """sha256 of an array's bytes (C order, its own dtype)."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def mask_name(name: str) -> str:
    """The bool [T] companion of an imported array: which of its rows the source file had.

    A head reading ``name`` treats frames outside the mask as frames without a face.
    """
    return f"{name}_valid"


def array_key(cache_key: str, audio_stride: int | None = None, no_audio: bool = False) -> str:
    """The key an array must carry to be reused (see the module docstring).

    ``audio_stride``: the array was computed at every k-th frame and interpolated (None: every
    frame); ``no_audio``: the array holds the zeros of a clip without audio.
    """
    key = cache_key if audio_stride is None else f"{cache_key}-stride{audio_stride}"
    return f"{key}-noaudio" if no_audio else key


def _chunk_rows(shape: tuple[int, ...], itemsize: int) -> int:
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    return int(max(1, min(shape[0], _CHUNK_BYTES // max(1, row_bytes))))


@dataclass
class ArraySummary:
    """One array name across the store's clips (see :meth:`FeatureStore.summary`)."""

    name: str
    complete: int = 0  # clips holding it with a completion marker
    incomplete: int = 0  # clips holding it without one (an interrupted write)
    row_shapes: set[tuple[int, ...]] = field(default_factory=set)  # shape of one row, e.g. (768,)
    dtypes: set[str] = field(default_factory=set)
    cache_keys: set[str] = field(default_factory=set)  # keys of the complete copies


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


def _disk_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.stat(os.path.join(folder, name)).st_size
    return total


class FeatureStore:
    """A handle on a store directory. Cheap to pickle (it holds only the path and mode)."""

    def __init__(self, path: str | Path, mode: str = "r") -> None:
        """``mode``: ``"r"`` to read an existing store, ``"a"`` to create it if needed and write."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self._root: zarr.Group | None = None
        if mode == "r" and not (self.path / "zarr.json").exists():
            raise StoreError(f"{self.path}: not a feature store (no zarr.json)")
        if mode == "a":
            # Writers open or create under the root lock: another process may be creating the
            # store right now, and its root zarr.json exists before its "clips" group does.
            with self._lock("root"):
                if not (self.path / "zarr.json").exists():
                    attributes = {"fer_pipeline_store": FORMAT_VERSION, "extractors": {}}
                    root = zarr.open_group(str(self.path), mode="a", zarr_format=3,
                                           attributes=attributes)
                    root.require_group("clips")
                version = self.root.attrs.get("fer_pipeline_store")
        else:
            version = self.root.attrs.get("fer_pipeline_store")
        if version != FORMAT_VERSION:
            raise StoreError(f"{self.path}: store format {version!r}, this version reads {FORMAT_VERSION}")

    def __getstate__(self) -> dict:
        return {"path": self.path, "mode": self.mode}

    def __setstate__(self, state: dict) -> None:
        self.path, self.mode, self._root = state["path"], state["mode"], None

    @property
    def root(self) -> zarr.Group:
        if self._root is None:
            self._root = zarr.open_group(str(self.path), mode="r" if self.mode == "r" else "a")
        return self._root

    # ---- locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str, blocking: bool = True) -> Iterator[bool]:
        locks = self.path / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the flock

    def lock_clip(self, clip_id: str, blocking: bool = False) -> contextlib.AbstractContextManager[bool]:
        """Exclusive right to write ``clip_id``; yields False if another process holds it."""
        return self._lock(f"clip-{clip_id}", blocking)

    # ---- root metadata -------------------------------------------------------------------------

    def extractors(self) -> dict[str, dict]:
        """What each extractor that wrote here was (its ``describe()``), by name."""
        return dict(self.root.attrs.get("extractors", {}))

    def record_extractors(self, descriptions: dict[str, dict]) -> None:
        """Merge extractor descriptions into the root attributes (under the root lock)."""
        with self._lock("root"):
            root = zarr.open_group(str(self.path), mode="a")  # re-read: another process may have written
            merged = dict(root.attrs.get("extractors", {}))
            merged.update(descriptions)
            root.attrs["extractors"] = merged
            self._root = None

    def manifest_digests(self) -> dict[str, str]:
        """clip id -> :func:`pipeline.data.manifest.clip_digest` of the manifest record each clip
        was last extracted with (empty for a store written before digests were recorded)."""
        return dict(self.root.attrs.get("manifest_digests", {}))

    def record_manifest(self, digests: dict[str, str]) -> None:
        """Merge clips' manifest digests into the root attributes (under the root lock; no lock
        and no write when they are recorded already)."""
        recorded = self.manifest_digests()
        if all(recorded.get(k) == v for k, v in digests.items()):
            return
        with self._lock("root"):
            root = zarr.open_group(str(self.path), mode="a")  # re-read: another process may have written
            merged = dict(root.attrs.get("manifest_digests", {}))
            merged.update(digests)
            root.attrs["manifest_digests"] = merged
            self._root = None

    # ---- clips ---------------------------------------------------------------------------------

    def clip_ids(self) -> list[str]:
        return sorted(self.root["clips"].group_keys())

    def _clip(self, clip_id: str) -> zarr.Group:
        try:
            return self.root[f"clips/{clip_id}"]
        except KeyError:
            raise StoreError(f"{self.path}: no clip {clip_id!r} in the store") from None

    def clip_attrs(self, clip_id: str) -> dict:
        return dict(self._clip(clip_id).attrs)

    def ensure_clip(self, clip_id: str, n_frames: int, fps: float, attrs: dict | None = None) -> None:
        """Create the clip's group, or check an existing one describes the same clip.

        ``attrs`` (e.g. ``{"has_audio": False}``) are set on the group; they describe the clip,
        not its arrays, so a change in them does not make the arrays stale. Call it holding the
        clip's lock: it may delete the clip's arrays.
        """
        clips = self.root["clips"]
        extra = dict(attrs or {})
        if clip_id in clips:
            group = clips[clip_id]
            current = dict(group.attrs)
            if current.get("n_frames") == n_frames and current.get("fps") == fps:
                if any(current.get(k) != v for k, v in extra.items()):
                    group.attrs.update(extra)
                return
            # The clip changed (e.g. the manifest was regenerated): its arrays are stale.
            del clips[clip_id]
        clips.create_group(clip_id, attributes={"n_frames": int(n_frames), "fps": float(fps), **extra})

    def array_names(self, clip_id: str) -> list[str]:
        return sorted(self._clip(clip_id).array_keys())

    def has_array(self, clip_id: str, name: str) -> bool:
        """True when the clip holds an array ``name`` (complete or not)."""
        try:
            return name in self._clip(clip_id)
        except StoreError:
            return False

    def shape(self, clip_id: str, name: str) -> tuple[int, ...]:
        """An array's shape, read from metadata (no chunk is decoded)."""
        group = self._clip(clip_id)
        if name not in group:
            raise StoreError(f"{self.path}: clip {clip_id!r} has no array {name!r}")
        return tuple(group[name].shape)

    def marker(self, clip_id: str, name: str) -> dict | None:
        """The completion marker of an array, or None if absent (or the array is unreadable)."""
        try:
            return self._clip(clip_id)[name].attrs.get("complete")
        except (KeyError, StoreError, ValueError, OSError):
            return None

    def is_complete(self, clip_id: str, name: str, cache_key: str, verify: bool = True) -> bool:
        """True when the array exists, is marked complete with ``cache_key``, and (if ``verify``)
        its data still hashes to the recorded checksum."""
        marker = self.marker(clip_id, name)
        if marker is None or marker.get("cache_key") != cache_key:
            return False
        if not verify:
            return True
        try:
            return checksum(self._clip(clip_id)[name][...]) == marker.get("sha256")
        except Exception:  # noqa: BLE001  (a truncated or missing chunk means "not complete")
            return False

    def write(self, clip_id: str, name: str, data: np.ndarray, cache_key: str, rate: float) -> None:
        """Write one array of a clip, then its completion marker (last)."""
        data = np.ascontiguousarray(data)
        group = self._clip(clip_id)
        array = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(_chunk_rows(data.shape, data.dtype.itemsize), *data.shape[1:]),
            compressors=_COMPRESSOR,
            overwrite=True,
        )
        array[...] = data
        array.attrs["complete"] = {"sha256": checksum(data), "cache_key": cache_key, "rate": float(rate)}

    def read(self, clip_id: str, name: str) -> np.ndarray:
        """A complete array's data (raises StoreError if it is absent or was never completed)."""
        group = self._clip(clip_id)
        if name not in group or "complete" not in group[name].attrs:
            raise StoreError(f"{self.path}: clip {clip_id!r} has no complete array {name!r}")
        return group[name][...]

    def rate(self, clip_id: str, name: str) -> float:
        """Rows per second of an array (the video fps for per-frame arrays)."""
        marker = self.marker(clip_id, name)
        if marker is None:
            raise StoreError(f"{self.path}: clip {clip_id!r} has no complete array {name!r}")
        return float(marker["rate"])

    def summary(self) -> StoreSummary:
        """Clips, arrays (shapes, dtypes, cache keys, completeness), extractors and size on disk."""
        arrays: dict[str, ArraySummary] = {}
        frames = without_audio = 0
        clip_ids = self.clip_ids()
        for clip_id in clip_ids:
            group = self._clip(clip_id)
            attrs = dict(group.attrs)
            frames += int(attrs.get("n_frames", 0))
            without_audio += attrs.get("has_audio") is False
            for name, array in group.arrays():
                entry = arrays.setdefault(name, ArraySummary(name))
                marker = array.attrs.get("complete")
                entry.row_shapes.add(tuple(array.shape[1:]))
                entry.dtypes.add(str(array.dtype))
                if marker is None:
                    entry.incomplete += 1
                else:
                    entry.complete += 1
                    entry.cache_keys.add(str(marker.get("cache_key")))
        return StoreSummary(str(self.path), len(clip_ids), frames, without_audio,
                            dict(sorted(arrays.items())), self.extractors(), _disk_bytes(self.path))

    # ---- integrity -----------------------------------------------------------------------------

    def verify(self, clip_ids: list[str] | None = None) -> Iterator[StoreProblem]:
        """Yield every incomplete or corrupt array (missing marker, bad checksum, unreadable data)."""
        for clip_id in clip_ids if clip_ids is not None else self.clip_ids():
            try:
                names = self.array_names(clip_id)
            except Exception as e:  # noqa: BLE001
                yield StoreProblem(clip_id, None, f"unreadable clip group ({e})")
                continue
            if VALID not in names:
                yield StoreProblem(clip_id, None, f"no '{VALID}' array (extraction never finished)")
            for name in names:
                marker = self.marker(clip_id, name)
                if marker is None:
                    yield StoreProblem(clip_id, name, "no completion marker (interrupted write)")
                    continue
                try:
                    actual = checksum(self._clip(clip_id)[name][...])
                except Exception as e:  # noqa: BLE001
                    yield StoreProblem(clip_id, name, f"unreadable data ({' '.join(str(e).split())})")
                    continue
                if actual != marker.get("sha256"):
                    yield StoreProblem(clip_id, name, "checksum mismatch (corrupt data)")
