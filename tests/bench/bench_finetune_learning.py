"""Does ``finetune`` learn what a plain loop learns? (issue 32) On the geometry demo (``demo-data
--face-cue geometry``: the face's cue is the mouth's shape, which a random network's features
cannot read), for each timm model: the image head's val macro-F1 (95% bootstrap interval over
val videos, from ``fer-pipeline ensemble``) on frozen random features, on ``finetune``'s
features, and on the features of the plain reference loop (:mod:`tests.finetune.plain_loop`: the
same training clips, network and seed; no balancing, no clipping, last epoch), with each
training's wall time.

Usage (from the repo root, PYTHONPATH set)::

    python tests/bench/bench_finetune_learning.py WORK [--models test_resnet resnet10t resnet18]
        [--clips 16] [--frames 100] [--size 48] [--epochs 12] [--threads 1]

The defaults are the sizes docs/finetune-learning.md reports (about 15 minutes on a shared
2-core CPU for the three models).

Prints a markdown table and writes it to ``WORK/table.md``. Every step is skipped when its
output exists (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.features.weights_record import WeightsRecord, write_weights_folder  # noqa: E402
from pipeline.features.extractors.timm_models import timm_probe  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from pipeline.finetune.split import dev_split  # noqa: E402
from tests.finetune import plain_loop  # noqa: E402


def fer(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def finetune_sets(a: argparse.Namespace) -> list[str]:
    # the plain loop's settings where finetune has them (lr, batch, no augmentation), and early
    # stopping that waits (min_epochs) on a dev slice of two videos or more
    return [f"epochs={a.epochs}", "patience=3", f"min_epochs={min(4, a.epochs)}", "lr=1e-3",
            "head_lr=1e-3", "batch_size=32", "augment.enabled=false", "dev_min_videos=2",
            f"threads={a.threads}"]


def plain(a: argparse.Namespace, model: str, manifests: Path, out: Path) -> float:
    """Train the plain loop and write its backbone as a weights folder at the crops' own size."""
    config = build_config(manifests, model=model, sets=finetune_sets(a))
    train, dev, _ = dev_split(config)
    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    net, history = plain_loop.train(train, model=model, epochs=a.epochs)
    seconds = time.perf_counter() - started
    data = timm_probe(model).data_config
    record = WeightsRecord(
        family="timm", model=model, weights_sha256="", manifest_fingerprint="plain loop",
        preprocessing={"input_size": [3, a.size, a.size], "mean": list(data["mean"]),
                       "std": list(data["std"]), "crop_pct": 1.0, "interpolation": "bilinear"},
        clips={"train": [c.clip_id for c in train], "dev": []}, config={"plain_loop": True},
        selected_on="last epoch", selection_score=0.0, epoch=a.epochs, epochs_run=a.epochs,
        initial_weights=None, initial_weights_sha256=None)
    state = {k: v.detach().contiguous() for k, v in net[0].state_dict().items()}
    write_weights_folder(out, state, record)
    (out.parent / "plain-history.json").write_text(json.dumps({"epochs": history, "seconds": seconds}))
    return seconds


def score(scores: Path) -> str:
    rows = json.loads((scores / "scores.json").read_text())["rows"]
    row = next(r for r in rows if r["name"] == "image/main")
    ci = row.get("macro_f1_ci") or {}
    return f"{row['macro_f1']:.3f} [{ci.get('low', float('nan')):.3f}, {ci.get('high', float('nan')):.3f}]"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("--models", nargs="+", default=["test_resnet", "resnet10t", "resnet18"])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    work = a.work.resolve()
    data, manifests = work / "data", work / "manifests"
    if not manifests.exists():
        fer("demo-data", str(data), "--clips", str(a.clips), "--frames", str(a.frames), "--size",
            str(a.size), "--seed", "0", "--face-cue", "geometry")
        fer("manifest", str(data), "--out", str(manifests))
    lines = ["| model | image head, frozen random | image head, finetune | finetune time (epochs) "
             "| image head, plain loop | plain loop time |", "| --- | --- | --- | --- | --- | --- |"]
    for model in a.models:
        w = work / model
        weights = {"tuned": w / "weights", "plain": w / "plain"}
        if not (weights["tuned"] / "finetune.json").exists():
            sets = [x for s in finetune_sets(a) for x in ("--set", s)]
            fer("finetune", "--manifests", str(manifests), "--out", str(weights["tuned"]),
                "--model", model, *sets)
        if not (weights["plain"] / "finetune.json").exists():
            plain(a, model, manifests, weights["plain"])
        for kind in ("frozen", "tuned", "plain"):
            store, runs, scores = w / f"{kind}.zarr", w / f"runs-{kind}", w / f"scores-{kind}"
            if not (scores / "scores.json").exists():
                extra = [] if kind == "frozen" else ["--weights", f"timm={weights[kind]}"]
                fer("extract", "--manifests", str(manifests), "--store", str(store), "-e", "timm",
                    "--set", f"configs.timm.model={model}", "--precision", "fp32", *extra)
                fer("fuse", "--method", "image", "--set", "head.image=timm", "--store", str(store),
                    "--manifests", str(manifests), "--out", str(runs))
                fer("ensemble", str(runs / "image"), "--manifests", str(manifests), "--tune-on", "same", "--out",
                    str(scores))
        history = json.loads((w / "weights.train" / "history.json").read_text())
        plain_seconds = json.loads((w / "plain-history.json").read_text())["seconds"]
        lines.append(f"| {model} | {score(w / 'scores-frozen')} | {score(w / 'scores-tuned')} | "
                     f"{history['seconds']:.0f} s ({len(history['epochs'])}) | "
                     f"{score(w / 'scores-plain')} | {plain_seconds:.0f} s ({a.epochs}) |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    (work / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
