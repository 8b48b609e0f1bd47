"""Benchmark of ``fer-pipeline cv`` and ``fuse --bag`` on a real store (prints figures, asserts
nothing).

Run: ``.venv/bin/python tests/bench/bench_cv.py --store STORE --manifests DIR [--method mfm]
[--folds 5] [--epochs 5] [--bag 5]``, e.g. on the demo's store (``make demo`` writes one). Reports:

* the wall and CPU time of one training run of ``--method`` (on the training split, selecting on
  its dev slice) against ``--folds``-fold cross-validation of it with its ensemble, in process,
  and each fold's training time; then the CV table's mean +- std of the head's primary output;
* a bag of ``--bag`` ``image`` heads: the bag's val macro-F1 beside each member's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.fusion.config import build_config
from stages.cv import run_cv
from stages.fuse import fuse


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--manifests", required=True)
    parser.add_argument("--method", default="mfm")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--bag", type=int, default=5)
    args = parser.parse_args()
    sets = [f"train.epochs={args.epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        config = build_config(args.method, args.store, args.manifests, sets=sets)
        wall, cpu, one = _timed(lambda: fuse(config, Path(tmp) / "runs"))
        print(f"one {args.method} run ({args.epochs} epochs): {wall:.1f} s wall, {cpu:.1f} s CPU;"
              f" val macro-F1 {one.val_macro_f1[one.primary]:.4f}")
        wall_cv, cpu_cv, cv = _timed(lambda: run_cv([config], Path(tmp) / "cv", args.folds))
        print(f"{args.folds}-fold cv of {args.method} + ensemble: {wall_cv:.1f} s wall, "
              f"{cpu_cv:.1f} s CPU ({wall_cv / wall:.1f}x one run)")
        for record in cv.folds:
            print(f"  fold {record['fold']}: {len(record['val_clips'])} clip(s) scored, training "
                  f"{record['seconds']['train']:.1f} s, all {record['seconds']['total']:.1f} s")
        for name in (f"{args.method}/{one.primary}", cv.final):
            stats = cv.summary.get(name)
            if stats:
                print(f"  {name}: {stats['mean']:.4f} +- {stats['std']:.4f} over {stats['n']}"
                      " folds")
        if args.bag:
            bag_config = build_config("image", args.store, args.manifests,
                                      sets=[*sets, f"bag.k={args.bag}"])
            wall_bag, _, bag = _timed(lambda: fuse(bag_config, Path(tmp) / "runs", name="bag"))
            members = [m["val_macro_f1"]["main"] for m in bag.metrics.bag["members"]]
            print(f"bag of {args.bag} image heads: val macro-F1 {bag.val_macro_f1['main']:.4f}"
                  f" ({wall_bag:.1f} s); members " + ", ".join(f"{f:.4f}" for f in members)
                  + f" (mean {sum(members) / len(members):.4f})")


if __name__ == "__main__":
    main()
