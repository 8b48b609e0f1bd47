"""``predict``'s cost beside ``extract`` alone: what the heads, the decisions and the tables add.

Run ``python tests/bench/bench_predict.py`` (``--help`` for the sizes). It builds a demo dataset,
extracts it (timm ``--model`` on faces, the TDNN on audio), trains an ``image`` and an ``audio``
head, ensembles them and bundles the result (setup, not timed). Then, on every clip's crop folder
(with its video for audio), each into a fresh store:

* **extract**: :func:`stages.extract.run_extract` with the bundle's extractors and settings;
* **predict**: :func:`stages.predict.run_predict` (the same extraction, then the heads, the
  ensemble's decisions and the CSV/Parquet/JSON writing);

and prints the frames/s of both and their ratio (target: close to 1, the heads and decisions add
little), best of ``--repeat`` runs, with the load average (a shared machine varies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cli.main import main  # noqa: E402


def setup(root: Path, clips: int, frames: int, model: str) -> tuple[Path, Path]:
    data, manifests, store = root / "data", root / "manifests", root / "store.zarr"
    steps = [
        ["demo-data", str(data), "--clips", str(clips), "--frames", str(frames), "--seed", "0"],
        ["manifest", str(data), "--out", str(manifests)],
        ["extract", "--manifests", str(manifests), "--store", str(store), "-e", "timm", "--set",
         f"configs.timm.model={model}", "-e", "tdnn", "--precision", "fp32"],
        ["fuse", "--method", "image", "--store", str(store), "--manifests", str(manifests),
         "--out", str(root / "runs"), "--set", "head.image=timm", "--set", "train.epochs=2"],
        ["fuse", "--method", "audio", "--store", str(store), "--manifests", str(manifests),
         "--out", str(root / "runs"), "--set", "train.epochs=2"],
        ["ensemble", str(root / "runs" / "image"), str(root / "runs" / "audio"), "--manifests",
         str(manifests), "--out", str(root / "scores"), "--tune-on", "same", "--bootstrap", "0"],
        ["bundle", str(root / "scores"), str(root / "runs" / "image"), str(root / "runs" / "audio"),
         "--out", str(root / "pipeline")],
    ]
    for step in steps:
        if main(step) != 0:
            raise SystemExit(f"setup failed at: {' '.join(step[:1])}")
    return data, root / "pipeline"


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--model", default="resnet18", help="timm model on the faces")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from pipeline.data.manifest import write_manifest
    from stages.extract import run_extract
    from stages.predict import Pipeline, crop_clip, extract_config, run_predict, video_for

    root = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        data, pipeline = setup(root, args.clips, args.frames, args.model)
        crops = sorted(p for p in (data / "cropped_aligned").iterdir() if p.is_dir())
        bundle = Pipeline.load(pipeline).bundle
        clips = [crop_clip(p.name, p, video_for(p.name, data / "videos"), 25.0) for p in crops]
        frames = sum(c.n_frames for c in clips)
        write_manifest(root / "m" / "test.jsonl", clips)
        best = {"extract": float("inf"), "predict": float("inf")}
        for attempt in range(args.repeat):
            store = root / f"x{attempt}.zarr"
            start = time.perf_counter()
            run_extract(extract_config(bundle, "inprocess"), root / "m", store)
            best["extract"] = min(best["extract"], time.perf_counter() - start)
            start = time.perf_counter()
            run_predict(crops, pipeline, root / f"p{attempt}", videos=data / "videos")
            best["predict"] = min(best["predict"], time.perf_counter() - start)
        load = os.getloadavg()[0]
        print(f"{len(clips)} clips, {frames} frames; faces model {args.model} + tdnn, heads image"
              f" + audio; load average {load:.2f}; best of {args.repeat}")
        for name, seconds in best.items():
            print(f"  {name:8s} {seconds:7.2f} s  {frames / seconds:8.1f} frames/s")
        print(f"  predict/extract frames/s ratio: {best['extract'] / best['predict']:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main_bench()
