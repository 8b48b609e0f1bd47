"""The feature store's format, apart from the class that opens one: what lies where, what it is
called and keyed by, how an array is chunked and encoded, the errors a reader raises, the check
of an array's files against what its writer recorded, an empty store, and where older stores kept
what ``STORE.meta`` holds now. Plain functions on names, paths and arrays:
:class:`pipeline.features.store.FeatureStore` stands on them, and this module imports nothing of
the store.

Layout (stage one's output; the stages around it: docs/layout.md)::

    STORE/                      root attrs: {"fer_pipeline_store": FORMAT_VERSION,
                                             "extractors": {name: Extractor.describe()},
                                             "feature_digests": {clip_id: feature_digest}}
                                (stores written before: "manifest_digests", with labels)
      clips/<clip_id>/          attrs: {"n_frames", "fps", "has_audio"}
        <array>                 e.g. swin [T, 768] float16, logmel [T_audio, n_mels], tdnn_w32 [T, 512]
                                attrs: {"complete": {"sha256", "cache_key", "rate", "chunks"}}
        valid                   bool [T]: frame had a face image (stage one writes it last)
        audio_valid             bool [T]: frame's span has audio; only for a clip whose audio
                                track ends before its video (its audio arrays past the end are masked)
        time                    float64 [T]: seconds of each video frame (a coordinate)
        <array>_time            float64 [T_audio]: seconds of each row of an audio-rate array
    STORE.meta/                 beside the store, outside the Zarr hierarchy (plain zarr and xarray
      locks/                    would warn about or trip on folders inside it): writers' locks,
      reports/                  one JSON report per extraction run,
      corrupt/<clip>/<array>    arrays a reader found corrupt: the next `extract` recomputes them,
      tmp/                      arrays and clip groups being built (see "Correct without locks" in
                                :mod:`pipeline.features.store`)

**Other tools read it.** Every array carries ``dimension_names``: ``frame`` for rows at the video
rate, ``<array>_frame`` for other rates (log-mel's audio frames), then ``<array>_feature`` (or
``<array>_height, _width, _channel`` for maps, ``<array>_token, _feature`` for token rows: each
array's own names, because xarray needs one size per dimension name in a group). Time
coordinates in seconds are attached through the CF ``coordinates`` attribute, so
``xarray.open_zarr(STORE, group="clips/<id>")`` and ``xarray.open_datatree(STORE, engine="zarr")``
open a store as it is; a finished ``extract`` or ``store import`` leaves consolidated metadata
for them, which the store class never reads (:mod:`pipeline.features.store_meta`). ``time`` and
names ending in ``_time`` are reserved for coordinates.

**Reading verifies what it reads.** Arrays carry a ``crc32c`` codec after compression, checked by
zarr on every chunk it decodes, and their marker records each chunk file's size, checked before a
read (a deleted chunk would otherwise read as zeros): :func:`check_data`. Arrays written before
(no ``chunks`` in the marker, no crc32c) are checked against their sha256 on every full read
instead. A failure raises :class:`CorruptArray` (one line: store, clip, array, rerun
``extract``) and leaves a note (:func:`corrupt_note`) in ``STORE.meta/corrupt`` that makes the
next ``extract`` recompute the array. Old stores stay readable and writable with the same
``FORMAT_VERSION``: new writes use the new array format, ``xarray`` needs dimension names
(``store info`` says when an array lacks them: re-extract it).

**Chunks fit stage two's reads.** Stage two reads whole clips, so chunks span many frames (about
4 MiB each, :func:`chunk_rows`) and a clip is a handful of files; every chunk is written, even an
all-zero one, so that a missing file always means damage.

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
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline.errors import PipelineError
from pipeline.features.atomic import aside_name

FORMAT_VERSION = 1
VALID = "valid"  # bool [T]: frame i had a face image on disk
VALID_KEY = "valid-1"  # its cache key: it depends on nothing but the frame files
# bool [T]: frame i's span has audio (written only for a clip whose audio track ends before its
# video): a head reads the audio features of the other frames as missing, like a clip's without audio.
AUDIO_VALID = "audio_valid"
AUDIO_VALID_KEY = "audio-valid-1"
TIME = "time"  # float64 [T]: seconds of each video frame (the coordinate of "frame")
TIME_KEY = "time-1"
CHUNK_BYTES = 4 << 20
# crc32c after compression: zarr checks every chunk it decodes against it.
CODECS = (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec())


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


def corrupt_note(meta: Path, clip_id: str, name: str) -> Path:
    """The note a reader leaves in ``meta`` (:func:`meta_dir`) for an array it found corrupt."""
    return meta / "corrupt" / clip_id / name


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


def chunk_rows(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per chunk of an array of ``shape``: about :data:`CHUNK_BYTES` each."""
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    return int(max(1, min(shape[0], CHUNK_BYTES // max(1, row_bytes))))


def one_line(e: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


def chunk_problem(folder: Path, marker: dict) -> str | None:
    """What is wrong with the chunk files the marker of the array in ``folder`` recorded
    (None: all present, same sizes)."""
    for key, size in marker["chunks"].items():
        try:
            actual = os.stat(folder / key).st_size
        except FileNotFoundError:
            return f"chunk {key} is missing"
        if actual != size:
            return f"chunk {key} has {actual} bytes, {size} were written"
    return None


def check_data(folder: Path, marker: dict, read: Callable[[], np.ndarray],
               full: bool) -> tuple[np.ndarray | None, str | None]:
    """Read the array in ``folder`` (``read()``) and check it against its ``marker``: (data, None),
    or (None, what is wrong).

    Arrays with recorded chunks: their sizes, and crc32c per chunk as zarr decodes them;
    ``full`` adds the sha256. Older arrays: always the sha256.
    """
    chunked = isinstance(marker.get("chunks"), dict)
    problem = chunk_problem(folder, marker) if chunked else None
    data = None
    if problem is None:
        try:
            data = read()
        except Exception as e:  # noqa: BLE001  (crc32c mismatch, undecodable or unreadable chunk)
            problem = f"unreadable data ({one_line(e)})"
    if problem is None and (full or not chunked) and checksum(data) != marker.get("sha256"):
        problem = "its data does not match its sha256"
    return (data, None) if problem is None else (None, problem)


def create_store(path: Path) -> None:
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


def move_legacy_folders(path: Path, meta: Path) -> None:
    """Stores written before STORE.meta (``meta``) held ``.locks`` and ``reports`` inside the
    store at ``path``: move them out."""
    with contextlib.suppress(OSError):
        shutil.rmtree(path / ".locks")  # empty lock files; holders use STORE.meta now
    old_reports = path / "reports"
    if old_reports.is_dir():
        (meta / "reports").mkdir(parents=True, exist_ok=True)
        for report in old_reports.iterdir():
            with contextlib.suppress(OSError):
                os.replace(report, meta / "reports" / report.name)
        with contextlib.suppress(OSError):
            old_reports.rmdir()
