"""Stage two's threads and memory: an ``mfm`` epoch with 1 and 2 torch threads; peak RSS vs clips.

Run ``python tests/bench/bench_train_threads.py`` (``--help`` for the options). It prints:

* per thread count, the wall and CPU seconds of one-epoch ``mfm`` runs (training, validation and
  prediction) on a feature store (default: the demo's, ``/work/demo-shared``, read-only), run in
  alternation (``--repeat`` pairs) so that the machine's load hits both alike, and whether the
  predictions of two runs with the same thread count are identical (determinism);
* the peak RSS of one ``mfm`` epoch, in a fresh subprocess, on a synthetic store (real feature
  widths) of N and ``--rss-scale`` x N clips with ``train.buffer_mb`` below both stores' size and
  ``train.cache_mb=0`` (target: flat in the number of clips).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def one_epoch(store: Path, manifests: Path, out: Path, threads: int) -> tuple[float, float, np.ndarray]:
    """(wall s, CPU s, validation probabilities) of a one-epoch mfm run."""
    from pipeline.data.manifest import load_clips
    from pipeline.features.store import FeatureStore
    from pipeline.fusion.config import build_config
    from pipeline.fusion.train import train

    config = build_config("mfm", store, manifests, sets=["train.epochs=1", f"train.threads={threads}"])
    clips = load_clips(manifests)
    wall, cpu = time.perf_counter(), time.process_time()
    train(config, out, clips, FeatureStore(store), force=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    arrays = []
    for path in sorted((out / "predictions" / "val").glob("*.npz")):
        with np.load(path) as npz:
            arrays += [npz[k].ravel().astype(np.float64) for k in sorted(npz.files)]
    return wall, cpu, np.concatenate(arrays)


def rss_child(store: str, manifests: str, out: str, buffer_mb: str) -> None:
    from pipeline.data.manifest import load_clips
    from pipeline.features.store import FeatureStore
    from pipeline.fusion.config import build_config
    from pipeline.fusion.train import train

    config = build_config("mfm", store, manifests, sets=["train.epochs=1", "train.cache_mb=0",
                                                        f"train.buffer_mb={buffer_mb}"])
    train(config, out, load_clips(manifests), FeatureStore(store))
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/work/demo-shared/features.zarr")
    parser.add_argument("--manifests", default="/work/demo-shared/manifests")
    parser.add_argument("--repeat", type=int, default=2, help="pairs of runs (1 and 2 threads)")
    parser.add_argument("--rss-clips", type=int, default=8, help="clips in the smaller RSS store")
    parser.add_argument("--rss-frames", type=int, default=3000, help="frames per clip in the RSS stores")
    parser.add_argument("--rss-scale", type=int, default=4)
    parser.add_argument("--rss-buffer-mb", type=float, default=96.0,
                        help="train.buffer_mb of the RSS runs (below both stores' size)")
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    print(f"bench_train_threads: cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        work = Path(tmp)
        times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        outputs: dict[int, list[np.ndarray]] = {1: [], 2: []}
        for k in range(args.repeat):
            for threads in (1, 2) if k % 2 == 0 else (2, 1):
                wall, cpu, data = one_epoch(Path(args.store), Path(args.manifests),
                                            work / f"t{threads}-{k}", threads)
                times[threads].append((wall, cpu))
                outputs[threads].append(data)
                print(f"  threads {threads}: wall {wall:6.1f} s, CPU {cpu:6.1f} s "
                      f"[load {os.getloadavg()[0]:.1f}]", flush=True)
        for threads in (1, 2):
            same = all(np.array_equal(outputs[threads][0], o) for o in outputs[threads][1:])
            wall = min(w for w, _ in times[threads])
            cpu = min(c for _, c in times[threads])
            print(f"threads {threads}: best wall {wall:6.1f} s, best CPU {cpu:6.1f} s per one-epoch run; "
                  f"runs identical: {same}")
        w1, w2 = (min(w for w, _ in times[t]) for t in (1, 2))
        print(f"wall(1 thread) / wall(2 threads) = {w1 / w2:.2f} (> 1: two threads are faster)")

        from bench_fuse import make_store

        peaks = []
        for clips in (args.rss_clips, args.rss_clips * args.rss_scale):
            store, manifests, _ = make_store(work / f"rss{clips}", clips, args.rss_frames)
            command = [sys.executable, __file__, "--rss-child", str(store), str(manifests),
                       str(work / f"rss-run{clips}"), str(args.rss_buffer_mb)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            peaks.append((clips, json.loads(out.strip().splitlines()[-1])["peak_mib"]))
        (n1, p1), (n2, p2) = peaks
        print(f"peak RSS, mfm epoch, {args.rss_frames}-frame clips: {n1} clips {p1:.0f} MiB | "
              f"{n2} clips {p2:.0f} MiB | ratio {p2 / p1:.2f} (target: about 1)")


if __name__ == "__main__":
    main()
