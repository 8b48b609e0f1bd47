"""HDF5 in and out of the feature store: import per-clip arrays users already have, export arrays.

**Import** (:func:`import_hdf5`) reads one array per clip of the manifests from an HDF5 file and
writes it into the store as array ``NAME``. Layouts, chosen by :class:`ImportOptions`:

* ``path`` alone (default ``"{clip}"``; placeholders ``{clip}``, ``{video}``, ``{split}``, e.g.
  ``"features/{clip}"``): a ``[T, D]`` dataset, one row per video frame of the clip.
* ``path`` + ``frames_path``: ``[N, D]`` rows and an ``[N]`` dataset of their 1-based frame
  numbers (frames with no face absent). Row ``k`` lands on frame ``frames[k] - 1``.
* ``hop`` (seconds): rows at that step (audio features, like ``logmel``), not tied to frames; the
  rows must span the clip's duration within ``tolerance`` seconds.

**Which rows are real.** Every video-rate import also writes ``NAME_valid`` (bool ``[T]``, see
:func:`mask_name`): True where the file had a row. Missing rows of ``NAME`` are zeros. Stage two
treats a frame whose image array is not valid as a frame without a face
(``pipeline.fusion.data.read_clip``). A clip that has no ``valid`` array yet (a store made by
import alone) gets an all-True one under the key :data:`IMPORT_VALID_KEY`: the import knows
nothing about face crops, the masks say which rows are missing, and ``extract`` replaces it with
the real face flags whenever it runs on the same store.

**Cache keys.** An imported array's key hashes the sha256 of its source dataset's data (and of its
frame numbers), the dataset paths and the options that shape the stored array. So the key changes
exactly when what would be stored changes: a re-import of an unchanged file writes nothing, and a
file with one changed dataset rewrites that clip only. (A key over the whole file's sha256 would
rewrite every clip whenever any dataset changed; the whole file's sha256 is recorded instead in the
import's description in the store's root attributes, which ``store info`` lists.)

**Bad input.** A clip the file lacks is listed (an error with ``strict``, raised before anything
is written). A dataset of the wrong length, rank or dtype, with NaN/inf, or unreadable is one
:class:`BadDataset` (file, dataset, reason); its clip is left as it was and the others go on. Each
clip's data is read and checked in full before any of it is written, under the clip's lock, each
array with the store's completion marker, so the store keeps verifying.

Accepted dtypes are floating point: float16 and float32 are stored as they are (so an export
imports back bit for bit), float64 as float32 (the store holds nothing wider); ``dtype`` casts
to float16 or float32 instead.

**Export** (:func:`export_hdf5`) writes ``/<clip_id>/<array>`` datasets, compressed (gzip with
shuffle, or lzf), with the clip's ``n_frames``, ``fps``, ``has_audio`` (and ``split``) as group
attributes and each array's ``rate``, ``cache_key``, ``sha256`` and its extractor's description
(JSON) as dataset attributes. The clip's face mask is the ``valid`` dataset, always exported (a
mask of up to millions of frames is too large for an HDF5 attribute). One clip is in memory at a
time; the file is written aside and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore, StoreError, checksum
from pipeline.progress import ProgressEvent, ProgressFn, silent

FORMAT_VERSION = 1  # of the import's cache keys and of the exported file's layout
VALID = "valid"  # the store's per-frame face flag
IMPORT_VALID_KEY = "import-all-true-1"  # cache key of the all-True valid an import writes
IMPORT_KIND = "hdf5 import"  # the "kind" of an import's record in the store's root attributes
COMPRESSIONS = ("gzip", "lzf", "none")
_EXPORT_CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB: whole-clip reads, quick to decompress


def mask_name(name: str) -> str:
    """The store array that says which rows of imported array ``name`` the source file had."""
    return f"{name}_valid"


@dataclass(frozen=True)
class ImportOptions:
    """How to read one array per clip from an HDF5 file."""

    name: str  # the store array to write
    path: str = "{clip}"  # dataset of a clip's rows; placeholders {clip}, {video}, {split}
    frames_path: str | None = None  # dataset of the rows' 1-based frame numbers ([N, D] layout)
    hop: float | None = None  # seconds between rows (audio); None: one row per video frame
    dtype: str | None = None  # "float16"/"float32" to cast; None: keep float16/32, float64 -> 32
    tolerance: float = 0.5  # hop layout: seconds the rows' span may differ from the clip's length


@dataclass(frozen=True)
class BadDataset:
    """One dataset that cannot be imported, and why."""

    file: str
    dataset: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: dataset /{self.dataset.lstrip('/')}: {self.reason}"


@dataclass
class ImportResult:
    file: str
    name: str
    clips: int  # clips of the manifests
    written: list[str] = field(default_factory=list)  # clips whose arrays were (re)written
    unchanged: list[str] = field(default_factory=list)  # complete with the same key: untouched
    missing: list[str] = field(default_factory=list)  # clips the file has no dataset for
    failed: list[BadDataset] = field(default_factory=list)  # clips left as they were
    bytes_read: int = 0  # bytes of the datasets read
    frames: int = 0  # video frames of the clips imported or found unchanged
    seconds: float = 0.0


@dataclass
class ExportResult:
    path: str
    clips: int
    arrays: list[str]  # names exported (over all clips)
    bytes: int  # bytes of the arrays' data (uncompressed)
    frames: int  # video frames of the exported clips
    file_bytes: int  # size of the written file
    seconds: float


class _Bad(Exception):
    """A dataset failed a check (becomes a :class:`BadDataset`)."""

    def __init__(self, dataset: str, reason: str) -> None:
        super().__init__(reason)
        self.dataset, self.reason = dataset, reason


def _resolve(pattern: str, clip: Clip) -> str:
    return pattern.format(clip=clip.clip_id, video=clip.video_id, split=clip.split).strip("/")


def _check_options(options: ImportOptions) -> None:
    name = options.name
    if not name or "/" in name or name == VALID:
        raise PipelineError(f"--name {name!r}: need a store array name other than {VALID!r}, without '/'")
    example = Clip("c", "train", "v", 1, 1.0, None, None, None, None)
    for flag, pattern in (("--path", options.path), ("--frames-path", options.frames_path)):
        if pattern is None:
            continue
        try:
            _resolve(pattern, example)
        except (KeyError, IndexError, ValueError) as e:
            raise PipelineError(f"{flag} {pattern!r}: bad pattern ({e}); placeholders are "
                                "{clip}, {video}, {split}") from None
    if options.hop is not None and not options.hop > 0:
        raise PipelineError(f"--rate hop={options.hop}: the hop must be positive seconds")
    if options.hop is not None and options.frames_path is not None:
        raise PipelineError("--frames-path numbers video frames: it needs --rate video")
    if options.dtype not in (None, "float16", "float32"):
        raise PipelineError(f"dtype {options.dtype!r}: choose float16 or float32")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(h5: Any, dataset: str) -> np.ndarray:
    import h5py

    node = h5.get(dataset)
    if not isinstance(node, h5py.Dataset):
        raise _Bad(dataset, "not a dataset (a group)" if node is not None else "no such dataset")
    try:
        return np.asarray(node[()])
    except Exception as e:  # noqa: BLE001  (h5py raises OSError, TypeError, ... for bad data)
        raise _Bad(dataset, f"unreadable ({' '.join(str(e).split())})") from None


def _frame_numbers(h5: Any, dataset: str, rows: int, n_frames: int) -> np.ndarray:
    """0-based frame indices of the rows, checked (integers in 1..n_frames, each once)."""
    numbers = _read(h5, dataset)
    if numbers.ndim == 2 and numbers.shape[1] == 1:
        numbers = numbers[:, 0]
    if numbers.ndim != 1 or numbers.size != rows:
        raise _Bad(dataset, f"shape {numbers.shape}: need one frame number per row ({rows})")
    if numbers.dtype.kind == "f" and np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)):
        numbers = numbers.astype(np.int64)
    if numbers.dtype.kind not in "iu":
        raise _Bad(dataset, f"dtype {numbers.dtype}: frame numbers must be integers")
    numbers = numbers.astype(np.int64)
    outside = (numbers < 1) | (numbers > n_frames)
    if outside.any():
        raise _Bad(dataset, f"frame number {numbers[outside][0]} outside 1..{n_frames} (1-based)")
    if np.unique(numbers).size != numbers.size:
        values, counts = np.unique(numbers, return_counts=True)
        raise _Bad(dataset, f"frame number {values[counts > 1][0]} appears more than once")
    return numbers - 1


def _clip_rows(h5: Any, clip: Clip, options: ImportOptions
               ) -> tuple[np.ndarray, np.ndarray | None, str, int]:
    """A clip's array as it will be stored, its row mask (None for hop rows), cache key, bytes read.

    Raises :class:`_Bad` on any problem; nothing is written before this returns.
    """
    dataset = _resolve(options.path, clip)
    raw = _read(h5, dataset)
    if raw.dtype.kind != "f":
        raise _Bad(dataset, f"dtype {raw.dtype}: need floating point features")
    if raw.ndim < 2:
        raise _Bad(dataset, f"rank {raw.ndim} (shape {raw.shape}): need [rows, features]")
    digest = hashlib.sha256(f"{raw.dtype.str}{raw.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(raw)).cast("B"))
    bytes_read = raw.nbytes
    frames = frames_dataset = None
    if options.frames_path is not None:
        frames_dataset = _resolve(options.frames_path, clip)
        frames = _frame_numbers(h5, frames_dataset, raw.shape[0], clip.n_frames)
        digest.update(frames.tobytes())
        bytes_read += frames.nbytes

    target = np.dtype(options.dtype) if options.dtype else (
        raw.dtype if raw.dtype in (np.float16, np.float32) else np.dtype(np.float32))
    with np.errstate(over="ignore"):
        data = raw.astype(target, copy=False)
    finite = np.isfinite(data).reshape(data.shape[0], -1).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        what = "NaN or inf" if not np.isfinite(raw[row]).all() else f"values beyond the {target} range"
        raise _Bad(dataset, f"{what} in row {row}")

    if options.hop is not None:
        span, duration = data.shape[0] * options.hop, clip.n_frames / clip.fps
        if abs(span - duration) > options.tolerance:
            raise _Bad(dataset, f"{data.shape[0]} rows of {options.hop} s span {span:.2f} s; the clip "
                                f"lasts {duration:.2f} s (tolerance {options.tolerance} s)")
        mask = None
    elif frames is None:
        if data.shape[0] != clip.n_frames:
            raise _Bad(dataset, f"{data.shape[0]} rows for the clip's {clip.n_frames} frames")
        mask = np.ones(clip.n_frames, dtype=bool)
    else:
        aligned = np.zeros((clip.n_frames, *data.shape[1:]), dtype=data.dtype)
        aligned[frames] = data
        data = aligned
        mask = np.zeros(clip.n_frames, dtype=bool)
        mask[frames] = True

    spec = {"format": FORMAT_VERSION, "data_sha256": digest.hexdigest(), "dataset": dataset,
            "frames": frames_dataset, "hop": options.hop, "dtype": str(data.dtype),
            "n_frames": clip.n_frames, "fps": clip.fps}
    key = "hdf5-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    return data, mask, key, bytes_read


def _description(file: Path, options: ImportOptions, file_sha256: str) -> dict:
    outputs = {options.name: {"rate": "video" if options.hop is None else f"hop {options.hop} s"}}
    if options.hop is None:
        outputs[mask_name(options.name)] = {"rate": "video", "dtype": "bool"}
    return {
        "name": options.name,
        "kind": IMPORT_KIND,
        "source": str(file),
        "source_sha256": file_sha256,
        "source_bytes": file.stat().st_size,
        "path": options.path,
        "frames_path": options.frames_path,
        "hop": options.hop,
        "dtype": options.dtype,
        # What `store info` shows in its weights column: where the features came from.
        "weights": str(file),
        "random_weights": False,
        "precision": "-",
        "cache_key": "per clip: hdf5-<sha256 of the clip's dataset, paths and options>",
        "outputs": outputs,
    }


def _check_no_clash(store: FeatureStore, options: ImportOptions) -> None:
    """Refuse to overwrite an array that an extractor writes (extract would overwrite it back)."""
    ours = {options.name, mask_name(options.name)}
    for owner, described in store.extractors().items():
        if described.get("kind") == IMPORT_KIND and owner == options.name:
            continue
        theirs = set(described.get("outputs", {})) | {owner}
        if ours & theirs:
            raise PipelineError(f"{store.path}: array {sorted(ours & theirs)[0]!r} belongs to "
                                f"{described.get('kind', 'extractor')} {owner!r}; choose another --name")


def _up_to_date(store: FeatureStore, clip_id: str, options: ImportOptions, key: str,
                with_mask: bool, verify: bool) -> bool:
    return (store.is_complete(clip_id, options.name, key, verify)
            and (not with_mask or store.is_complete(clip_id, mask_name(options.name), key, verify))
            and store.marker(clip_id, VALID) is not None)


def _write_clip(store: FeatureStore, clip: Clip, options: ImportOptions, data: np.ndarray,
                mask: np.ndarray | None, key: str) -> None:
    """Write one checked clip (its lock held): mask, array, and an all-True valid if it has none."""
    store.ensure_clip(clip.clip_id, clip.n_frames, clip.fps, {"has_audio": clip.audio_path is not None})
    rate = clip.fps if options.hop is None else 1.0 / options.hop
    if mask is not None:
        store.write(clip.clip_id, mask_name(options.name), mask, key, clip.fps)
    elif mask_name(options.name) in store.array_names(clip.clip_id):
        del store.root[f"clips/{clip.clip_id}"][mask_name(options.name)]  # stale: hop rows have none
    store.write(clip.clip_id, options.name, data, key, rate)
    if store.marker(clip.clip_id, VALID) is None:
        store.write(clip.clip_id, VALID, np.ones(clip.n_frames, dtype=bool), IMPORT_VALID_KEY, clip.fps)


def import_hdf5(file: str | Path, store_path: str | Path, clips: Sequence[Clip],
                options: ImportOptions, strict: bool = False, verify_existing: bool = True,
                progress: ProgressFn = silent) -> ImportResult:
    """Import ``options.name`` for every clip of ``clips`` that ``file`` has (see the module doc).

    ``verify_existing`` re-hashes a stored array before calling it unchanged. Raises
    :class:`PipelineError` for an unreadable file, bad options, or (``strict``) missing clips.
    """
    import h5py

    started = time.perf_counter()
    _check_options(options)
    file = Path(file).resolve()
    try:
        h5 = h5py.File(file, "r")
    except Exception as e:  # noqa: BLE001  (OSError, or a ValueError for some corrupt files)
        raise PipelineError(f"{file}: not a readable HDF5 file ({' '.join(str(e).split())})") from None
    result = ImportResult(str(file), options.name, len(clips))
    with h5:
        result.missing = [c.clip_id for c in clips if _resolve(options.path, c) not in h5]
        if strict and result.missing:
            raise PipelineError(f"{file}: no dataset {options.path!r} for {len(result.missing)} clip(s) "
                                f"of the manifests, e.g. {', '.join(result.missing[:5])}")
        store = FeatureStore(store_path, "a")
        _check_no_clash(store, options)
        missing = set(result.missing)
        present = [c for c in clips if c.clip_id not in missing]
        row_shape: tuple[int, ...] | None = None
        progress(ProgressEvent("importing clips", total=len(present)))
        for clip in present:
            try:
                data, mask, key, nbytes = _clip_rows(h5, clip, options)
                if row_shape is not None and data.shape[1:] != row_shape:
                    raise _Bad(_resolve(options.path, clip), f"rows of shape {data.shape[1:]}, "
                                                             f"other clips' are {row_shape}")
            except _Bad as bad:
                result.failed.append(BadDataset(str(file), bad.dataset, bad.reason))
                progress(ProgressEvent("importing clips", advance=1))
                continue
            row_shape = data.shape[1:]
            result.bytes_read += nbytes
            result.frames += clip.n_frames
            with store.lock_clip(clip.clip_id, blocking=True):
                if _clip_matches(store, clip) and _up_to_date(store, clip.clip_id, options, key,
                                                             mask is not None, verify_existing):
                    result.unchanged.append(clip.clip_id)
                else:
                    _write_clip(store, clip, options, data, mask, key)
                    result.written.append(clip.clip_id)
            progress(ProgressEvent("importing clips", advance=1,
                                   info={"MB/s": result.bytes_read / 1e6 / (time.perf_counter() - started)}))
    if result.written or result.unchanged:
        description = _description(file, options, _file_sha256(file))
        if store.extractors().get(options.name) != description:
            store.record_extractors({options.name: description})
    result.seconds = time.perf_counter() - started
    return result


def _clip_matches(store: FeatureStore, clip: Clip) -> bool:
    """The store's group describes this clip (else ensure_clip replaces it: nothing is unchanged)."""
    try:
        attrs = store.clip_attrs(clip.clip_id)
    except StoreError:
        return False
    return attrs.get("n_frames") == clip.n_frames and attrs.get("fps") == clip.fps


