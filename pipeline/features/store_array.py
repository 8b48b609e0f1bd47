"""How an array enters the feature store: built complete, with its marker, then renamed into place.

:func:`write_array` is the one writer of an array (:class:`pipeline.features.store.FeatureStore`
calls it for data and time coordinates alike). It creates the Zarr array under a hidden name in
the scratch folder (:mod:`pipeline.features.atomic`), in the store's chunking and encoding
(:mod:`pipeline.features.store_format`), every chunk on disk; writes the data; then the completion
marker, the record that reading checks the array against (sha256, cache key, rate, chunk sizes:
:func:`~pipeline.features.store_format.check_data`); and renames the whole into its group. A
crash at any point leaves the old array, or none, never half of one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr

from pipeline.features.atomic import aside_name, chunk_sizes, move_into_place, update_attributes
from pipeline.features.store_format import (CODECS, TIME, checksum, chunk_rows, dimension_names,
                                            is_coordinate, time_name)


def write_array(group_dir: Path, name: str, data: np.ndarray, cache_key: str, rate: float,
                video_rate: bool, dims: tuple[str, ...] | None = None,
                scratch: Path | None = None) -> None:
    """Build the array ``name`` aside (in ``scratch``, default beside it), complete with its
    marker, then rename it into ``group_dir``. ``video_rate``: its rows are the clip's frames
    (its coordinate is ``time``; otherwise its own, :func:`time_name`)."""
    data = np.ascontiguousarray(data)
    dims = dims or dimension_names(name, data.ndim, video_rate)
    final = group_dir / name
    built = aside_name(final, scratch)
    coordinate = TIME if video_rate else time_name(name)
    try:
        array = zarr.create_array(
            str(built), shape=data.shape, dtype=data.dtype,
            chunks=(chunk_rows(data.shape, data.dtype.itemsize), *data.shape[1:]),
            compressors=CODECS, fill_value=0, zarr_format=3,
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
