"""Stage one's throughput and memory: the bare backbone, the whole ``extract``, a naive loop.

Run ``python tests/bench/bench_extract.py`` (``--help`` for the sizes). On a demo dataset it
measures, for one image extractor (``swin``) at each ``--precision``:

* **bare**: the backbone alone on preprocessed tensors already in memory (same batch size and
  precision): the ceiling for the stage;
* **whole**: ``run_extract`` in-process (decode, preprocess, model, write to the store), with the
  model already built (a warm-up run on one clip builds and caches it, as a worker would);
* **naive**: a per-frame loop of the kind research repositories ship: PIL open, transform,
  forward with batch 1, ``np.save`` of one file per frame;

and prints frames/s of each (frames with a face: the ones the model sees), whole/bare (target
>= 0.9), whole/naive (target >= 3) and the share of the stage's time the model waits for input
(``1 - whole/bare``: the model thread does nothing else). Then JPEG decoding alone: frames/s of
the CPU loader (PIL) and, on a CUDA ``--device`` with batched nvJPEG, of
:func:`pipeline.features.loading.decode_jpegs` there. Then it runs the whole stage in a fresh
subprocess on the dataset and on one with ``--rss-scale`` times the clips, and prints each run's
peak RSS (target: flat in the number of clips).

``--device cuda`` runs all of it on the GPU (pinned, non-blocking batch copies). Paired runs of
``--precision bf16 fp32`` on this project's 2-core CPU (``avx512_bf16``) are in
docs/speed-and-precision.md.

Timings on a shared machine vary with its load: the script prints the load average beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_demo(root: Path, clips: int, frames: int, size: int) -> Path:
    """The demo dataset (pipeline.data.synthetic) and its manifests; returns the manifest dir."""
    from pipeline.data.dataset import read_dataset
    from pipeline.data.manifest import write_manifests
    from pipeline.data.synthetic import DemoConfig, generate

    generate(root / "data", DemoConfig(clips=clips, frames=frames, size=size))
    write_manifests(read_dataset(root / "data"), root / "manifests")
    return root / "manifests"


def face_frames(manifests: Path) -> list[Path]:
    from pipeline.data.manifest import load_clips

    paths = []
    for clip in load_clips(manifests):
        paths += [p for i in range(clip.n_frames) if (p := clip.frame_path(i)) and p.is_file()]
    return paths


def config(name: str, precision: str, batch_size: int, device: str):
    from pipeline.features.config import ExtractConfig

    return ExtractConfig(extractors=[name], precision=precision, batch_size=batch_size, device=device)


def bare(name: str, precision: str, batch_size: int, device: str, paths: list[Path], batches: int) -> float:
    """Frames/s of the backbone alone on preprocessed batches held in memory."""
    import torch

    from pipeline.data.media import read_image
    from pipeline.features.plan import build_extractors

    ext = build_extractors(config(name, precision, batch_size, device))[name]
    ext.load()
    images = [ext.preprocess(read_image(p)) for p in paths[:batch_size * batches]]
    chunks = [torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    chunks = [c for c in chunks if len(c) == batch_size]
    ext.forward(chunks[0])  # warm-up (first-call allocations, oneDNN kernel selection)
    start = time.perf_counter()
    for chunk in chunks:
        ext.forward(chunk)
    return len(chunks) * batch_size / (time.perf_counter() - start)


def whole(name: str, precision: str, batch_size: int, device: str, manifests: Path, work: Path) -> tuple[float, float]:
    """(frames with a face per second, all frames per second) of run_extract, model pre-built."""
    from pipeline.features.store import FeatureStore
    from stages.extract import run_extract

    cfg = config(name, precision, batch_size, device)
    warm = dataclasses.replace(cfg, splits=["test"])
    run_extract(warm, manifests, work / "warm.zarr")  # builds the model (cached for the next run)
    store = work / "whole.zarr"
    shutil.rmtree(store, ignore_errors=True)
    result = run_extract(cfg, manifests, store)
    handle = FeatureStore(store)
    faces = sum(int(handle.read(c, "valid").sum()) for c in handle.clip_ids())
    return faces / result.seconds, result.frames_per_second


def naive(name: str, precision: str, device: str, paths: list[Path], out: Path) -> float:
    """Frames/s of a per-frame loop: open, transform, forward with batch 1, one .npy per frame."""
    from PIL import Image

    from pipeline.features.plan import build_extractors

    ext = build_extractors(config(name, precision, 1, device))[name]
    ext.load()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for k, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        x = ext.preprocess(image).unsqueeze(0)
        feature = ext.forward(x)[name][0].numpy().astype(np.float16)
        np.save(out / f"{k:06d}.npy", feature)
    return len(paths) / (time.perf_counter() - start)


def decode_rates(paths: list[Path], device: str, batch_size: int) -> tuple[float, float | None]:
    """(CPU PIL decode frames/s, batched decode frames/s on ``device`` or None where unavailable)."""
    from pipeline.features.loading import decode_jpegs, jpeg_decode_device, read_images

    start = time.perf_counter()
    read_images(paths)
    cpu = len(paths) / (time.perf_counter() - start)
    target = jpeg_decode_device(device)
    if target == "cpu":
        return cpu, None
    import torch

    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    decode_jpegs(chunks[0], target)  # warm-up: nvJPEG handles, first allocations
    torch.cuda.synchronize()
    start = time.perf_counter()
    for chunk in chunks:
        decode_jpegs(chunk, target)
    torch.cuda.synchronize()
    return cpu, len(paths) / (time.perf_counter() - start)


def rss_child(args: argparse.Namespace) -> None:
    """(In a subprocess) run the stage once and print the process's peak RSS in MiB."""
    from stages.extract import run_extract

    result = run_extract(config(args.extractor, args.rss_precision, args.batch_size, args.device),
                         args.rss_child[0], args.rss_child[1])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak_kib / 1024, "frames": result.frames, "clips": result.clips}))


