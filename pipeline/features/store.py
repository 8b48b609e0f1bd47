"""The Zarr v3 feature store: per-clip groups, float16 arrays, checksums and completion markers.

Layout (stage one's output; the stages around it: README.md, "Layout")::

    STORE/                      root attrs: {"fer_pipeline_store": FORMAT_VERSION,
                                             "extractors": {name: Extractor.describe()},
                                             "feature_digests": {clip_id: feature_digest}}
                                (stores written before: "manifest_digests", with labels)
      clips/<clip_id>/          attrs: {"n_frames", "fps", "has_audio"}
        <array>                 e.g. swin [T, 768] float16, logmel [T_audio, n_mels], tdnn_w32 [T, 512]
                                attrs: {"complete": {"sha256", "cache_key", "rate", "chunks"}}
        valid                   bool [T]: frame had a face image (stage one writes it last)
        time                    float64 [T]: seconds of each video frame (a coordinate)
        <array>_time            float64 [T_audio]: seconds of each row of an audio-rate array
    STORE.meta/                 beside the store, outside the Zarr hierarchy (plain zarr and xarray
      locks/                    would warn about or trip on folders inside it): writers' locks,
      reports/                  one JSON report per extraction run,
      corrupt/<clip>/<array>    arrays a reader found corrupt: the next `extract` recomputes them,
      tmp/                      arrays and clip groups being built (see "Correct without locks")

**Other tools read it.** Every array carries ``dimension_names``: ``frame`` for rows at the video
rate, ``<array>_frame`` for other rates (log-mel's audio frames), then ``<array>_feature`` (or
``<array>_height, _width, _channel`` for maps, ``<array>_token, _feature`` for token rows: each
array's own names, because xarray needs one size per dimension name in a group). Time
coordinates in seconds are attached through the CF ``coordinates`` attribute, so
``xarray.open_zarr(STORE, group="clips/<id>")`` and ``xarray.open_datatree(STORE, engine="zarr")``
open a store as it is; a finished ``extract`` or ``store import`` leaves consolidated metadata
for them, which this class never reads (:mod:`pipeline.features.store_meta`). ``time`` and names
ending in ``_time`` are reserved for coordinates.

**Reading verifies what it reads.** Arrays carry a ``crc32c`` codec after compression, checked by
zarr on every chunk it decodes, and their marker records each chunk file's size, checked before a
read (a deleted chunk would otherwise read as zeros). Arrays written before (no ``chunks`` in the
marker, no crc32c) are checked against their sha256 on every full read instead. A failure raises
:class:`CorruptArray` (one line: store, clip, array, rerun ``extract``) and leaves a note in
``STORE.meta/corrupt`` that makes the next ``extract`` recompute the array. Old stores stay
readable and writable with the same ``FORMAT_VERSION``: new writes use the new array format,
``xarray`` needs dimension names (``store info`` says when an array lacks them: re-extract it).

**Correct without locks** (:mod:`pipeline.features.atomic`). An array is built complete (data,
then marker) in ``STORE.meta/tmp`` (same filesystem, outside the hierarchy: no reader lists a
half-made node) and renamed into its clip group; a clip group is created the same way, with its
attributes and ``time``; attributes are replaced in one ``os.replace``. A crash leaves a
``.tmp-*`` directory in ``tmp/`` (removed by a later writer), never a half-written array.
Locks (:mod:`pipeline.locks`: ``flock``, or lease files where the filesystem refuses
it) only keep two writers from computing the same clip.
What filesystems give: local disks and GPFS: atomic renames and working ``flock``. NFSv4:
atomic renames within one export; ``flock`` works unless mounted ``local_lock=flock`` (then it is
node-local: duplicate work across nodes, still correct). Lustre: atomic renames; ``flock`` only
with ``-o flock`` (``-o localflock``: node-local; neither: refused, so lease files are used).
Object stores are not supported (no atomic rename). Readers take no lock: a store with nothing to
write is read as it is, on a read-only mount too.

**Planning costs per array, not per byte.** :meth:`FeatureStore.is_complete` trusts the marker
and its cache key, checks the recorded chunk sizes (a ``stat`` per chunk) and the corrupt notes;
``verify=True`` (and ``store verify``) re-reads and re-hashes everything.

**Chunks fit stage two's reads.** Stage two reads whole clips, so chunks span many frames (about
4 MiB each) and a clip is a handful of files; every chunk is written, even an all-zero one, so
that a missing file always means damage.

**Cache keys.** An array is reused only when its marker carries the key :func:`array_key` gives:
the extractor's cache key, plus ``-stride{k}`` for arrays computed at every k-th frame and
interpolated between (audio embeddings), plus ``-noaudio`` for the zeros stored for a clip
without audio (so that they are not taken for features if the clip gains an audio track).
``valid`` depends on nothing but the frame files: its key is :data:`VALID_KEY`.

Everything the store holds is float16 (features), float32 (log-mel stays float32 because dB values
need the range) or bool; the dtype is chosen by the extractor's :class:`ArraySpec`.

This module is the store's whole contract (layout, keys, markers, verified reads, atomic writes),
hence its length: the docstring above is a fifth of it. Inspection (``verify``, summaries) stands
on it in :mod:`pipeline.features.store_inspect`, which this module does not import; locks are in
:mod:`pipeline.locks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline.errors import PipelineError
from pipeline import locks
from pipeline.features.atomic import (TMP_PREFIX, aside_name, chunk_sizes, move_into_place,
                                      sweep, update_attributes)

FORMAT_VERSION = 1
VALID = "valid"  # bool [T]: frame i had a face image on disk
VALID_KEY = "valid-1"  # its cache key: it depends on nothing but the frame files
TIME = "time"  # float64 [T]: seconds of each video frame (the coordinate of "frame")
TIME_KEY = "time-1"
_CHUNK_BYTES = 4 << 20
# crc32c after compression: zarr checks every chunk it decodes against it.
_CODECS = (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec())


class StoreError(PipelineError):
    """The store is missing, of another format, or lacks a requested array."""


class CorruptArray(StoreError):
    """An array's data does not match what its writer recorded (see the module docstring)."""


