"""Writing a pipeline bundle from an ensemble's output folder and its run directories.

``build_bundle(sources, out)``: ``sources`` are one ``ensemble`` output folder (``scores.json``)
and the run directories of its members, or a single run directory (then the bundle applies that
run's primary output alone, with no post-processing). What ``bundle.json`` holds:

* ``members``: ``<run>/<output>`` in the ensemble's order, each with its head's folder;
* ``decisions``: the ensemble's test fit (``scores.json``'s ``tuning.test.choices``: fitted on all
  of the tuning split, the pipeline that wrote ``submission.txt``): one weight per member (every
  combiner applies a weighted mean), fill, smoothing and window, biases, the fallback threshold
  and the steps applied;
* ``arrays``: store array -> cache key, the same for every member (members that read one array
  with different keys, i.e. from different extractions, are refused);
* ``extractors``: each extractor that wrote one of those arrays, as the store describes it
  (config, precision, cache key, outputs), its weights copied into ``extractors/<name>/`` with
  their sha256 (checked against the store's record), or ``random_weights`` with the seed;
  ``extract``: the batch size and audio stride the store was computed with;
* ``faces``: the face step's settings (detector, its weights' id, size, margin, ...) when the
  training crops were written by ``fer-pipeline faces``; else null (crops came from elsewhere);
* ``classes``, ``au_names``, ``card``: the model card's facts (also as ``MODEL_CARD.md``).
"""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path
from typing import Sequence

from pipeline import __version__
from pipeline.bundle.format import (
    BUNDLE_JSON,
    FORMAT,
    MODEL_CARD,
    BundleError,
    publish,
    read_json,
    sha256_file,
    staging_folder,
    version_for,
    write_manifest,
)
from pipeline.bundle.heads import write_head
from pipeline.bundle.va import va_decisions
from pipeline.data.labels import AU_NAMES, CLASSES
from pipeline.data.manifest import load_clips
from pipeline.features.store import FeatureStore
from pipeline.runs.record import read_run


def _sources(paths: Sequence[Path]) -> tuple[dict | None, Path | None, dict[str, Path]]:
    scores, scores_dir, runs = None, None, {}
    for path in map(Path, paths):
        if (path / "scores.json").is_file():
            if scores is not None:
                raise BundleError(f"{path}: a second ensemble folder (give one, with its runs)")
            scores, scores_dir = read_json(path / "scores.json"), path
        elif (path / "metrics.json").is_file():
            if path.name in runs:
                raise BundleError(f"{path}: same run name as {runs[path.name]}")
            runs[path.name] = path
        else:
            raise BundleError(f"{path}: neither an ensemble folder (scores.json) nor a finished"
                              " run directory (metrics.json)")
    return scores, scores_dir, runs


def _decisions(scores: dict | None, scores_dir: Path | None, runs: dict[str, Path]
               ) -> tuple[list[str], dict]:
    """(member names, the fitted decisions) of the ensemble, or of a single run."""
    if scores is None:
        if len(runs) != 1:
            raise BundleError("several run directories and no ensemble folder: give the"
                              " `ensemble` output folder that combines them")
        name, path = next(iter(runs.items()))
        member = f"{name}/{read_run(path).record.primary}"
        return [member], {"combiner": member, "rule": "member", "weights": [1.0], "fill": "none",
                          "smooth": "none", "window": 1, "bias": [0.0] * len(CLASSES),
                          "fallback_threshold": None, "steps": []}
    members = list(scores.get("members") or [])
    test = (scores.get("tuning") or {}).get("test")
    if not members or not isinstance(test, dict):
        raise BundleError(f"{scores_dir / 'scores.json'}: no test fit (the ensemble wrote no"
                          " submission: its manifests had no test clips or a member no test"
                          " predictions), so there are no final decisions to apply")
    missing = sorted({m.split("/")[0] for m in members} - set(runs))
    if missing:
        raise BundleError(f"{scores_dir}: member run {missing[0]!r} not given (pass its run"
                          " directory too)")
    extra = sorted(set(runs) - {m.split("/")[0] for m in members})
    if extra:
        raise BundleError(f"{runs[extra[0]]}: not a member of {scores_dir}")
    choices = test["choices"]
    weights = choices.get("weights") or {}
    if set(weights) != set(members):
        raise BundleError(f"{scores_dir / 'scores.json'}: the test fit has no weight per member"
                          f" (rule {choices.get('rule')!r}); this rule cannot be bundled")
    return members, {
        "combiner": choices["combiner"], "rule": choices["rule"], "params": choices.get("params"),
        "weights": [float(weights[m]) for m in members], "fill": choices["fill"],
        "smooth": choices["smooth"], "window": int(choices["window"]),
        "bias": [float(choices["bias"][c]) for c in CLASSES],
        "fallback_threshold": choices.get("fallback_threshold"),
        "steps": list(choices["steps"]),
    }


