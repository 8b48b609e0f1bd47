"""The whole path from raw video on the demo: faces -> manifest -> extract -> fuse -> ensemble,
beside the same head on the demo's own crops.

Needs a built demo (``make demo``; default ``work/demo``). Writes under OUT (default
``/tmp/faces-demo-path``): a dataset root with the demo's annotations and videos and the crops
``fer-pipeline faces`` made, its manifests, a store with the image extractor only, the ``image``
head's run and two ensembles (ours, and the demo's own ``image`` run scored the same way).
Prints faces found against the demo's crops and both macro-F1 on val.

    python tests/bench/faces_demo_path.py [DEMO] [OUT]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from cli.main import main

EXTRACT = ["-e", "swin", "--precision", "auto"]
# The shot-cut rules off: the demo's drawn videos change their colour histogram so much from frame
# to frame that the default rules (cut_threshold 0.35, cut_spike 0.2) put a cut before 41-44 of
# every 45 frames, no track reaches min_frames, and no clip keeps a face to train on.
FACES = ["--set", "cut_threshold=1.0", "--set", "cut_spike=1.0"]


def run(*args: str) -> None:
    started = time.perf_counter()
    code = main(list(args))
    print(f"== {args[0]}: exit {code}, {time.perf_counter() - started:.0f} s", flush=True)
    if code:
        raise SystemExit(code)


def macro_f1(scores: Path) -> dict:
    data = json.loads(scores.read_text())
    return {k: v for k, v in data.items() if "f1" in k.lower() or k in ("val", "rows")}


def main_(demo: Path, out: Path) -> None:
    data = out / "data"
    if not data.exists():
        data.mkdir(parents=True)
        for name in ("annotations", "test_set.txt", "demo.json"):
            source = demo / "data" / name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, data / name)
        os.symlink((demo / "data" / "videos").resolve(), data / "videos")
    two = sorted(p.name[:-len("_left")] for p in (demo / "data" / "cropped_aligned").glob("*_left"))
    run("faces", str(data / "videos"), "--out", str(data), *FACES,
        *[a for v in two for a in ("--two-person", v)])
    ours = sum(len(list(p.glob("*.jpg"))) for p in (data / "cropped_aligned").iterdir())
    theirs = sum(len(list(p.glob("*.jpg"))) for p in (demo / "data" / "cropped_aligned").iterdir())
    print(f"face crops: {ours} from `faces`, {theirs} in the demo's cropped_aligned")
    run("manifest", str(data), "--out", str(out / "manifests"), "--allow-skips")
    run("extract", "--manifests", str(out / "manifests"), "--store", str(out / "features.zarr"), *EXTRACT)
    run("fuse", "--method", "image", "--store", str(out / "features.zarr"), "--manifests",
        str(out / "manifests"), "--out", str(out / "runs"))
    run("ensemble", str(out / "runs" / "image"), "--manifests", str(out / "manifests"),
        "--out", str(out / "scores-faces"))
    run("ensemble", str(demo / "runs" / "image"), "--manifests", str(demo / "manifests"),
        "--out", str(out / "scores-demo-crops"))
    for name in ("scores-faces", "scores-demo-crops"):
        print(name, json.dumps(json.loads((out / name / "scores.json").read_text()))[:600])


if __name__ == "__main__":
    main_(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("work/demo"),
          Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/faces-demo-path"))
