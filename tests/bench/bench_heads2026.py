"""Benchmark of the 2026 heads' stage-two cost per store frame and peak memory (prints figures).

Run: ``.venv/bin/python tests/bench/bench_heads2026.py [--clips 20 80] [--frames 600]``. For
each store size (``--clips`` clips of ``--frames`` frames; every 5th clip is validation) it builds
a synthetic store
with the real feature sizes (``swin`` [T, 768], ``tdnn_w32/48/64`` [T, 512], float16; see
``bench_fuse.py``), then trains one epoch (and its selection pass) of ``mfm``, ``gated``,
``xattn``, ``tcn`` and ``sequence`` with 300-frame windows, each in a fresh process, streaming
from the store (``train.cache_mb = 0``, ``train.buffer_mb = 64``), and prints:

* wall and CPU milliseconds of the run per store frame (the run reads every frame of the store:
  the epoch the training clips, the selection pass the dev clips, the final pass the dev and
  validation clips);
* the process's peak resident memory (``ru_maxrss``) and its increase over the process after
  imports, before the run: what the run itself held (including about 50 MiB of modules the run
  imports, matplotlib among them). Memory bounded by the stream, not the store,
  shows as the same increase at every number of clips (it grows with the longest clip, which is
  read whole: ``pipeline/fusion/data.py``).

Default heads' configs (``mfm`` dim 64; ``gated`` dim 128; ``xattn`` dim 128, 64-frame windows;
``tcn`` dim 128, 6 levels, 300-frame windows; ``sequence`` 300-frame windows), one torch thread,
fp32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = {
    "mfm": [],
    "gated": [],
    "xattn": [],
    "tcn": [],
    "sequence-300": ["head.length=300", "head.train_stride=100", "head.eval_stride=150"],
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(method: str, root: Path) -> dict:
    """Train one epoch in this process; figures as JSON."""
    import torch

    from pipeline.data.manifest import load_clips
    from pipeline.features.store import FeatureStore
    from pipeline.fusion.config import build_config
    from pipeline.fusion.train import train

    torch.set_num_threads(1)
    clips = load_clips(root / "manifests")
    head = method.split("-")[0]
    config = build_config(head, root / "features.zarr", root / "manifests",
                          sets=["train.epochs=1", "train.cache_mb=0", "train.buffer_mb=64",
                                *METHODS[method]])
    before = _rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    train(config, root / "runs" / method, clips, FeatureStore(root / "features.zarr"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    frames = sum(c.n_frames for c in clips)  # train, dev and val: the run reads them all
    return {"wall_ms": 1000 * wall / frames, "cpu_ms": 1000 * cpu / frames, "peak_mb": _rss_mb(),
            "run_mb": _rss_mb() - before, "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[20, 80],
                        help="clips (every 5th is validation), one store per value")
    parser.add_argument("--frames", type=int, default=600, help="frames per clip")
    parser.add_argument("--heads", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], Path(args.one[1]))))
        return
    from bench_fuse import make_store

    print("one epoch + selection pass per head, fresh process each, 1 torch thread, fp32 CPU")
    print(f"{'head':<14s} {'store frames':>12s} {'wall ms/frame':>14s} {'cpu ms/frame':>13s} "
          f"{'peak MiB':>9s} {'run MiB':>8s}")
    for clips in args.clips:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_store(root, clips, args.frames)
            for method in args.heads:
                out = subprocess.run([sys.executable, __file__, "--one", method, str(root)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{method:<14s} {r['frames']:12d} {r['wall_ms']:14.3f} {r['cpu_ms']:13.3f} "
                      f"{r['peak_mb']:9.0f} {r['run_mb']:8.0f}", flush=True)


if __name__ == "__main__":
    main()