def _arrays(runs: dict[str, Path]) -> tuple[dict[str, str], list[Path]]:
    """The arrays every member reads with their cache keys (refusing disagreement), and the
    stores the members were trained on."""
    arrays: dict[str, tuple[str, str]] = {}
    stores: list[Path] = []
    for name, path in runs.items():
        record = read_run(path).record
        if record.bag:
            raise BundleError(f"{path}: a bag of runs; bundling bags is not supported yet")
        for array, key in record.features.items():
            if array in arrays and arrays[array][0] != key:
                raise BundleError(f"{path}: reads {array} with cache key {key}, but"
                                  f" {arrays[array][1]} read it with {arrays[array][0]} (the"
                                  " members come from different extractions)")
            arrays[array] = (key, name)
        store = _run_config(path).get("store")
        if store and Path(store) not in stores:
            stores.append(Path(store))
    return {a: k for a, (k, _) in sorted(arrays.items())}, stores


def _run_config(path: Path) -> dict:
    from pipeline.config import read_toml

    try:
        return read_toml(path / "config.toml")
    except (OSError, ValueError) as e:
        raise BundleError(f"{path / 'config.toml'}: cannot read ({e})") from None


def _extractors(arrays: dict[str, str], stores: list[Path], staging: Path) -> tuple[dict, dict]:
    """The extractors that wrote ``arrays`` (copied weights included) and the extraction
    settings (seed, batch size, audio stride)."""
    found: dict[str, dict] = {}
    settings: dict = {}
    for store_path in stores:
        if not store_path.exists():
            raise BundleError(f"{store_path}: the members' feature store is gone (the bundle"
                              " needs its record of the extractors)")
        described = FeatureStore(store_path).extractors()
        for name, entry in described.items():
            outputs = set(entry.get("outputs") or {})
            keys = entry.get("array_keys") or {}
            if any(a in arrays and arrays[a] in (entry.get("cache_key"), keys.get(a))
                   for a in outputs):
                found.setdefault(name, entry)
        reports = sorted(glob.glob(str(store_path) + ".meta/reports/extract-*.json"))
        if reports and not settings:
            config = read_json(Path(reports[-1])).get("config", {})
            settings = {k: config[k] for k in ("seed", "batch_size", "audio_stride") if k in config}
    missing = [a for a in arrays if a != "valid" and not any(
        a in (e.get("outputs") or {}) for e in found.values())]
    if missing:
        raise BundleError(f"{stores[0]}: no extractor recorded for array {missing[0]!r} with the"
                          " members' cache key (re-extract, or the store was replaced)")
    extractors = {}
    for name, entry in found.items():
        record = {k: entry.get(k) for k in ("kind", "config", "precision", "cache_key",
                                            "outputs", "random_weights", "audio_stride",
                                            "array_keys", "weights_sha256")}
        record["weights"] = None
        source = entry.get("weights")
        if source:
            source = Path(source)
            target = staging / "extractors" / name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=False)
            elif source.is_file():
                shutil.copyfile(source, target)
                if entry.get("weights_sha256") and sha256_file(target) != entry["weights_sha256"]:
                    raise BundleError(f"{source}: sha256 differs from the store's record (the"
                                      " weights file changed since extraction)")
            else:
                raise BundleError(f"{source}: extractor {name}'s weights are gone")
            record["weights"] = target.relative_to(staging).as_posix()
        extractors[name] = record
    return extractors, settings


def face_step(runs: dict[str, Path]) -> dict | None:
    """The face step's settings when the training crops were written by ``faces``."""
    manifests = _run_config(next(iter(runs.values()))).get("manifests")
    try:
        clips = load_clips(manifests, ["train"]) if manifests else []
    except (FileNotFoundError, ValueError):
        return None
    for clip in clips[:1]:
        if clip.frames_dir:
            root = Path(clip.frames_dir).parent.parent
            record = root / "faces" / f"{clip.video_id}.json"
            if record.is_file():
                key = read_json(record).get("key") or {}
                return {"settings": key.get("settings"), "weights": key.get("weights"),
                        "source": str(record)}
    return None