def peak_rss(args: argparse.Namespace, manifests: Path, store: Path) -> dict:
    command = [sys.executable, __file__, "--rss-child", str(manifests), str(store),
               "--extractor", args.extractor, "--rss-precision", args.rss_precision,
               "--batch-size", str(args.batch_size), "--device", args.device]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="demo clips (at least 4)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip (at least 16)")
    parser.add_argument("--size", type=int, default=112, help="face crop side in pixels")
    parser.add_argument("--extractor", default="swin")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bare-batches", type=int, default=4, help="batches timed for the bare backbone")
    parser.add_argument("--naive-frames", type=int, default=32, help="frames timed for the naive loop")
    parser.add_argument("--rss-scale", type=int, default=4, help="the larger RSS run has this many times the clips")
    parser.add_argument("--rss-frames", type=int, default=16, help="frames per clip in the RSS runs")
    parser.add_argument("--rss-precision", default="fp32")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args)
        return

    import torch

    print(f"bench_extract: {args.extractor}, batch {args.batch_size}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        manifests = make_demo(work / "demo", args.clips, args.frames, args.size)
        paths = face_frames(manifests)
        print(f"demo: {args.clips} clips x {args.frames} frames, {len(paths)} with a face, {args.size}px")
        for precision in args.precision:
            b = bare(args.extractor, precision, args.batch_size, args.device, paths, args.bare_batches)
            w_faces, w_all = whole(args.extractor, precision, args.batch_size, args.device, manifests, work)
            n = naive(args.extractor, precision, args.device, paths[:args.naive_frames], work / f"naive-{precision}")
            print(f"{precision}: bare {b:7.2f} f/s | whole {w_faces:7.2f} f/s ({w_all:.2f} incl. frames "
                  f"without a face) | naive {n:7.2f} f/s | whole/bare {w_faces / b:.2f} (target >= 0.9) | "
                  f"whole/naive {w_faces / n:.2f} (target >= 3) | model waits for input "
                  f"{max(0.0, 1 - w_faces / b):.0%}   [load {os.getloadavg()[0]:.1f}]", flush=True)
        cpu_decode, device_decode = decode_rates(paths, args.device, args.batch_size)
        print(f"JPEG decode: CPU (PIL, one loader thread) {cpu_decode:8.1f} f/s | batched on "
              f"{args.device}: " + (f"{device_decode:8.1f} f/s" if device_decode else "not available"))

        small = make_demo(work / "rss1", args.clips, args.rss_frames, args.size)
        large = make_demo(work / "rss4", args.clips * args.rss_scale, args.rss_frames, args.size)
        one = peak_rss(args, small, work / "rss1.zarr")
        many = peak_rss(args, large, work / "rss4.zarr")
        print(f"peak RSS ({args.rss_precision}): {one['clips']} clips / {one['frames']} frames "
              f"{one['peak_mib']:.0f} MiB | {many['clips']} clips / {many['frames']} frames "
              f"{many['peak_mib']:.0f} MiB | ratio {many['peak_mib'] / one['peak_mib']:.2f} (target: about 1)")


if __name__ == "__main__":
    main()
