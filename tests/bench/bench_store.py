"""Benchmark of the feature store's checks (prints figures, asserts nothing).

Run: ``PYTHONPATH=. .venv/bin/python tests/bench/bench_store.py [--clips 55] [--frames 4900]``.
It writes, with the store API, a synthetic store of 1/10 of Aff-Wild2 by default (55 clips of
4,900 frames: about 270k frames of ``swin`` [T, 768] float16 plus ``valid``), then reports:

* **planning a no-op rerun** (:func:`stages.extract._plan`, every array complete): before, the
  full re-read and re-hash the old ``verify_existing=True`` default did; after, the default check
  (markers, cache keys, recorded chunk sizes: per array, not per byte); and the ratio;
* **stage two's read of every clip**: the default checked read (sizes + crc32c per chunk) against
  the same read plus a sha256 of the data (what an array written before crc32c costs).

The store was just written, so its files are in the page cache: the "before" figure is a lower
bound (from disk, or over NFS/Lustre, the full re-hash reads every byte again; the cheap check
does not). Random features compress worse than real ones, so the store is larger than a real one.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from _timing import best_of

from pipeline.data.manifest import Clip
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import VALID, VALID_KEY, checksum
from pipeline.progress import silent
from stages.extract import _plan


class _Swin:
    """Just enough of an extractor for the planner: one video-rate array under one cache key."""

    cache_key = "bench-swin"
    strided = False
    needs_audio = False

    def outputs(self) -> dict[str, None]:
        return {"swin": None}


def _write(path: Path, clips: int, frames: int) -> list[Clip]:
    store = FeatureStore(path, "a")
    rng = np.random.default_rng(0)
    made = []
    for k in range(clips):
        clip = Clip(f"clip{k:03d}", "train", f"clip{k:03d}", frames, 30.0, None, None, None, None)
        store.ensure_clip(clip.clip_id, frames, 30.0, {"has_audio": False})
        features = rng.standard_normal((frames, 768), dtype=np.float32).astype(np.float16)
        store.write(clip.clip_id, "swin", features, _Swin.cache_key, 30.0)
        store.write(clip.clip_id, VALID, rng.random(frames) > 0.05, VALID_KEY, 30.0)
        made.append(clip)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=55)
    parser.add_argument("--frames", type=int, default=4900, help="frames per clip")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        began = time.perf_counter()
        clips = _write(folder / "f.zarr", args.clips, args.frames)
        written = time.perf_counter() - began
        store = FeatureStore(folder / "f.zarr")
        summary = store.summary()
        print(f"store: {args.clips} clips x {args.frames} frames = {summary.frames:,} frames, "
              f"{summary.size_bytes / 2**20:,.0f} MiB on disk, written in {written:.1f} s "
              f"({summary.arrays['swin'].bytes_per_frame:,.0f} B/frame of swin)")
        extractors = {"swin": _Swin()}

        def plan(verify: bool):
            config = SimpleNamespace(audio_stride=1, verify_existing=verify)
            return _plan(store, clips, extractors, config, silent)

        before, before_cpu, full = best_of(lambda: plan(True), args.repeat)
        after, after_cpu, cheap = best_of(lambda: plan(False), args.repeat)
        assert not full.jobs and not cheap.jobs, "the store should be complete"
        print(f"no-op rerun planning, {len(clips)} clips x 2 arrays:")
        print(f"  before (full re-hash):            {before:8.3f} s wall  {before_cpu:8.3f} s CPU")
        print(f"  after (markers + chunk sizes):    {after:8.3f} s wall  {after_cpu:8.3f} s CPU")
        print(f"  ratio before/after:               {before / after:8.1f}x wall "
              f"{before_cpu / max(after_cpu, 1e-9):8.1f}x CPU")

        def read_all(with_sha: bool) -> int:
            total = 0
            for clip in clips:
                data = store.read(clip.clip_id, "swin")
                if with_sha:
                    checksum(data)
                total += data.nbytes
            return total

        checked, _, nbytes = best_of(lambda: read_all(False), args.repeat)
        hashed, _, _ = best_of(lambda: read_all(True), args.repeat)
        print(f"stage two's read of every clip's swin ({nbytes / 2**20:,.0f} MiB):")
        mib = nbytes / 2**20
        print(f"  sizes + crc32c (default):          {checked:8.3f} s  ({mib / checked:,.0f} MiB/s)")
        print(f"  + sha256 (arrays without crc32c):  {hashed:8.3f} s  ({mib / hashed:,.0f} MiB/s), "
              f"+{(hashed / checked - 1) * 100:.0f}%")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