def build_bundle(sources: Sequence[str | Path], out: str | Path) -> Path:
    """Write the pipeline folder ``out`` from an ensemble folder and its runs (or one run)."""
    out = Path(out)
    scores, scores_dir, runs = _sources([Path(s) for s in sources])
    members, decisions = _decisions(scores, scores_dir, runs)
    arrays, stores = _arrays(runs)
    staging = staging_folder(out)
    try:
        extractors, settings = _extractors(arrays, stores, staging)
        heads = {}
        for name, path in runs.items():
            config = write_head(path, staging / "heads" / name)
            heads[name] = {"method": config["method"], "folder": f"heads/{name}"}
        au_runs = [n for n, p in runs.items() if read_run(p).record.au_outputs]
        va_runs = [n for n, p in runs.items() if read_run(p).record.va_outputs]
        card = _card(scores, runs, members, extractors)
        record = {
            "format": FORMAT, "format_version": 1,  # raised below where the record needs it
            "written_by": f"fer-pipeline {__version__}",
            "classes": list(CLASSES), "au_names": list(AU_NAMES),
            "members": members, "heads": heads, "decisions": decisions,
            "face_members": [m for m in members if m.split("/")[1]
                             in read_run(runs[m.split("/")[0]]).record.face_outputs],
            "au_heads": [f"{n}/{read_run(runs[n]).record.au_outputs[0]}" for n in au_runs],
            "arrays": arrays, "extractors": extractors, "extract": settings,
            "faces": face_step(runs), "card": card,
        }
        if va_runs:  # absent without VA heads: other bundles are written as before
            record["va_heads"] = [f"{n}/{read_run(runs[n]).record.va_outputs[0]}"
                                  for n in va_runs]
            decided = va_decisions(scores, record["va_heads"], scores_dir)
            if decided is not None:  # stage three's VA weights and smoothing (pipeline.bundle.va)
                record["va_decisions"] = decided
        record["format_version"] = version_for(record)
        (staging / BUNDLE_JSON).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        (staging / MODEL_CARD).write_text(model_card(record), encoding="utf-8")
        write_manifest(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish(staging, out)


def _card(scores: dict | None, runs: dict[str, Path], members: list[str], extractors: dict) -> dict:
    random = sorted(n for n, e in extractors.items() if e.get("random_weights"))
    card = {"members": members, "random_backbones": random,
            "manifests": _run_config(next(iter(runs.values()))).get("manifests")}
    if scores is None:
        record = read_run(next(iter(runs.values()))).record
        card.update({"val_macro_f1": record.val_macro_f1.get(record.primary), "ci": None,
                     "selected": f"a single run, epoch {record.best_epoch} selected on"
                                 f" {record.selected_on}", "precision": None,
                     "manifest_fingerprint": record.manifest_fingerprint})
        return card
    tuning = scores.get("tuning") or {}
    card.update({
        "val_macro_f1": scores.get("macro_f1"), "ci": scores.get("macro_f1_ci"),
        "scored_split": scores.get("split"), "n_frames": scores.get("n_frames"),
        "final": scores.get("final"), "best_member": scores.get("best_member"),
        "selected": f"protocol {tuning.get('protocol')}; decisions applied to new videos fitted"
                    f" on all of {(tuning.get('test') or {}).get('tuning_split')}"
                    f" ({len((tuning.get('test') or {}).get('tuning_clips') or [])} clips);"
                    f" selection {((tuning.get('test') or {}).get('selection') or {}).get('kept')}",
        "tuned_on_scored_frames": tuning.get("tuned_on_scored_frames"),
        "precision": scores.get("feature_precision"),
        "manifest_fingerprint": scores.get("manifest_fingerprint"),
    })
    return card


def model_card(record: dict) -> str:
    """MODEL_CARD.md from ``bundle.json``'s facts."""
    card, decisions = record["card"], record["decisions"]
    ci = card.get("ci") or {}
    lines = ["# Model card", ""]
    if card["random_backbones"]:
        lines += [f"**WARNING: RANDOM WEIGHTS. The backbone(s) {', '.join(card['random_backbones'])}"
                  " ran with seeded random weights, not a trained model: these predictions"
                  " are not those of a trained expression recogniser.**", ""]
    if card.get("tuned_on_scored_frames"):
        lines += ["**WARNING: tuned on the scored frames (--tune-on same): the score below is"
                  " optimistic.**", ""]
    score = card.get("val_macro_f1")
    interval = (f" (95% CI {ci.get('low'):.4f} to {ci.get('high'):.4f}, clip bootstrap)"
                if ci.get("low") is not None else " (no interval recorded)")
    lines += [
        f"- Written by: {record['written_by']}, bundle format {record['format_version']}",
        f"- Trained on: the manifests {card.get('manifests')} (labels fingerprint"
        f" {str(card.get('manifest_fingerprint'))[:12]})",
        f"- Members: {', '.join(card['members'])}",
        f"- Applied: combiner {decisions['combiner']} (stage three's row"
        f" {card.get('final') or card['members'][0]!r}),"
        f" steps {', '.join(decisions['steps']) or 'none'}",
        f"- Score: macro-F1 {score if score is None else f'{score:.4f}'} on"
        f" {card.get('scored_split', 'val')}{interval}",
        f"- How selected: {card['selected']}",
        f"- Feature precision: {card.get('precision')}",
        f"- Classes: {', '.join(record['classes'])}",
        f"- AU heads: {', '.join(record['au_heads']) or 'none'}",
        f"- Face step: {'fer-pipeline faces, ' + json.dumps(record['faces']['settings']) if record['faces'] else 'crops not made by fer-pipeline faces (predict uses the faces defaults on raw video)'}",
    ]
    return "\n".join(lines) + "\n"
