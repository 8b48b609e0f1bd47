"""Macro-F1 of fusion heads with and without modality dropout, on frames with and without a face.

Run on a demo with a fixed share of missing faces (prints a table, asserts nothing)::

    fer-pipeline demo-data W/data --clips 32 --frames 90 --missing-faces 0.3
    fer-pipeline manifest W/data --out W/manifests
    fer-pipeline extract --manifests W/manifests --store W/features.zarr -e swin -e logmel \\
        -e tdnn --precision auto --set configs.tdnn.mean_norm=none
    .venv/bin/python tests/bench/bench_missing_faces.py W [--epochs 10] [--dropout 0.3]

For each head (``mfm``, ``gated``, ``xattn``, ``tcn``; default configs but for ``DEMO_SETS``,
suited to the demo's short clips) and modality dropout
``0`` and ``--dropout`` (``modality_dropout_which = "either"``), one run trains on the training
split with the epoch selected on its dev slice (``train.select_on = "dev"``: nothing is fitted on
validation, so every row is "fitted on: train-dev"); runs already in ``W/runs-missing-faces``
are reused. Each run's primary output on the validation split, as written (``mfm``'s faceless
frames take the nearest face's prediction, the rule of heads with face outputs; the new heads
are run with both of their ``faceless`` rules: ``own``, they predict them themselves, and
``nearest``, mfm's rule; the two take the same gradient steps, but the epoch kept may differ,
since the dev slice scores the predictions as written), is scored on all labelled frames, on those with a face and on those
without, with clip-level bootstrap 95% intervals (:mod:`pipeline.scoring.bootstrap`, 1000
resamples, the same for every row). One seed per row: the intervals are over validation clips,
not over training seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.data.manifest import load_clips, task_clips
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.heads import head_class
from pipeline.fusion.train import train
from pipeline.scoring.bootstrap import clip_confusions, interval, resample_counts
from pipeline.runs.predictions import Predictions, face_mask_path, prediction_path

HEADS = ("mfm", "gated", "xattn", "tcn")
# The demo's clips are 90 frames: one 300-frame tcn window per clip would give an epoch of two
# steps, so the window heads take shorter windows and smaller batches here.
DEMO_SETS = {"xattn": ["train.batch_size=4"],
             "tcn": ["head.length=64", "head.train_stride=8", "head.eval_stride=32",
                     "train.batch_size=4"]}


def _cell(confusions: np.ndarray, counts: np.ndarray) -> str:
    i = interval(confusions, counts)
    return f"{i.estimate:.3f} [{i.low:.3f}, {i.high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="folder with manifests/ and features.zarr")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dropout", type=float, default=0.3, help="the modality dropout row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS,
                        help="a subset (e.g. to run two processes side by side)")
    args = parser.parse_args()
    store, manifests = args.work / "features.zarr", args.work / "manifests"
    runs = args.work / "runs-missing-faces"
    clips = load_clips(manifests)
    val = task_clips(clips, "expr", "val")
    counts = resample_counts([c.video_id for c in val], 1000, seed=0)
    rows = []
    for method in args.heads:
        for p, rule in [(p, rule) for rule in (("own", "nearest") if method != "mfm" else ("",))
                        for p in (0.0, args.dropout)]:
            name = f"{method}-md{p:g}" + (f"-{rule}" if rule == "nearest" else "")
            config = build_config(method, store, manifests, seed=args.seed, sets=[
                f"train.epochs={args.epochs}", f"head.modality_dropout={p}",
                *([f"head.faceless={rule}"] if rule else []), *DEMO_SETS.get(method, [])])
            train(config, runs / name, clips, FeatureStore(store))
            output = head_class(method).primary
            probs = Predictions(prediction_path(runs / name, "val", output))
            faces = Predictions(face_mask_path(runs / name, "val"))
            labels = [c.scoring_labels("expr").astype(np.int64) for c in val]
            predicted = [probs[c.clip_id].argmax(axis=1) for c in val]
            face = [faces[c.clip_id].astype(bool) for c in val]
            offsets = np.r_[0, np.cumsum([len(x) for x in labels])]
            y, yhat, f = np.concatenate(labels), np.concatenate(predicted), np.concatenate(face)
            cells = [_cell(clip_confusions(np.where(keep, y, -1), yhat, offsets), counts)
                     for keep in (np.ones_like(f), f, ~f)]
            rows.append((method, p, rule or "nearest", cells))
    labelled = y >= 0
    print(f"validation: {len(val)} clips, {int(labelled.sum())} labelled frames, "
          f"{int((labelled & ~f).sum())} of them without a face; fitted on: train-dev (dev "
          "slice of the training clips selects the epoch); macro-F1 [95% clip bootstrap]")
    print("| head | modality dropout | faceless frames | fitted on | all frames | with a face | "
          "without a face |")
    print("|---|---|---|---|---|---|---|")
    for method, p, rule, cells in rows:
        print(f"| `{method}` | {p:g} | {rule} | train-dev | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
