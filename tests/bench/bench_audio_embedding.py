"""Audio embeddings once per clip: ``extract -e logmel -e tdnn`` per window (before) and per clip (after).

Run ``python tests/bench/bench_audio_embedding.py`` (``--help`` for the sizes). It prints:

* frames/s of the whole stage (``run_extract`` in-process, logmel + tdnn at its default size) at
  audio stride 1 with ``configs.tdnn.per_clip=false`` (the per-window computation) and ``true``,
  and their ratio; then the per-clip path at ``--audio-stride K`` (is the stride still worth it?);
* peak RSS of one run, in a fresh subprocess, on one clip of ``--minutes`` minutes of synthetic
  audio (no face frames: the audio path only) for the per-clip path at stride 1, and for the
  per-window path at ``--old-stride`` (at stride 1 it would run for hours on this machine).

Timings on a shared machine vary with its load: the script prints the load average beside them.
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
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_extract import make_demo  # noqa: E402


def config(per_clip: bool, stride: int, batch_size: int):
    from pipeline.features.config import ExtractConfig

    return ExtractConfig(extractors=["logmel", "tdnn"], audio_stride=stride, batch_size=batch_size,
                         precision="fp32", configs={"tdnn": {"per_clip": per_clip}})


def stage_fps(manifests: Path, store: Path, per_clip: bool, stride: int, batch_size: int) -> float:
    from stages.extract import run_extract

    result = run_extract(config(per_clip, stride, batch_size), manifests, store)
    return result.frames_per_second


def long_clip(root: Path, minutes: float, fps: float = 30.0, rate: int = 16000) -> Path:
    """One clip of ``minutes`` of noise-modulated tones as a WAV file, and its manifest."""
    from pipeline.data.manifest import Clip, write_manifest

    root.mkdir(parents=True, exist_ok=True)
    n = int(minutes * 60 * rate)
    t = np.arange(n) / rate
    signal = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    signal += 0.05 * np.random.default_rng(0).standard_normal(n)
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    path = root / "long.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    clip = Clip("long", "train", "long", int(minutes * 60 * fps), fps, None, None, str(path), None)
    write_manifest(root / "manifests" / "train.jsonl", [clip])
    return root / "manifests"


def rss_child(args: argparse.Namespace) -> None:
    """(In a subprocess) one run; prints peak RSS in MiB and the wall time."""
    from stages.extract import run_extract

    manifests, store, per_clip, stride = args.rss_child
    start = time.perf_counter()
    result = run_extract(config(per_clip == "1", int(stride), args.batch_size), manifests, store)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak_kib / 1024, "frames": result.frames,
                      "seconds": time.perf_counter() - start}))


def peak_rss(args: argparse.Namespace, manifests: Path, store: Path, per_clip: bool, stride: int) -> dict:
    command = [sys.executable, __file__, "--rss-child", str(manifests), str(store),
               "1" if per_clip else "0", str(stride), "--batch-size", str(args.batch_size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="demo clips (at least 4)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (at least 16)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stride", type=int, default=8, help="the audio stride compared with 1")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long clip")
    parser.add_argument("--old-stride", type=int, default=300, help="per-window stride on the long clip")
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args)
        return

    import torch

    print(f"bench_audio_embedding: logmel + tdnn (512..1500 channels), batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        work = Path(tmp)
        manifests = make_demo(work / "demo", args.clips, args.frames, 32)
        stage_fps(manifests, work / "warm.zarr", True, 1, args.batch_size)  # imports, first calls
        before = stage_fps(manifests, work / "before.zarr", False, 1, args.batch_size)
        after = stage_fps(manifests, work / "after.zarr", True, 1, args.batch_size)
        strided = stage_fps(manifests, work / "strided.zarr", True, args.stride, args.batch_size)
        print(f"stride 1: per-window {before:8.2f} f/s | per-clip {after:8.2f} f/s | "
              f"after/before {after / before:6.1f}x   [load {os.getloadavg()[0]:.1f}]")
        print(f"per-clip: stride 1 {after:8.2f} f/s | stride {args.stride} {strided:8.2f} f/s | "
              f"ratio {strided / after:.2f}x")

        long = long_clip(work / "long", args.minutes)
        new = peak_rss(args, long, work / "long-new.zarr", True, 1)
        old = peak_rss(args, long, work / "long-old.zarr", False, args.old_stride)
        print(f"{args.minutes:g}-minute clip ({new['frames']} frames): per-clip stride 1 peak RSS "
              f"{new['peak_mib']:.0f} MiB in {new['seconds']:.1f} s | per-window stride "
              f"{args.old_stride} peak RSS {old['peak_mib']:.0f} MiB in {old['seconds']:.1f} s")


if __name__ == "__main__":
    main()
