"""Every recipe at ``--scale demo`` on the geometry demo: the fine-tuned chain beside the frozen
random chain (issue 33's "Measured").

For each recipe (``fer-pipeline recipe NAME --scale demo --allow-random-weights``, its own
manifests, fine-tunes, extract, fuse and ensemble) and its frozen random chain (the recipe's own
extract command without any ``--weights`` but the demo's audio stand-in's (random weights already:
the same random encoder in both chains), into another store, then the same fuse, less
jeong2022's ``head.init_from`` (no fine-tuned heads there), and ensemble commands on it): the final ensemble's val macro-F1 with its 95% bootstrap interval over clips
(``scores.json``), the precision the features were stored in, and the wall time of every step.
All recipes read the same data (``demo-data --face-cue geometry``: the face's cue is the mouth's
shape, which a random network's features cannot read; the audio cue is there too).

Usage (from the repo root, PYTHONPATH set)::

    python tests/bench/bench_recipes.py WORK [--recipes kim2023 jeong2022 ...]
        [--clips 16] [--frames 48]

Prints a markdown table and writes it to ``WORK/table.md``. Finished steps are skipped (the
recipe's markers; the frozen chain's outputs): rerun to resume. The wall times of a resumed step
are the ones recorded when it ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.recipes import RECIPES, recipe, render  # noqa: E402
from stages.recipe import run_recipe  # noqa: E402


def fer(args: list[str], log: Path) -> float:
    """Run one stage command (output appended to ``log``); its wall seconds."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ fer-pipeline {' '.join(args)}\n")
        out.flush()
        subprocess.run([sys.executable, "-m", "cli.main", *args], check=True, cwd=ROOT,
                       stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def without_weights(args: list[str], keep: str = "\0") -> list[str]:
    """An extract command with every ``--weights KEY=PATH`` dropped (random backbones) but those
    whose PATH starts with ``keep`` (the stand-in folders: random weights themselves)."""
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a == "--weights" and not args[i + 1].partition("=")[2].startswith(keep):
            skip = True
        else:
            out.append(a)
    return out


def without_init_from(args: list[str]) -> list[str]:
    """A fuse command with ``--set head.init_from=...`` dropped: the frozen chain has no
    fine-tuned heads (its store is not extracted with the fine-tune's folder: fuse refuses)."""
    out: list[str] = []
    for a in args:
        if a.startswith("head.init_from=") and out and out[-1] == "--set":
            out.pop()
        else:
            out.append(a)
    return out


def replaced(args: list[str], old: str, new: str) -> list[str]:
    return [a.replace(old, new) for a in args]


def final_score(scores: Path) -> dict:
    data = json.loads(scores.read_text())
    ci = data.get("macro_f1_ci") or {}
    low, high = ci.get("low", float("nan")), ci.get("high", float("nan"))
    return {"f1": data["macro_f1"], "low": low, "high": high,
            "precision": data.get("feature_precision"), "frames": data.get("n_frames")}


def tuned_chain(name: str, data: Path, work: Path, log: Path) -> dict[str, float]:
    """Run (or resume) the recipe; each step's wall seconds (recorded in its marker)."""
    with log.open("a") as out:
        run_recipe(name, data, work, scale="demo", allow_random_weights=True,
                   echo=lambda line: out.write(line + "\n"))
    times = {}
    for step in RECIPES[name].steps:
        marker = json.loads((work / "recipe" / f"{step.id}.json").read_text())
        times[step.id] = marker.get("seconds", float("nan"))
    return times


def frozen_chain(name: str, data: Path, work: Path, frozen: Path, log: Path) -> dict[str, float]:
    """The recipe's extract without weights, then its fuse and ensemble, into ``frozen``."""
    steps = {s.id: a for s, a, _ in render(recipe(name), str(data), str(work), "demo", {}, True)}
    times = {}
    store, runs, scores = (str(work / "features.zarr"), str(work / "runs"), str(work / "scores"))
    new = {store: str(frozen / "features.zarr"), runs: str(frozen / "runs"),
           scores: str(frozen / "scores")}
    for step_id, args in steps.items():
        if step_id == "manifest" or step_id.startswith(("finetune", "stand-in")):
            continue  # a stand-in's folder is the tuned chain's (random weights: kept)
        if step_id == "extract":
            args = without_weights(args, keep=str(work / "stand_ins"))
        if step_id.startswith("fuse"):
            args = without_init_from(args)
        for old, to in new.items():
            args = replaced(args, old, to)
        done = {"extract": frozen / "features.zarr" / "zarr.json",
                "ensemble": frozen / "scores" / "scores.json"}.get(
            step_id, frozen / "runs" / step_id.removeprefix("fuse-") / "metrics.json")
        timing = frozen / "timing.json"
        recorded = json.loads(timing.read_text()) if timing.exists() else {}
        if done.exists() and step_id in recorded:
            times[step_id] = recorded[step_id]
            continue
        times[step_id] = fer(args, log)
        timing.parent.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({**recorded, step_id: times[step_id]}))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=48)
    a = parser.parse_args()
    work = a.work.resolve()
    data, log = work / "data", work / "log.txt"
    work.mkdir(parents=True, exist_ok=True)
    if not (data / "demo.json").exists():
        fer(["demo-data", str(data), "--clips", str(a.clips), "--frames", str(a.frames),
             "--face-cue", "geometry"], log)
    rows = ["| recipe | fine-tuned macro-F1 [95% CI] | frozen random macro-F1 [95% CI] | "
            "precision | frames | steps, fine-tuned (s) | steps, frozen (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in a.recipes:
        try:
            tuned = tuned_chain(name, data, work / name / "tuned", log)
            frozen = frozen_chain(name, data, work / name / "tuned", work / name / "frozen", log)
        except (PipelineError, subprocess.CalledProcessError) as e:  # the others still run
            rows.append(f"| {name} | failed: {' '.join(str(e).split())[:200]} | | | | | |")
            print(rows[-1], flush=True)
            continue
        t = final_score(work / name / "tuned" / "scores" / "scores.json")
        f = final_score(work / name / "frozen" / "scores" / "scores.json")
        rows.append(
            f"| {name} | {t['f1']:.4f} [{t['low']:.3f}-{t['high']:.3f}] | "
            f"{f['f1']:.4f} [{f['low']:.3f}-{f['high']:.3f}] | {t['precision']} | {t['frames']} | "
            + ", ".join(f"{k} {v:.1f}" for k, v in tuned.items()) + " | "
            + ", ".join(f"{k} {v:.1f}" for k, v in frozen.items()) + " |")
        print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    (work / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
