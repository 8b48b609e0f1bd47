"""Benchmark of stage two (prints figures, asserts nothing).

Run: ``.venv/bin/python tests/bench/bench_fuse.py [--clips 16] [--frames 1000]`` (``make bench``
runs every bench file). It builds a synthetic store with the real feature sizes (``swin``
[T, 768] and ``tdnn_w32/48/64`` [T, 512] float16), then reports:

* one training epoch (+ its validation pass) of ``mfm`` and ``sequence``, streaming from the
  store with no cache, split into the time spent waiting for data and the rest (compute);
  target: waiting <= 10% of the epoch;
* the same epoch's data with the research-repo pattern: opening the Zarr store for every sample
  and reading that sample's rows (measured on a few hundred samples, scaled to the epoch);
* the 25-pair proportional (m, n) search over 1,000,000 frames x 8 classes (target < 1 s), for
  two members that mostly agree (trained heads) and two independent random ones (worst case).

The default size (16 training and 4 validation clips of 1000 frames) runs in a few minutes on 2
cores. Wall time on a shared machine varies; CPU time is printed beside it where it matters.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from _timing import best_of

from pipeline.data.manifest import Clip, write_manifest
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.train import train
from pipeline.metrics.search import proportional_search

AUDIO = ("tdnn_w32", "tdnn_w48", "tdnn_w64")


def make_store(root: Path, clips: int, frames: int, seed: int = 0) -> tuple[Path, Path, list[Clip]]:
    """A store with the real feature sizes; labels in runs of ~100 frames (Aff-Wild2-like)."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(root / "features.zarr", "a")
    records = []
    for k in range(clips):
        split = "val" if k % 5 == 4 else "train"
        clip_id = f"clip{k:03d}"
        labels = np.repeat(rng.integers(0, 8, frames // 100 + 1), 100)[:frames].astype(np.int8)
        valid = rng.random(frames) > 0.05
        store.ensure_clip(clip_id, frames, 30.0)
        store.write(clip_id, "valid", valid, cache_key="bench", rate=30.0)
        image = rng.normal(size=(frames, 768)).astype(np.float16)
        image[~valid] = 0
        store.write(clip_id, "swin", image, cache_key="bench", rate=30.0)
        for name in AUDIO:
            store.write(clip_id, name, rng.normal(size=(frames, 512)).astype(np.float16),
                        cache_key="bench", rate=30.0)
        records.append(Clip(clip_id=clip_id, split=split, video_id=clip_id, n_frames=frames,
                            fps=30.0, frames_dir=None, video_path=None, audio_path=None,
                            labels=labels))
    for split in ("train", "val"):
        write_manifest(root / "manifests" / f"{split}.jsonl", [c for c in records if c.split == split])
    return root / "features.zarr", root / "manifests", records


def one_epoch(method: str, store: Path, manifests: Path, clips: list[Clip], out: Path) -> dict:
    """Train ``method`` for one epoch from the store, no cache, groups of 4 clips."""
    config = build_config(method, store, manifests, sets=["train.epochs=1", "train.cache_mb=0",
                                                          "train.buffer_mb=64"])
    began = time.perf_counter()
    result = train(config, out / method, clips, FeatureStore(store))
    total = time.perf_counter() - began
    epoch = result.metrics.history[0]
    return {"epoch": epoch["seconds"], "data": epoch["data_seconds"], "examples": epoch["examples"],
            "total": total}


def naive_samples_per_second(store: Path, clips: list[Clip], method: str, samples: int) -> float:
    """The research-repo pattern: open the store per sample and read just that sample's rows."""
    rng = np.random.default_rng(0)
    train_clips = [c for c in clips if c.split == "train"]
    began = time.perf_counter()
    for _ in range(samples):
        clip = train_clips[int(rng.integers(len(train_clips)))]
        t = int(rng.integers(clip.n_frames))
        group = zarr.open_group(str(store), mode="r")[f"clips/{clip.clip_id}"]  # per sample
        if method == "mfm":  # 9 image frames around t (stride 2) and 3 audio windows at t
            rows = np.clip(t + np.arange(-8, 9, 2), 0, clip.n_frames - 1)
            lo, hi = int(rows.min()), int(rows.max()) + 1
            group["swin"][lo:hi]
            group["valid"][lo:hi]
            for name in AUDIO:
                group[name][t]
        else:  # a 30-frame window of every array
            lo = min(t, clip.n_frames - 30)
            for name in ("swin", "valid", *AUDIO):
                group[name][lo:lo + 30]
    return samples / (time.perf_counter() - began)


def _member(rng: np.random.Generator, labels: np.ndarray, strength: float) -> np.ndarray:
    logits = rng.normal(size=(labels.size, 8)).astype(np.float32)
    logits[np.arange(labels.size), np.clip(labels, 0, 7)] += strength
    np.exp(logits, out=logits)
    return logits / logits.sum(axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="clips (every 5th is validation)")
    parser.add_argument("--frames", type=int, default=1000, help="frames per clip")
    parser.add_argument("--naive-samples", type=int, default=300, help="samples timed naively")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; training with the default train.threads (1)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        store, manifests, clips = make_store(root, args.clips, args.frames)
        n_train = sum(c.split == "train" for c in clips)
        print(f"synthetic store: {n_train} train + {len(clips) - n_train} val clips x "
              f"{args.frames} frames, swin 768 + 3 x tdnn 512 float16 "
              f"({time.perf_counter() - began:.1f} s to write)")
        print(f"{'':<10s} {'epoch s':>8s} {'data s':>7s} {'data %':>7s} {'examples':>9s} "
              f"{'naive data s':>13s} {'naive/ours':>11s}")
        for method in ("mfm", "sequence"):
            figures = one_epoch(method, store, manifests, clips, root / "runs")
            rate = naive_samples_per_second(store, clips, method, args.naive_samples)
            naive_data = figures["examples"] / rate
            compute = figures["epoch"] - figures["data"]
            print(f"{method:<10s} {figures['epoch']:8.2f} {figures['data']:7.2f} "
                  f"{100 * figures['data'] / figures['epoch']:6.1f}% {figures['examples']:9d} "
                  f"{naive_data:13.1f} {(compute + naive_data) / figures['epoch']:10.1f}x")
        print("(naive: epoch time if each example opened the store and read its rows, "
              f"timed on {args.naive_samples} samples; validation pass included in 'ours')")

    rng = np.random.default_rng(0)
    n = 1_000_000
    labels = rng.integers(-1, 8, n)
    for kind, (audio, image) in {
        "trained-like members": (_member(rng, labels, 1.0), _member(rng, labels, 2.0)),
        "independent random members": (rng.random((n, 8), dtype=np.float32),
                                       rng.random((n, 8), dtype=np.float32)),
    }.items():
        wall, cpu, fit = best_of(lambda: proportional_search(audio, image, labels, 5))
        print(f"proportional 25-pair search, 1,000,000 frames x 8, {kind:<27s} "
              f"{wall * 1000:7.1f} ms wall {cpu * 1000:7.1f} ms cpu  best (m, n) = ({fit.m}, {fit.n})")


if __name__ == "__main__":
    main()
