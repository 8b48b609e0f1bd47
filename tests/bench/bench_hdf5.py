"""Benchmark of HDF5 export and import (prints figures, asserts nothing).

Run: ``.venv/bin/python tests/bench/bench_hdf5.py [--clips 16] [--frames 2500]``. It builds a
synthetic store with the real image feature size (``swin`` [T, 768] float16, plus ``valid``),
then reports, as MB/s of array data and frames/s:

* ``store export`` with each compression (gzip level 1 + shuffle, lzf + shuffle, none) and the
  file's size;
* ``store import`` of the gzip file into an empty store (read, check, hash, write, mark), and a
  re-import of the unchanged file (read, hash, verify the stored copy: nothing written).

Random normal features compress worse than real ones, so the file sizes are an upper bound.
The default size (40,000 frames, 61 MB of swin features) runs in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from _timing import best_of

from pipeline.data.manifest import Clip
from pipeline.features.hdf5 import ImportOptions, import_hdf5
from pipeline.features.hdf5_export import export_hdf5
from pipeline.features.store import FeatureStore

FPS = 30.0


def make_store(path: Path, clips: int, frames: int) -> list[Clip]:
    rng = np.random.default_rng(0)
    store = FeatureStore(path, "a")
    records = []
    for k in range(clips):
        clip_id = f"clip{k:03d}"
        valid = rng.random(frames) > 0.05
        image = rng.normal(size=(frames, 768)).astype(np.float16)
        image[~valid] = 0
        store.ensure_clip(clip_id, frames, FPS)
        store.write(clip_id, "swin", image, cache_key="bench", rate=FPS)
        store.write(clip_id, "valid", valid, cache_key="bench", rate=FPS)
        records.append(Clip(clip_id, "train", clip_id, frames, FPS, None, None, None, None))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = make_store(root / "src.zarr", args.clips, args.frames)
        frames = args.clips * args.frames
        data_mb = frames * 768 * 2 / 1e6
        print(f"store: {args.clips} clips x {args.frames} frames, swin [T, 768] float16 "
              f"({data_mb:.1f} MB) + valid")

        for compression in ("gzip", "lzf", "none"):
            out = root / f"{compression}.h5"
            wall, cpu, result = best_of(
                lambda: export_hdf5(root / "src.zarr", out, arrays=["swin"], compression=compression),
                args.repeat)
            mb = result.bytes / 1e6
            print(f"export {compression:4s}: {mb / wall:7.1f} MB/s  {frames / wall:9,.0f} frames/s  "
                  f"(wall {wall:.2f} s, cpu {cpu:.2f} s; file {result.file_bytes / 1e6:.1f} MB)")

        options = ImportOptions("imported", path="{clip}/swin")

        def first_import():
            shutil.rmtree(root / "dst.zarr", ignore_errors=True)
            return import_hdf5(root / "gzip.h5", root / "dst.zarr", clips, options)

        for label, run in (("import (new store)", first_import),
                           ("re-import unchanged", lambda: import_hdf5(root / "gzip.h5", root / "dst.zarr",
                                                                       clips, options))):
            wall, cpu, result = best_of(run, args.repeat)
            print(f"{label:19s}: {result.bytes_read / 1e6 / wall:7.1f} MB/s  {frames / wall:9,.0f} frames/s  "
                  f"(wall {wall:.2f} s, cpu {cpu:.2f} s; {len(result.written)} clips written, "
                  f"{len(result.unchanged)} unchanged)")


if __name__ == "__main__":
    main()
