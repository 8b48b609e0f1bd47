"""Benchmark of multi-scale re-crops (prints figures, asserts nothing).

Run: ``PYTHONPATH=. .venv/bin/python tests/bench/bench_multiscale.py [--model resnet18] [--frames 32]``.
The 2026 ABAW leader's re-crops at margins 1.0, 1.2 and 1.4, averaged: ``fer-pipeline faces --set
scale=1.4 --set size=160`` stores the widest crop, and the ``timm`` extractor's
``crop_pct=1.0, crops=[0.857, 0.714]`` (1.2/1.4, 1.0/1.4) reads it whole and adds the two
narrower ones as centre crops of it (the
alignment zooms about the crop's centre: tests/data/test_faces_align_track.py). Measured: the
extractor's preprocessing + forward per frame with one crop and with three, on the CPU (random
weights, fp32, 1 thread), best of 3.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from _timing import best_of
from pipeline.features.extractors.timm_image import TimmImage, TimmImageConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)) for _ in range(args.frames)]
    print(f"timm {args.model}, {args.frames} crops of 160x160, CPU fp32, 1 thread")
    base = None
    for crops in ((), (1.2 / 1.4, 1.0 / 1.4)):
        extractor = TimmImage(config=TimmImageConfig(model=args.model, crop_pct=1.0, crops=crops), device="cpu",
                              precision="fp32", seed=0)
        extractor.load()

        def run():
            return extractor.forward(torch.stack([extractor.preprocess(i) for i in images]))

        wall, cpu, _ = best_of(run)
        base = base or cpu
        print(f"crops {1 + len(crops)}: {args.frames / wall:6.1f} frames/s wall, "
              f"{args.frames / cpu:6.1f} frames/s CPU ({cpu / base:.2f}x the CPU time of one crop)")


if __name__ == "__main__":
    main()
