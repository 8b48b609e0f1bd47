"""Export store arrays to HDF5: a group per clip, a dataset per array, with rates and provenance.

:func:`export_hdf5` writes ``/<clip_id>/<array>`` datasets, compressed (gzip level 1 or lzf, with
shuffle; or none), one clip in memory at a time (so memory does not grow with the store), to a
temporary file renamed into place. Group attributes: ``n_frames``, ``fps``, ``has_audio`` (and
``split`` when the clips come from manifests); dataset attributes: ``rate``, ``cache_key``,
``sha256`` and the description (JSON) of the extractor or import that wrote the array. The face
mask is the ``valid`` dataset, always exported (millions of frames do not fit in an HDF5
attribute). Every array is checked against its checksum on the way out. Such a file imports back
bit for bit with ``path="{clip}/<array>"`` (:mod:`pipeline.features.hdf5`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.hdf5 import FORMAT_VERSION
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import AUDIO_VALID, VALID, checksum
from pipeline.progress import ProgressEvent, ProgressFn, silent

COMPRESSIONS = ("gzip", "lzf", "none")
_EXPORT_CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB: whole-clip reads, quick to decompress


@dataclass
class ExportResult:
    path: str
    clips: int
    arrays: list[str]  # names exported (over all clips)
    bytes: int  # bytes of the arrays' data (uncompressed)
    frames: int  # video frames of the exported clips
    file_bytes: int  # size of the written file
    seconds: float


def _owner_descriptions(store: FeatureStore) -> dict[str, str]:
    """Array name -> JSON description of the extractor (or import) that wrote it."""
    owners: dict[str, str] = {VALID: json.dumps({"name": VALID, "kind": "per-frame face flag"}),
                              AUDIO_VALID: json.dumps({"name": AUDIO_VALID,
                                                       "kind": "per-frame audio flag (audio ending early)"})}
    for owner, described in store.extractors().items():
        text = json.dumps(described, sort_keys=True, default=str)
        for name in {owner, *described.get("outputs", {}), *described.get("array_keys", {})}:
            owners[name] = text
    return owners


def _layout(data: np.ndarray, filters: dict[str, Any]) -> dict[str, Any]:
    """Storage of one exported array: contiguous if uncompressed (or empty), else chunks of about
    1 MiB that split the rows evenly (a last, mostly empty chunk would be stored whole)."""
    if not filters or data.size == 0:
        return {}
    per_chunk = max(1, _EXPORT_CHUNK_BYTES // max(1, data[:1].nbytes))
    n_chunks = -(-len(data) // per_chunk)
    return {"chunks": (-(-len(data) // n_chunks), *data.shape[1:]), **filters}


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
        filters["compression_opts"] = 1  # the fastest level: gzip bounds the export's speed
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
                    dataset = group.create_dataset(name, data=data, **_layout(data, filters))
                    dataset.attrs.update({"rate": float(marker["rate"]), "sha256": marker["sha256"],
                                          "cache_key": str(marker["cache_key"]),
                                          "description": owners.get(name, "")})
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