def _owner_descriptions(store: FeatureStore) -> dict[str, str]:
    """Array name -> JSON description of the extractor (or import) that wrote it."""
    owners: dict[str, str] = {VALID: json.dumps({"name": VALID, "kind": "per-frame face flag"})}
    for owner, described in store.extractors().items():
        text = json.dumps(described, sort_keys=True, default=str)
        for name in {owner, *described.get("outputs", {}), *described.get("array_keys", {})}:
            owners[name] = text
    return owners


def export_hdf5(store_path: str | Path, out: str | Path, clips: Sequence[Clip] | None = None,
                arrays: Sequence[str] | None = None, compression: str = "gzip",
                progress: ProgressFn = silent) -> ExportResult:
    """Write the chosen arrays (default: every complete one) of ``clips`` (default: the store's)
    to ``out`` (see the module doc). Every array is checked against its checksum on the way."""
    import h5py

    started = time.perf_counter()
    if compression not in COMPRESSIONS:
        raise PipelineError(f"compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    store = FeatureStore(store_path)
    out = Path(out)
    wanted = list(dict.fromkeys([*(arrays or []), VALID])) if arrays else None
    if clips is None:
        items: list[tuple[str, str | None]] = [(c, None) for c in store.clip_ids()]
    else:
        items = [(c.clip_id, c.split) for c in clips]
    owners = _owner_descriptions(store)
    filters: dict[str, Any] = {} if compression == "none" else {"compression": compression, "shuffle": True}
    if compression == "gzip":
        filters["compression_opts"] = 1  # level 1: most of gzip's ratio on features, far faster
    exported: dict[str, None] = {}
    total = frames = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    progress(ProgressEvent("exporting clips", total=len(items)))
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["fer_pipeline_export"] = FORMAT_VERSION
            h5.attrs["store"] = str(store.path.resolve())
            for clip_id, split in items:
                attrs = store.clip_attrs(clip_id)  # raises StoreError naming a clip not in the store
                group = h5.create_group(clip_id)
                group.attrs.update({k: v for k, v in attrs.items() if isinstance(v, (int, float, str, bool))})
                if split is not None:
                    group.attrs["split"] = split
                present = store.array_names(clip_id)
                for name in wanted if wanted is not None else present:
                    if name not in present:
                        raise PipelineError(f"{store.path}: clip {clip_id!r} has no array {name!r}")
                    data = store.read(clip_id, name)
                    marker = store.marker(clip_id, name) or {}
                    if checksum(data) != marker.get("sha256"):
                        raise PipelineError(f"{store.path}: clip {clip_id!r} array {name!r} does not "
                                            "match its checksum (run `fer-pipeline store verify`)")
                    row_bytes = max(1, data[:1].nbytes)
                    chunks = (max(1, min(len(data), _EXPORT_CHUNK_BYTES // row_bytes)), *data.shape[1:])
                    dataset = group.create_dataset(name, data=data, chunks=chunks if data.size else None,
                                                   **(filters if data.size else {}))
                    dataset.attrs.update({"rate": float(marker["rate"]), "cache_key": str(marker["cache_key"]),
                                          "sha256": marker["sha256"], "description": owners.get(name, "")})
                    exported[name] = None
                    total += data.nbytes
                frames += int(attrs.get("n_frames", 0))
                progress(ProgressEvent("exporting clips", advance=1,
                                       info={"MB/s": total / 1e6 / (time.perf_counter() - started)}))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(str(out), len(items), list(exported), total, frames, out.stat().st_size,
                        time.perf_counter() - started)
