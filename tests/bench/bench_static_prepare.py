"""Benchmark of preparing a static dataset (prints figures, asserts nothing).

Run: ``PYTHONPATH=. .venv/bin/python tests/bench/bench_static_prepare.py [--images 2000]
[--side 100] [--box]``. Generates a RAF-DB-layout folder (``--box``: an ExpW-layout one whose
faces are a box of each picture) of random ``side`` x ``side`` JPEGs under a temporary folder,
then times ``prepare`` (decode, crop, write JPEG crops and manifests: one core) and its rerun on
the same files (the digest check only).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.static.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=100)
    parser.add_argument("--box", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root, lines, side = Path(tmp) / "data", [], args.side
        for k in range(1, args.images + 1):
            if args.box:
                name, folder = f"p{k}.jpg", root / "image" / "origin"
                lines.append(f"{name} 0 {side // 8} {side // 8} {side - side // 8} "
                             f"{side - side // 8} 50.0 {k % 7}")
            else:
                name, folder = f"train_{k:05d}_aligned.jpg", root / "Image" / "aligned"
                lines.append(f"train_{k:05d}.jpg {k % 7 + 1}")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
                folder / name, quality=90)
        listing = root / ("label/label.lst" if args.box else "EmoLabel/list_patition_label.txt")
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(lines) + "\n")
        name = "expw" if args.box else "rafdb"
        started = time.perf_counter()
        prepared = prepare(name, root, Path(tmp) / "store")
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = prepare(name, root, Path(tmp) / "store")
        rerun = time.perf_counter() - started
        print(f"{name}: {args.images} images {side}x{side}: prepare {first:.2f} s "
              f"({args.images / first:.0f} images/s), {prepared.report['clips']['train']} clips; "
              f"rerun {rerun:.3f} s (already={again.already})")


if __name__ == "__main__":
    main()
