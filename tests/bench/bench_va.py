"""Valence-arousal on the demo: VA mean CCC per head and for the ensemble, with CIs, and the cost
of adding VA to a multi-task run (prints figures, asserts nothing).

Run, after the demo's data, manifests and store exist (``make demo-data manifests features``, or
the same commands with other paths)::

    PYTHONPATH=. .venv/bin/python tests/bench/bench_va.py --store work/demo/features.zarr \\
        --manifests work/demo/manifests --out /tmp/bench-va

It trains, with the fuse defaults otherwise:

* ``sequence`` with head.tasks [expr], [expr, va] (epoch selected by expression macro-F1, and by
  VA mean CCC), [expr, au] and [expr, au, va], and ``image``, ``audio``, ``mfm``, ``gated``,
  ``xattn`` and ``tcn`` with [expr] and [expr, va] (selected by expression macro-F1, and by VA
  mean CCC): seconds per run and per epoch (wall and CPU), epochs run and the expression macro-F1
  on val, so the cost of adding VA shows beside EXPR alone (per epoch: runs stop at different
  epochs) and beside EXPR + AU; ``--only METHOD`` (repeatable) runs those heads alone;
* then stage three on the VA heads: CCC (valence, arousal, mean) per member, the members' mean
  and the cross-fitted weighted mean, with clip-bootstrap 95% intervals, and the ABAW multi-task
  score when a member has all three tasks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.data.manifest import SPLITS, load_clips
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.train import train
from pipeline.scoring.ensemble import EnsembleConfig
from stages.ensemble import run_ensemble

RUNS = (("sequence", ("expr",), "expr"), ("sequence", ("expr", "va"), "expr"),
        ("sequence", ("expr", "va"), "va"), ("sequence", ("expr", "au"), "expr"),
        ("sequence", ("expr", "au", "va"), "expr"),
        *((method, tasks, select) for method in ("image", "audio", "mfm", "gated", "xattn", "tcn")
          for tasks, select in ((("expr",), "expr"), (("expr", "va"), "expr"),
                                (("expr", "va"), "va"))))  # (method, head.tasks, select_task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], help="extra fuse key=value")
    parser.add_argument("--only", action="append", default=[], help="run only these methods")
    args = parser.parse_args()
    clips = load_clips(args.manifests, SPLITS, au_only=True)
    store = FeatureStore(args.store)
    va_runs = []
    print("method    tasks       select  wall s   cpu s  epochs  wall s/ep  cpu s/ep  "
          "val macro-F1   val VA mean CCC")
    for method, tasks, select in RUNS:
        if args.only and method not in args.only:
            continue
        name = f"{method}-{'-'.join(tasks)}-by-{select}"
        sets = [f"head.tasks={json.dumps(list(tasks))}", f"train.select_task={select}",
                *args.set]
        config = build_config(method, args.store, args.manifests, sets=sets)
        wall, cpu = time.perf_counter(), time.process_time()
        result = train(config, args.out / name, clips, store, restart=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        f1 = result.val_macro_f1.get(result.primary, float("nan"))
        va = result.val_va["mean_ccc"] if result.val_va else None
        epochs = max(result.epochs_run, 1)
        print(f"{method:9s} {'+'.join(tasks):11s} {select:6s} {wall:7.1f} {cpu:7.1f} "
              f"{result.epochs_run:6d} {wall / epochs:9.2f} {cpu / epochs:9.2f}   {f1:.4f}"
              f"         {'-' if va is None else f'{va:.4f}'}", flush=True)
        if "va" in tasks:
            va_runs.append(args.out / name)
    ensemble = run_ensemble(va_runs, args.manifests, args.out / "scores",
                            EnsembleConfig(bootstrap=2000))
    print(f"\nVA on {ensemble.va.split} (CCC, 95% clip-bootstrap intervals):")
    for row in ensemble.va.rows:
        ci = row.intervals
        print(f"  {row.name:32s} valence {row.scores.ccc_valence:.3f} "
              f"[{ci['valence'].low:.3f}, {ci['valence'].high:.3f}]  arousal "
              f"{row.scores.ccc_arousal:.3f} [{ci['arousal'].low:.3f}, {ci['arousal'].high:.3f}]"
              f"  mean {row.scores.mean_ccc:.3f} [{ci['mean'].low:.3f}, {ci['mean'].high:.3f}]")
    scores = json.loads(ensemble.scores_path.read_text())
    if "abaw_multitask" in scores:
        print(f"ABAW multi-task score of the ensemble (EXPR F1 + AU F1 + VA mean CCC): "
              f"{scores['abaw_multitask']:.4f}")


if __name__ == "__main__":
    main()
