"""How much a head's result depends on the feature precision and the seed, with and without the
weights' moving average (``train.ema_epochs``; prints a table, asserts nothing).

Needs the demo's store and a copy of it extracted in fp32 (the same manifests)::

    make demo                                   # work/demo: bf16 where the CPU has it
    mkdir -p work/demo-fp32 && cp -r work/demo/manifests work/demo-fp32/
    .venv/bin/fer-pipeline extract --manifests work/demo-fp32/manifests \\
        --store work/demo-fp32/features.zarr -e swin -e logmel -e tdnn --precision fp32
    OMP_NUM_THREADS=1 .venv/bin/python tests/bench/bench_averaging.py work/demo work/demo-fp32 \\
        [--methods mfm,sequence,proportional] [--seeds 0-7] [--horizons 0,1]

For every method, seed and horizon it runs ``fer-pipeline fuse --seed S --set
train.ema_epochs=E`` on both stores (run directories under ``--out``, default
``work/bench-averaging``; finished runs are reused), and prints per method and horizon: the mean
validation macro-F1 of the primary output on each store, the worst run, the median and largest
gap between the two stores' macro-F1, and the median and largest share of validation frames
whose decision (argmax) differs between the two stores' runs. docs/stability.md's table ("A final
row that does not flip") was made with ``--seeds 0-7`` for ``mfm`` and ``0-5`` for the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.runs.predictions import Predictions, prediction_path
from pipeline.runs.record import read_record


def _seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def fuse(demo: Path, method: str, seed: int, horizon: float, out: Path) -> Path:
    """The run directory of one fuse run (made unless it is there, finished)."""
    run_dir = out / f"{method}-s{seed}-ema{horizon:g}"
    if not (run_dir / method / "metrics.json").is_file():
        subprocess.run([str(Path(sys.executable).parent / "fer-pipeline"), "fuse", "--method",
                        method, "--store", str(demo / "features.zarr"), "--manifests",
                        str(demo / "manifests"), "--out", str(run_dir), "--seed", str(seed),
                        "--set", f"train.ema_epochs={horizon}", "--restart"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run_dir / method


def outcome(run: Path) -> tuple[float, np.ndarray]:
    """Validation macro-F1 of the primary output and its decisions, clips in name order."""
    record = read_record(run)
    predictions = dict(Predictions(prediction_path(run, "val", record.primary)))
    decisions = np.concatenate([predictions[c].argmax(-1) for c in sorted(predictions)])
    return record.val_macro_f1[record.primary], decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("demo_fp32", type=Path)
    parser.add_argument("--methods", default="mfm,sequence,proportional")
    parser.add_argument("--seeds", default="0-5")
    parser.add_argument("--horizons", default="0,1")
    parser.add_argument("--out", type=Path, default=Path("work/bench-averaging"))
    args = parser.parse_args()
    print("| head | ema_epochs | seeds | mean F1 (first / second store) | worst run |"
          " F1 gap: median / largest | decisions changed: median / most |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in args.methods.split(","):
        for horizon in (float(h) for h in args.horizons.split(",")):
            f1s, gaps, changed = [[], []], [], []
            for seed in _seeds(args.seeds):
                (f1_a, dec_a), (f1_b, dec_b) = (
                    outcome(fuse(demo, method, seed, horizon, args.out / demo.name))
                    for demo in (args.demo, args.demo_fp32))
                f1s[0].append(f1_a)
                f1s[1].append(f1_b)
                gaps.append(abs(f1_a - f1_b))
                changed.append(float((dec_a != dec_b).mean()))
            worst = min(min(f1s[0]), min(f1s[1]))
            print(f"| {method} | {horizon:g} | {args.seeds} | {np.mean(f1s[0]):.3f} /"
                  f" {np.mean(f1s[1]):.3f} | {worst:.3f} | {np.median(gaps):.3f} /"
                  f" {max(gaps):.3f} | {np.median(changed):.1%} / {max(changed):.1%} |")


if __name__ == "__main__":
    main()
