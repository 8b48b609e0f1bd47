"""``fer-pipeline cv``: k-fold cross-validation of heads and their ensemble over all labelled clips.

The training and validation clips are pooled and split into k folds of whole videos (``_left`` and
``_right`` together), stratified by class (:func:`pipeline.training.folds.assign_folds`, seeded).
For each fold f:

* ``OUT/fold<f>/manifests/``: the other folds as ``train``, fold f as ``val`` (no test clips);
* ``OUT/fold<f>/runs/<method>/``: each head trained on the other folds, selecting on its own dev
  slice of them (``train.select_on``, as in ``fuse``), predicting fold f;
* ``OUT/fold<f>/ensemble/``: stage three on those runs, its choices cross-fitted inside fold f
  (the :class:`~pipeline.scoring.ensemble.EnsembleConfig` given; ``val-crossfit`` by default);
* ``OUT/fold<f>/result.json`` (written last): every row's macro-F1 on fold f.

``OUT/cv.json`` (atomic) holds the folds, every fold's rows and, per row, the mean and the sample
standard deviation (ddof 1) over the folds that have it. A row is a head's output as stage three
scores it alone (``<method>/<output>``), a combination, or a pipeline step (``ensemble+...``).

Folds run as tasks of the executor (``pipeline.parallel.open_executor``: in-process, a process
pool, dask). A rerun skips every fold whose ``result.json`` exists for the same plan (methods,
configs, folds, ensemble config), and resumes the others run by run (a finished run is not
retrained: the run directories' own completion rule); the cache of features is what makes each
fold cheap, only the light heads train.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import io
from pipeline.config import to_dict
from pipeline.data.manifest import Clip, load_clips, write_manifest
from pipeline.errors import PipelineError
from pipeline.fusion.config import FuseConfig
from pipeline.training.folds import assign_folds
from pipeline.parallel import open_executor
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.ensemble import EnsembleConfig


@dataclass
class CvResult:
    """What :func:`run_cv` produced (the CLI prints it)."""

    folds: list[dict]  # each fold's result.json
    summary: dict[str, dict]  # row -> {"mean", "std", "n", "per_fold"}
    final: str  # the name of the final row (the ensemble as stage three chose it)
    path: Path  # cv.json
    trained: int  # folds computed by this call (the others were complete)


def fold_clips(clips: Sequence[Clip], folds: np.ndarray, fold: int) -> list[Clip]:
    """The clips relabelled for fold ``fold``: its own clips ``val``, the others ``train``."""
    return [dataclasses.replace(c, split="val" if f == fold else "train")
            for c, f in zip(clips, folds)]


def _plan_key(configs: Sequence[FuseConfig], ensemble: EnsembleConfig, k: int, seed: int,
              clip_ids: Sequence[str]) -> str:
    plan = {"configs": [to_dict(c) for c in configs], "ensemble": to_dict(ensemble), "k": k,
            "seed": seed, "clips": list(clip_ids)}
    for config in plan["configs"]:
        config.pop("manifests", None)  # the fold's own manifests are part of the fold
        config["train"].pop("cache_mb", None)
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def run_fold(fold: int, fold_dir: Path, configs: Sequence[FuseConfig], ensemble: EnsembleConfig,
             key: str) -> dict:
    """Train every head on the other folds, ensemble them on this fold, write result.json.

    A top-level function, so that process pools and dask can run it; it prints nothing."""
    from stages.ensemble import run_ensemble
    from stages.fuse import fuse

    began = time.perf_counter()
    manifests = fold_dir / "manifests"
    runs = []
    for config in configs:
        config = dataclasses.replace(config, manifests=str(manifests.resolve()))
        runs.append(fuse(config, fold_dir / "runs", name=config.method))
    trained = time.perf_counter() - began
    rows: dict[str, float] = {}
    for run in runs:  # each output as written (argmax), in case the ensemble cannot run
        rows.update({f"{run.method}/{o}": f1 for o, f1 in run.val_macro_f1.items()})
    final, error = None, None
    try:
        result = run_ensemble([run.run_dir for run in runs], manifests, fold_dir / "ensemble",
                              ensemble)
        rows.update({row.name: row.scores.macro_f1 for row in result.rows})
        final = result.final.name
    except PipelineError as e:  # e.g. a fold of one video cannot be cross-fitted
        error = str(e)
    record = {
        "fold": fold, "plan": key, "rows": rows, "final": final, "ensemble_error": error,
        "val_clips": json.loads((fold_dir / "clips.json").read_text())["val"],
        "selected_on": {run.method: run.metrics.selected_on for run in runs},
        "seconds": {"train": trained, "total": time.perf_counter() - began},
    }
    io.write_json(fold_dir / "result.json", record)
    return record


def _done(fold_dir: Path, key: str) -> dict | None:
    path = fold_dir / "result.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("plan") == key else None


def summarise(records: Sequence[dict]) -> dict[str, dict]:
    """Per row: mean and sample standard deviation (ddof 1; 0 with one fold) over the folds."""
    names = [name for record in records for name in record["rows"]]
    out = {}
    for name in dict.fromkeys(names):
        values = [r["rows"][name] for r in records if name in r["rows"]]
        out[name] = {"mean": float(np.mean(values)),
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                     "n": len(values),
                     "per_fold": {r["fold"]: r["rows"].get(name) for r in records}}
    return out


def run_cv(configs: Sequence[FuseConfig], out: str | Path, k: int = 5, seed: int = 0,
           ensemble: EnsembleConfig | None = None, scheduler: str = "inprocess",
           progress: ProgressFn = silent) -> CvResult:
    """Cross-validate the heads of ``configs`` (one per method; store and manifests from the
    first) and their ensemble over k folds of all labelled clips; see the module docstring."""
    if not configs:
        raise PipelineError("cv: no method given")
    methods = [c.method for c in configs]
    if len(set(methods)) != len(methods):
        raise PipelineError(f"cv: method(s) given twice: {', '.join(sorted(methods))}")
    if any(c.bag.k for c in configs):
        raise PipelineError("cv: bagged heads (bag.k) are not cross-validated; drop --bag, or "
                            "--set bag.k=0 (the jeong2022 preset bags)")
    ensemble = ensemble or EnsembleConfig()
    store, manifests = Path(configs[0].store).resolve(), Path(configs[0].manifests)
    if not manifests.is_dir():
        raise PipelineError(f"{manifests}: no such manifest directory")
    try:
        clips = [c for c in load_clips(manifests) if c.split in ("train", "val")
                 and c.labels is not None]
    except ValueError as e:
        raise PipelineError(" ".join(str(e).split())) from None
    clips.sort(key=lambda c: c.clip_id)
    configs = [dataclasses.replace(c, store=str(store)) for c in configs]
    folds = assign_folds(clips, k, seed)
    key = _plan_key(configs, ensemble, k, seed, [c.clip_id for c in clips])
    out = Path(out)
    records: dict[int, dict] = {}
    pending = []
    for fold in range(k):
        fold_dir = out / f"fold{fold}"
        done = _done(fold_dir, key)
        if done is not None:
            records[fold] = done
            continue
        relabelled = fold_clips(clips, folds, fold)
        assignment = {split: [c.clip_id for c in relabelled if c.split == split]
                      for split in ("train", "val")}
        saved = fold_dir / "clips.json"
        if saved.exists() and json.loads(saved.read_text(encoding="utf-8")) != assignment:
            raise PipelineError(f"{fold_dir}: holds a fold of other clips (another --folds, "
                                "--fold-seed or manifests); use another --out")
        for split in ("train", "val", "test"):
            write_manifest(fold_dir / "manifests" / f"{split}.jsonl",
                           [c for c in relabelled if c.split == split])
        io.write_json(saved, assignment)
        pending.append((fold, fold_dir))
    progress(ProgressEvent("folds", advance=len(records), total=k))
    with open_executor(scheduler) as workers:
        futures = [(fold, workers.executor.submit(run_fold, fold, fold_dir, configs, ensemble, key))
                   for fold, fold_dir in pending]
        for fold, future in futures:
            records[fold] = future.result()
            progress(ProgressEvent("folds", advance=1, info={"fold": fold}))
    ordered = [records[f] for f in range(k)]
    summary = summarise(ordered)
    finals = {r["final"] for r in ordered if r["final"]}
    final = finals.pop() if len(finals) == 1 else "final"
    if final == "final":  # folds chose different final rows: summarise the chosen one per fold
        chosen = [{"fold": r["fold"], "rows": {"final": r["rows"][r["final"]]}}
                  for r in ordered if r["final"]]
        summary.update(summarise(chosen))
    path = out / "cv.json"
    io.write_json(path, {"k": k, "seed": seed, "methods": methods, "plan": key,
                         "clips": len(clips), "videos": len({c.video_id for c in clips}),
                         "fold_of_clip": {c.clip_id: int(f) for c, f in zip(clips, folds)},
                         "ensemble": to_dict(ensemble), "final": final, "folds": ordered,
                         "summary": summary}, indent=1)
    return CvResult(ordered, summary, final, path, len(pending))
