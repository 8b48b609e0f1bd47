"""HDF5 into the feature store: import per-clip arrays users already have (export: hdf5_export).

**Import** (:func:`import_hdf5`) writes one dataset per clip of the manifests as store array
``NAME``. Layouts (:class:`ImportOptions`): ``path`` (default ``"{clip}"``; placeholders
``{clip}``, ``{video}``, ``{split}``; a file that ``store export`` wrote is recognised, see
:func:`export_layout`) names a ``[T, D]`` dataset, a row per video frame; with
``frames_path``, ``[N, D]`` rows and their ``[N]`` 1-based frame numbers (frames with no face
absent); with ``hop`` (seconds), rows at that step (audio), which must span the clip's duration
within ``tolerance`` seconds; they are stored at their own clock (dimension ``NAME_frame``,
coordinate ``NAME_time``), as log-mel is, and heads that want one row per video frame read them
interpolated to the frames' times (``pipeline.fusion.data``). Rows may have more axes
(``[T, K, D]`` token maps).

*Which rows are real.* A video-rate import also writes ``NAME_valid`` (bool ``[T]``,
:func:`mask_name`): True where the file had a row; the missing rows of ``NAME`` are zeros. Stage
two counts a frame whose image array is not valid as a frame without a face
(``pipeline.fusion.data.read_clip``). A clip with no ``valid`` array yet (a store made by import
alone) gets an all-True one (key :data:`IMPORT_VALID_KEY`): the import knows nothing of face
crops, and ``extract`` replaces it with the real flags whenever it runs on the store.

*Cache keys* hash the sha256 of the clip's source data (and frame numbers), the dataset paths and
the options that shape the stored array. A re-import of an unchanged file writes nothing; a file
with one changed dataset rewrites that clip only (a key over the whole file would rewrite every
clip). The whole file's sha256 goes into the import's record in the store's root attributes.

*Bad input.* A clip the file lacks is listed (with ``strict``: an error before anything is
written). A dataset of the wrong length, rank or dtype, with NaN/inf, or unreadable gives one
:class:`BadDataset` line (file, dataset, reason); its clip stays as it was and the others go on.
A clip's data is read and checked in full before it is written, under the clip's lock, each
array with the store's completion marker. float16/float32 data is stored as it is (an export
imports back bit for bit), float64 as float32; ``dtype`` casts to either instead.

Export is :mod:`pipeline.features.hdf5_export`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.data.clip_ids import name_problem
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import VALID, StoreError, is_coordinate, mask_name
from pipeline.features.store_meta import clip_attributes, consolidate, unconsolidate
from pipeline.progress import ProgressEvent, ProgressFn, silent

FORMAT_VERSION = 1  # of the import's cache keys (and of hdf5_export's file layout)
IMPORT_VALID_KEY = "import-all-true-1"  # cache key of the all-True valid an import writes
IMPORT_KIND = "hdf5 import"  # the "kind" of an import's record in the store's root attributes


@dataclass(frozen=True)
class ImportOptions:
    """How to read one array per clip from an HDF5 file."""

    name: str  # the store array to write
    # dataset of a clip's rows; placeholders {clip}, {video}, {split}. None: "{clip}", or for a
    # file that `store export` wrote, "{clip}/<its array>" (see export_layout)
    path: str | None = None
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
    path: str = ""  # the dataset pattern read (--path, or the one export_layout chose)


class _Bad(Exception):
    """A dataset failed a check (becomes a :class:`BadDataset`)."""

    def __init__(self, dataset: str, reason: str) -> None:
        super().__init__(reason)
        self.dataset, self.reason = dataset, reason


def _resolve(pattern: str, clip: Clip) -> str:
    return pattern.format(clip=clip.clip_id, video=clip.video_id, split=clip.split).strip("/")


def _exported_arrays(h5: Any) -> tuple[list[str], dict[str, float], float | None]:
    """The arrays of the first clip group of a ``store export`` file, their rates, its fps."""
    import h5py

    for group in h5.values():
        if not isinstance(group, h5py.Group):
            continue
        arrays = [name for name, node in group.items() if isinstance(node, h5py.Dataset)
                  and name != VALID and not is_coordinate(name) and not name.endswith("_valid")]
        rates = {name: float(group[name].attrs.get("rate", 0.0)) for name in arrays}
        fps = group.attrs.get("fps")
        return sorted(arrays), rates, None if fps is None else float(fps)
    return [], {}, None


def export_layout(h5: Any, file: Path, options: ImportOptions) -> ImportOptions:
    """``options`` with ``path`` (and ``hop``) filled in when ``path`` is None.

    A file that ``store export`` wrote (root attribute ``fer_pipeline_export``) holds
    ``/<clip>/<array>`` datasets with their ``rate``: the array imported is the one named like
    ``options.name``, else the file's only array (several: an error listing them); rows at a rate
    other than the clip's fps become a ``hop`` import unless a hop was given. Any other file:
    ``path="{clip}"``.
    """
    if options.path is not None:
        return options
    if "fer_pipeline_export" not in h5.attrs:
        return dataclasses.replace(options, path="{clip}")
    arrays, rates, fps = _exported_arrays(h5)
    if options.name in arrays:
        array = options.name
    elif len(arrays) == 1:
        array = arrays[0]
    else:
        raise PipelineError(f"{file}: a `store export` file with arrays {', '.join(arrays) or 'none'}:"
                            " choose one with --path '{clip}/ARRAY' (or --name ARRAY)")
    hop = options.hop
    if hop is None and options.frames_path is None and fps and rates[array] and rates[array] != fps:
        hop = 1.0 / rates[array]
    return dataclasses.replace(options, path=f"{{clip}}/{array}", hop=hop)


def _check_options(options: ImportOptions) -> None:
    name = options.name
    problem = name_problem(name)
    if problem is not None or name == VALID:
        raise PipelineError(f"--name {name!r}: "
                            + (problem if problem else f"need a store array name other than {VALID!r}"))
    example = Clip("c", "train", "v", 1, 1.0, None, None, None, None)
    for flag, pattern in (("--path", options.path), ("--frames-path", options.frames_path)):  # None: not yet
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
    values, counts = np.unique(numbers, return_counts=True)
    if (counts > 1).any():
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
    if options.hop is not None:  # hop rows have their own dimension and time (earlier: not always)
        spec["own_clock"] = True
    key = "hdf5-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    return data, mask, key, bytes_read


def _description(file: Path, options: ImportOptions, file_sha256: str) -> dict:
    outputs = {options.name: {"rate": "video" if options.hop is None else f"hop {options.hop} s"}}
    if options.hop is None:
        outputs[mask_name(options.name)] = {"rate": "video", "dtype": "bool"}
    return {
        "name": options.name, "kind": IMPORT_KIND, "outputs": outputs,
        "source": str(file), "source_sha256": file_sha256, "source_bytes": file.stat().st_size,
        "path": options.path, "frames_path": options.frames_path, "hop": options.hop,
        "dtype": options.dtype, "precision": "-", "random_weights": False,
        "weights": str(file),  # what `store info` shows in its weights column: the source
        "cache_key": "per clip: hdf5-<sha256 of the clip's dataset, paths and options>",
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


def _up_to_date(store: FeatureStore, clip: Clip, options: ImportOptions, key: str,
                with_mask: bool, verify: bool) -> bool:
    """The clip's group is this clip's (else ensure_clip replaces it) and holds the arrays."""
    try:
        attrs = store.clip_attrs(clip.clip_id)
    except StoreError:
        return False
    return (attrs.get("n_frames") == clip.n_frames and attrs.get("fps") == clip.fps
            and store.is_complete(clip.clip_id, options.name, key, verify)
            and (not with_mask or store.is_complete(clip.clip_id, mask_name(options.name), key, verify))
            and store.marker(clip.clip_id, VALID) is not None)


def _write_clip(store: FeatureStore, clip: Clip, options: ImportOptions, data: np.ndarray,
                mask: np.ndarray | None, key: str) -> None:
    """Write one checked clip (its lock held): mask, array, and an all-True valid if it has none."""
    store.ensure_clip(clip.clip_id, clip.n_frames, clip.fps, clip_attributes(clip))
    rate = clip.fps if options.hop is None else 1.0 / options.hop
    written, removed = [options.name], ()
    if mask is not None:
        store.write(clip.clip_id, mask_name(options.name), mask, key, clip.fps)
        written.append(mask_name(options.name))
    elif mask_name(options.name) in store.array_names(clip.clip_id):
        del store.root[f"clips/{clip.clip_id}"][mask_name(options.name)]  # stale: hop rows have none
        removed = (mask_name(options.name),)
    store.write(clip.clip_id, options.name, data, key, rate, video_rate=options.hop is None)
    if store.marker(clip.clip_id, VALID) is None:
        store.write(clip.clip_id, VALID, np.ones(clip.n_frames, dtype=bool), IMPORT_VALID_KEY, clip.fps)
        written.append(VALID)
    store.record_arrays(clip.clip_id, written, removed)  # what `store verify` expects


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
        options = export_layout(h5, file, options)
        _check_options(options)
        result.path = options.path
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
                if _up_to_date(store, clip, options, key, mask is not None, verify_existing):
                    result.unchanged.append(clip.clip_id)
                else:
                    if not result.written:
                        unconsolidate(store.path)  # a writer starts (store_meta)
                    _write_clip(store, clip, options, data, mask, key)
                    result.written.append(clip.clip_id)
            progress(ProgressEvent("importing clips", advance=1,
                                   info={"MB/s": result.bytes_read / 1e6 / (time.perf_counter() - started)}))
    if result.written or result.unchanged:
        description = _description(file, options, _file_sha256(file))
        if store.extractors().get(options.name) != description:
            store.record_extractors({options.name: description})
    if result.written:
        consolidate(store.path)
    result.seconds = time.perf_counter() - started
    return result
