"""The Zarr v3 feature store: :class:`FeatureStore`, a handle that opens, reads and writes one.

The format it reads and writes (the layout, names, cache keys, chunking and encoding, the errors,
the check of an array against its writer's record) is :mod:`pipeline.features.store_format`;
this module opens a store, locks and writes it safely, and reads and plans on the checks.

**Correct without locks** (:mod:`pipeline.features.atomic`). An array is built complete (data,
then marker: :mod:`pipeline.features.store_array`) in ``STORE.meta/tmp`` (same filesystem,
outside the hierarchy: no reader lists a half-made node) and renamed into its clip group; a clip
group is created the same way, with its attributes and ``time``; attributes are replaced in one
``os.replace``. A crash leaves a ``.tmp-*`` directory in ``tmp/`` (removed by a later writer),
never a half-written array. Renames are atomic on local disks, GPFS, NFSv4 (within one export)
and Lustre; object stores are not supported (no atomic rename). Locks (:mod:`pipeline.locks`,
which says where ``flock`` works and where lease files replace it) only keep two writers from
computing the same clip. Readers take no lock: a store with nothing to write is read as it is,
on a read-only mount too.

**Reading verifies what it reads** (:func:`~pipeline.features.store_format.check_data`): a
failure raises :class:`~pipeline.features.store_format.CorruptArray` and leaves a corrupt note.

**Planning costs per array, not per byte.** :meth:`FeatureStore.is_complete` trusts the marker
and its cache key, checks the recorded chunk sizes (a ``stat`` per chunk) and the corrupt notes;
``verify=True`` (and ``store verify``) re-reads and re-hashes everything.

Inspection (``verify``, summaries) stands on this module in
:mod:`pipeline.features.store_inspect`, which this module does not import; locks are in
:mod:`pipeline.locks`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

from pipeline import locks
from pipeline.data.clip_ids import name_problem
from pipeline.features.atomic import (TMP_PREFIX, aside_name, move_into_place, sweep,
                                      update_attributes)
from pipeline.features.store_array import write_array
from pipeline.features.store_format import (FORMAT_VERSION, TIME, TIME_KEY, CorruptArray,
                                            DamagedMetadata, StoreError, check_data, chunk_problem,
                                            corrupt_note, create_store, is_coordinate, meta_dir,
                                            move_legacy_folders, one_line, time_name)


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
                create_store(self.path)
            if not (self.path / "zarr.json").is_file():
                raise StoreError(f"{self.path}: not a feature store (no zarr.json)")
            version = self.root.attrs.get("fer_pipeline_store")
            if mode == "a":
                move_legacy_folders(self.path, self.meta)
        except (OSError, ValueError) as e:  # ValueError: a damaged zarr.json
            reason = getattr(e, "strerror", None) or one_line(e)
            what = "read" if mode == "r" else "create or open"
            if isinstance(e, ValueError):  # `extract` rebuilds the root where it can (store_root)
                raise StoreError(f"{self.path}: cannot {what} the store ({self.path / 'zarr.json'}: "
                                 f"{reason}); rerun `fer-pipeline extract` with the store's manifests "
                                 "to rebuild that file (it says what it cannot), or restore it from a copy"
                                 ) from None
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
            raise StoreError(f"{self.path}: cannot write {what} ({e.strerror or one_line(e)})") from None

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
        reason = getattr(error, "strerror", None) or one_line(error)
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
        if (problem := name_problem(clip_id)) is not None:  # a folder under clips/: one component
            raise StoreError(f"{self.path}: clip id {clip_id!r} {problem}")
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
                    write_array(self._clip_dir(clip_id), TIME, np.arange(n_frames) / fps,
                                TIME_KEY, fps, True, scratch=self._scratch())
                    corrupt_note(self.meta, clip_id, TIME).unlink(missing_ok=True)
                return
            built = aside_name(self._clip_dir(clip_id), self._scratch())
            try:
                zarr.open_group(str(built), mode="w", zarr_format=3,
                                attributes={"n_frames": int(n_frames), "fps": float(fps), **extra})
                write_array(built, TIME, np.arange(n_frames) / fps, TIME_KEY, fps, True,
                            scratch=self._scratch())
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

    def inspect_array(self, clip_id: str, name: str, full: bool) -> tuple[np.ndarray | None, str | None]:
        """Read a marked array and check it (:func:`~pipeline.features.store_format.check_data`):
        (data, None), or (None, what is wrong). A problem leaves a corrupt note (where the store is
        writable) so that the next ``extract`` recomputes the array."""
        marker = self.marker(clip_id, name) or {}
        data, problem = check_data(self._clip_dir(clip_id) / name, marker,
                                   lambda: self._clip(clip_id)[name][...], full)
        if problem is not None:
            note = corrupt_note(self.meta, clip_id, name)
            with contextlib.suppress(OSError):  # a read-only store: the message still says it
                note.parent.mkdir(parents=True, exist_ok=True)
                note.touch()
        return data, problem

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
        if corrupt_note(self.meta, clip_id, name).exists():
            return False
        folder = self._clip_dir(clip_id) / name
        if isinstance(marker.get("chunks"), dict) and chunk_problem(folder, marker):
            return False
        return not verify or self.inspect_array(clip_id, name, full=True)[1] is None

    # ---- arrays --------------------------------------------------------------------------------

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
                write_array(self._clip_dir(clip_id), time_name(name), times, f"{TIME_KEY}-{rate}",
                            rate, False, (f"{name}_frame",), self._scratch())
            write_array(self._clip_dir(clip_id), name, data, cache_key, rate, video_rate,
                        scratch=self._scratch())
            corrupt_note(self.meta, clip_id, name).unlink(missing_ok=True)

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