class DamagedMetadata(StoreError):
    """A clip group's or an array's ``zarr.json`` cannot be read: the message names the file and
    says what to run (``extract`` replaces the node; ``store verify`` lists every such file)."""


def checksum(data: np.ndarray) -> str:
    """sha256 of an array's bytes (C order, its own dtype)."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def mask_name(name: str) -> str:
    """The bool [T] companion of an imported array: which of its rows the source file had.

    A head reading ``name`` treats frames outside the mask as frames without a face.
    """
    return f"{name}_valid"


def time_name(name: str) -> str:
    """The seconds coordinate of an array whose rows are not video frames."""
    return f"{name}_time"


def is_coordinate(name: str) -> bool:
    return name == TIME or name.endswith("_time")


def meta_dir(path: str | Path) -> Path:
    """The folder beside a store for its locks, run reports and corrupt notes."""
    path = Path(path)
    return path.with_name(path.name + ".meta")


def array_key(cache_key: str, audio_stride: int | None = None, no_audio: bool = False) -> str:
    """The key an array must carry to be reused (see the module docstring).

    ``audio_stride``: the array was computed at every k-th frame and interpolated (None: every
    frame); ``no_audio``: the array holds the zeros of a clip without audio.
    """
    key = cache_key if audio_stride is None else f"{cache_key}-stride{audio_stride}"
    return f"{key}-noaudio" if no_audio else key


def dimension_names(name: str, ndim: int, video_rate: bool) -> tuple[str, ...]:
    """The ``dimension_names`` of array ``name`` (see the module docstring)."""
    rows = "frame" if video_rate else f"{name}_frame"
    rest = {1: (), 2: ("feature",), 3: ("token", "feature"), 4: ("height", "width", "channel")}
    suffixes = rest.get(ndim, tuple(f"axis{k}" for k in range(1, ndim)))
    return (rows, *(f"{name}_{s}" for s in suffixes))


def _chunk_rows(shape: tuple[int, ...], itemsize: int) -> int:
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    return int(max(1, min(shape[0], _CHUNK_BYTES // max(1, row_bytes))))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _create_store(path: Path) -> None:
    """Create an empty store in one rename (two processes may race: the loser keeps the winner's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    built = aside_name(path)
    try:
        root = zarr.open_group(str(built), mode="w", zarr_format=3,
                               attributes={"fer_pipeline_store": FORMAT_VERSION, "extractors": {}})
        root.create_group("clips")
        try:
            os.rename(built, path)  # onto nothing, or onto an empty folder the user made
        except OSError:
            if not (path / "zarr.json").is_file():
                raise
    finally:
        shutil.rmtree(built, ignore_errors=True)


class FeatureStore:
    """A handle on a store directory. Cheap to pickle (it holds only the path and mode)."""

    def __init__(self, path: str | Path, mode: str = "r") -> None:
        """``mode``: ``"r"`` to read an existing store, ``"a"`` to create it if needed and write."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.meta = meta_dir(self.path)
        self._root: zarr.Group | None = None
        self._scratch_dir: Path | bool | None = None  # see _scratch
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: is a file, not a feature store (a store is a folder)")
        try:
            if mode == "a" and not (self.path / "zarr.json").exists():
                _create_store(self.path)
            if not (self.path / "zarr.json").is_file():
                raise StoreError(f"{self.path}: not a feature store (no zarr.json)")
            version = self.root.attrs.get("fer_pipeline_store")
            if mode == "a":
                self._move_legacy_folders()
        except (OSError, ValueError) as e:  # ValueError: a damaged zarr.json
            reason = getattr(e, "strerror", None) or _one_line(e)
            what = "read" if mode == "r" else "create or open"
            if isinstance(e, ValueError):  # the root's records are gone: nothing here rebuilds them
                raise StoreError(f"{self.path}: cannot {what} the store ({self.path / 'zarr.json'}: "
                                 f"{reason}); restore that file from a copy, or rerun "
                                 "`fer-pipeline extract` into a new --store") from None
            raise StoreError(f"{self.path}: cannot {what} the store ({reason})") from None
        if version != FORMAT_VERSION:
            raise StoreError(f"{self.path}: store format {version!r}, this version reads {FORMAT_VERSION}")

    def __getstate__(self) -> dict:
        return {"path": self.path, "mode": self.mode}

    def __setstate__(self, state: dict) -> None:
        self.path, self.mode, self._root = state["path"], state["mode"], None
        self.meta, self._scratch_dir = meta_dir(self.path), None

    @property
    def root(self) -> zarr.Group:
        if self._root is None:
            # Never the consolidated metadata: it may be older than the folders (store_meta).
            self._root = zarr.open_group(str(self.path), mode="r" if self.mode == "r" else "a",
                                         use_consolidated=False)
        return self._root

    def _move_legacy_folders(self) -> None:
        """Stores written before STORE.meta held ``.locks`` and ``reports`` inside: move them out."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.path / ".locks")  # empty lock files; holders use STORE.meta now
        old_reports = self.path / "reports"
        if old_reports.is_dir():
            (self.meta / "reports").mkdir(parents=True, exist_ok=True)
            for report in old_reports.iterdir():
                with contextlib.suppress(OSError):
                    os.replace(report, self.meta / "reports" / report.name)
            with contextlib.suppress(OSError):
                old_reports.rmdir()

    # ---- locks ---------------------------------------------------------------------------------

    def _lock(self, name: str, blocking: bool = True) -> contextlib.AbstractContextManager[bool]:
        return locks.hold(self.meta / "locks", name, blocking)

    def lock_clip(self, clip_id: str, blocking: bool = False) -> contextlib.AbstractContextManager[bool]:
        """Exclusive right to write ``clip_id``; yields False if another process holds it.

        Only saves duplicate work: the store is correct without it (see the module docstring).
        """
        return self._lock(f"clip-{clip_id}", blocking)

    def _scratch(self) -> Path | None:
        """Where arrays and clip groups are built before their rename (see atomic): STORE.meta/tmp,
        or beside their final place where STORE.meta is on another filesystem (a rename cannot
        cross filesystems). Made, and swept of what killed writers left, once per handle."""
        if self._scratch_dir is None:
            scratch = self.meta / "tmp"
            scratch.mkdir(parents=True, exist_ok=True)
            sweep(scratch)
            same = os.stat(scratch).st_dev == os.stat(self.path / "clips").st_dev
            self._scratch_dir = scratch if same else False
        return self._scratch_dir or None

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn a filesystem error while writing into one line naming the store."""
        try:
            yield
        except OSError as e:
            raise StoreError(f"{self.path}: cannot write {what} ({e.strerror or _one_line(e)})") from None

    # ---- root metadata -------------------------------------------------------------------------

    def extractors(self) -> dict[str, dict]:
        """What each extractor that wrote here was (its ``describe()``), by name."""
        return dict(self.root.attrs.get("extractors", {}))

    def record_extractors(self, descriptions: dict[str, dict]) -> None:
        """Merge extractor descriptions into the root attributes (under the root lock)."""
        with self._writing("the root attributes"), self._lock("root"):
            self._root = None  # re-read: another process may have written
            merged = self.extractors()
            merged.update(descriptions)
            update_attributes(self.path, {"extractors": merged})
            self._root = None

    def feature_digests(self) -> dict[str, str]:
        """clip id -> :func:`pipeline.data.manifest.feature_digest` of the manifest record each
        clip was last extracted with (frame count, fps, media; no labels)."""
        return dict(self.root.attrs.get("feature_digests", {}))

    def manifest_digests(self) -> dict[str, str]:
        """clip id -> :func:`pipeline.data.manifest.clip_digest` (labels included) of the record
        each clip was extracted with, as stores written before feature digests recorded it
        (read only: ``extract`` now records :meth:`feature_digests`)."""
        return dict(self.root.attrs.get("manifest_digests", {}))

    def record_manifest(self, digests: dict[str, str]) -> None:
        """Merge clips' feature digests into the root attributes (under the root lock; no lock
        and no write when they are recorded already)."""
        recorded = self.feature_digests()
        if all(recorded.get(k) == v for k, v in digests.items()):
            return
        with self._lock("root"):
            root = zarr.open_group(str(self.path), mode="a",  # re-read: another process may have written
                                   use_consolidated=False)
            merged = dict(root.attrs.get("feature_digests", {}))
            merged.update(digests)
            root.attrs["feature_digests"] = merged
            self._root = None

    # ---- clips ---------------------------------------------------------------------------------

    def _damaged(self, node: Path, error: BaseException, what: str) -> DamagedMetadata:
        reason = getattr(error, "strerror", None) or _one_line(error)
        return DamagedMetadata(f"{node / 'zarr.json'}: unreadable {what} metadata ({reason}); rerun "
                               f"`fer-pipeline extract` to recompute the {what}")

    @staticmethod
    def _nodes(folder: Path) -> list[str]:
        """The nodes (sub-folders with a ``zarr.json``) of a folder, listed without parsing their
        metadata: one damaged node must not hide the others."""
        return sorted(e.name for e in os.scandir(folder)
                      if e.is_dir() and not e.name.startswith(TMP_PREFIX)
                      and os.path.isfile(os.path.join(e.path, "zarr.json")))

    def clip_ids(self) -> list[str]:
        try:
            return self._nodes(self.path / "clips")
        except OSError as e:
            raise StoreError(f"{self.path / 'clips'}: cannot list the clips "
                             f"({e.strerror or e})") from None

    def _clip(self, clip_id: str) -> zarr.Group:
        try:
            return self.root[f"clips/{clip_id}"]
        except Exception as e:  # noqa: BLE001  (zarr raises many types for a damaged zarr.json)
            if isinstance(e, KeyError) and not (self._clip_dir(clip_id) / "zarr.json").exists():
                raise StoreError(f"{self.path}: no clip {clip_id!r} in the store") from None
            raise self._damaged(self._clip_dir(clip_id), e, "clip group") from None

    def array_node(self, clip_id: str, name: str) -> zarr.Array:
        """A clip's array node; StoreError when absent, DamagedMetadata naming its zarr.json."""
        group = self._clip(clip_id)
        folder = self._clip_dir(clip_id) / name
        try:
            return group[name]
        except Exception as e:  # noqa: BLE001
            if isinstance(e, KeyError) and not (folder / "zarr.json").exists():
                raise StoreError(f"{self.path}: clip {clip_id!r} has no array {name!r}") from None
            raise self._damaged(folder, e, "array") from None

    def _clip_dir(self, clip_id: str) -> Path:
        return self.path / "clips" / clip_id

    def clip_attrs(self, clip_id: str) -> dict:
        return dict(self._clip(clip_id).attrs)

    def ensure_clip(self, clip_id: str, n_frames: int, fps: float, attrs: dict | None = None) -> None:
        """Create the clip's group (with its ``time``), or check an existing one describes the same clip.

        ``attrs`` (e.g. ``{"has_audio": False}``) are set on the group; they describe the clip,
        not its arrays, so a change in them does not make the arrays stale. A clip whose length
        or fps changed is replaced by an empty group (its arrays are stale). Call it holding the
        clip's lock to save duplicate work; it is correct without.
        """
        extra = dict(attrs or {})
        with self._writing(f"clip {clip_id!r}"):
            try:
                exists = (self._clip_dir(clip_id) / "zarr.json").is_file()
                current = self.clip_attrs(clip_id) if exists else {}
            except DamagedMetadata:
                current = {}  # its arrays cannot be trusted to be this clip's: a new group
            if current.get("n_frames") == n_frames and current.get("fps") == fps:
                if any(current.get(k) != v for k, v in extra.items()):
                    update_attributes(self._clip_dir(clip_id), extra)
                # Written before coordinates, or found damaged (by a reader or `store verify`).
                if not self.is_complete(clip_id, TIME, TIME_KEY):
                    self._write_array(self._clip_dir(clip_id), TIME, np.arange(n_frames) / fps,
                                      TIME_KEY, fps, True)
                    self._note(clip_id, TIME).unlink(missing_ok=True)
                return
            built = aside_name(self._clip_dir(clip_id), self._scratch())
            try:
                zarr.open_group(str(built), mode="w", zarr_format=3,
                                attributes={"n_frames": int(n_frames), "fps": float(fps), **extra})
                self._write_array(built, TIME, np.arange(n_frames) / fps, TIME_KEY, fps, True)
                move_into_place(built, self._clip_dir(clip_id))
            finally:
                shutil.rmtree(built, ignore_errors=True)

    def node_names(self, clip_id: str) -> list[str]:
        """Every array of the clip, coordinates included (hidden directories being written not);
        listed without parsing the arrays' metadata (see :meth:`_nodes`)."""
        self._clip(clip_id)  # the group's own metadata is readable
        try:
            return self._nodes(self._clip_dir(clip_id))
        except OSError as e:
            raise StoreError(f"{self._clip_dir(clip_id)}: cannot list the arrays "
                             f"({e.strerror or e})") from None

    def recorded_arrays(self, clip_id: str) -> list[str]:
        """The arrays the clip's writers recorded having written (``store verify`` expects each)."""
        return list(self.clip_attrs(clip_id).get("arrays", []))

    def record_arrays(self, clip_id: str, names: list[str], removed: tuple[str, ...] = ()) -> None:
        """Add ``names`` (and the time coordinates written with them) to the clip's record of its
        arrays, and drop ``removed`` (deleted on purpose). Called by a writer holding the clip's
        lock, after the arrays are in place."""
        fps = float(self.clip_attrs(clip_id)["fps"])
        coordinates = [time_name(n) for n in names
                       if (m := self.marker(clip_id, n)) and m["rate"] != fps]
        recorded = self.recorded_arrays(clip_id)
        merged = sorted({*recorded, TIME, *names, *coordinates} - set(removed))
        if merged != recorded:
            with self._writing(f"clip {clip_id!r} attributes"):
                update_attributes(self._clip_dir(clip_id), {"arrays": merged})

    def array_names(self, clip_id: str) -> list[str]:
        """The clip's data arrays (coordinates such as ``time`` left out)."""
        return [k for k in self.node_names(clip_id) if not is_coordinate(k)]

    def has_array(self, clip_id: str, name: str) -> bool:
        """True when the clip holds an array ``name`` (complete or not)."""
        try:
            self._clip(clip_id)
        except StoreError:
            return False
        return (self._clip_dir(clip_id) / name / "zarr.json").is_file()

    def shape(self, clip_id: str, name: str) -> tuple[int, ...]:
        """An array's shape, read from metadata (no chunk is decoded)."""
        return tuple(self.array_node(clip_id, name).shape)

    def marker(self, clip_id: str, name: str) -> dict | None:
        """The completion marker of an array, or None if absent (or the array is unreadable)."""
        try:
            return self.array_node(clip_id, name).attrs.get("complete")
        except StoreError:
            return None

    # ---- integrity -----------------------------------------------------------------------------

    def _note(self, clip_id: str, name: str) -> Path:
        return self.meta / "corrupt" / clip_id / name

    def _chunk_problem(self, clip_id: str, name: str, marker: dict) -> str | None:
        """What is wrong with the chunk files the marker recorded (None: all present, same sizes)."""
        folder = self._clip_dir(clip_id) / name
        for key, size in marker["chunks"].items():
            try:
                actual = os.stat(folder / key).st_size
            except FileNotFoundError:
                return f"chunk {key} is missing"
            if actual != size:
                return f"chunk {key} has {actual} bytes, {size} were written"
        return None

    def inspect_array(self, clip_id: str, name: str, full: bool) -> tuple[np.ndarray | None, str | None]:
        """Read a marked array and check it: (data, None), or (None, what is wrong).

        Arrays with recorded chunks: their sizes, and crc32c per chunk as zarr decodes them;
        ``full`` adds the sha256. Older arrays: always the sha256. A problem leaves a corrupt note
        (where the store is writable) so that the next ``extract`` recomputes the array.
        """
        marker = self.marker(clip_id, name) or {}
        chunked = isinstance(marker.get("chunks"), dict)
        problem = self._chunk_problem(clip_id, name, marker) if chunked else None
        data = None
        if problem is None:
            try:
                data = self._clip(clip_id)[name][...]
            except Exception as e:  # noqa: BLE001  (crc32c mismatch, undecodable or unreadable chunk)
                problem = f"unreadable data ({_one_line(e)})"
        if problem is None and (full or not chunked) and checksum(data) != marker.get("sha256"):
            problem = "its data does not match its sha256"
        if problem is None:
            return data, None
        with contextlib.suppress(OSError):  # a read-only store: the message still says it
            self._note(clip_id, name).parent.mkdir(parents=True, exist_ok=True)
            self._note(clip_id, name).touch()
        return None, problem

    def _checked(self, clip_id: str, name: str, full: bool) -> np.ndarray:
        """A marked array's data, checked (:meth:`inspect_array`); raises CorruptArray or StoreError
        (DamagedMetadata, naming the file, for an unreadable ``zarr.json``)."""
        if self.array_node(clip_id, name).attrs.get("complete") is None:
            raise StoreError(f"{self.path}: clip {clip_id!r} has no complete array {name!r}")
        data, problem = self.inspect_array(clip_id, name, full)
        if problem is not None:
            raise CorruptArray(f"{self.path}: clip {clip_id!r} array {name!r} is corrupt ({problem}); "
                               "rerun `fer-pipeline extract` to recompute it")
        return data

    def is_complete(self, clip_id: str, name: str, cache_key: str, verify: bool = False) -> bool:
        """True when the array exists, is marked complete with ``cache_key``, no reader found it
        corrupt, and its recorded chunk files are all there with their sizes (a few ``stat`` calls:
        the cost is per array, not per byte). ``verify`` also re-reads and re-hashes its data."""
        marker = self.marker(clip_id, name)
        if marker is None or marker.get("cache_key") != cache_key:
            return False
        if self._note(clip_id, name).exists():
            return False
        if isinstance(marker.get("chunks"), dict) and self._chunk_problem(clip_id, name, marker):
            return False
        return not verify or self.inspect_array(clip_id, name, full=True)[1] is None

    # ---- arrays --------------------------------------------------------------------------------

    def _write_array(self, group_dir: Path, name: str, data: np.ndarray, cache_key: str,
                     rate: float, video_rate: bool, dims: tuple[str, ...] | None = None) -> None:
        """Build the array aside, complete with its marker, then rename it into ``group_dir``."""
        data = np.ascontiguousarray(data)
        dims = dims or dimension_names(name, data.ndim, video_rate)
        final = group_dir / name
        built = aside_name(final, self._scratch())
        coordinate = TIME if video_rate else time_name(name)
        try:
            array = zarr.create_array(
                str(built), shape=data.shape, dtype=data.dtype,
                chunks=(_chunk_rows(data.shape, data.dtype.itemsize), *data.shape[1:]),
                compressors=_CODECS, fill_value=0, zarr_format=3,
                dimension_names=dims,
                config={"write_empty_chunks": True},  # every chunk on disk: a missing one is damage
                attributes={} if is_coordinate(name) else {"coordinates": coordinate})
            if data.size:
                array[...] = data
            update_attributes(built, {"complete": {"sha256": checksum(data), "cache_key": cache_key,
                                                   "rate": float(rate), "chunks": chunk_sizes(built)}})
            move_into_place(built, final)
        finally:
            shutil.rmtree(built, ignore_errors=True)

    def write(self, clip_id: str, name: str, data: np.ndarray, cache_key: str, rate: float,
              video_rate: bool | None = None) -> None:
        """Write one array of a clip, complete with its marker, in one rename (module docstring).

        ``video_rate``: whether its rows are the clip's video frames (dimension ``frame``, the
        clip's ``time``); None: when ``rate`` is the clip's fps. An array at its own clock whose
        rate happens to equal the fps (a hop of 1/fps) passes False: its row count may differ.
        """
        fps = float(self.clip_attrs(clip_id)["fps"])
        video_rate = float(rate) == fps if video_rate is None else video_rate
        with self._writing(f"clip {clip_id!r} array {name!r}"):
            if not video_rate and not is_coordinate(name):
                times = np.arange(len(data)) / float(rate)
                self._write_array(self._clip_dir(clip_id), time_name(name), times,
                                  f"{TIME_KEY}-{rate}", rate, False, (f"{name}_frame",))
            self._write_array(self._clip_dir(clip_id), name, data, cache_key, rate, video_rate)
            self._note(clip_id, name).unlink(missing_ok=True)

    def read(self, clip_id: str, name: str) -> np.ndarray:
        """A complete array's data, checked as it is read (module docstring); raises
        :class:`CorruptArray` naming the clip and array when it fails, StoreError when absent."""
        return self._checked(clip_id, name, full=False)

    def rate(self, clip_id: str, name: str) -> float:
        """Rows per second of an array (the video fps for per-frame arrays)."""
        marker = self.marker(clip_id, name)
        if marker is None:
            raise StoreError(f"{self.path}: clip {clip_id!r} has no complete array {name!r}")
        return float(marker["rate"])
