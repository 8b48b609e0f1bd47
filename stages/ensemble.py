"""Stage three: combine the outputs of run directories, score them, report, write the submission.

Reads only what stage two wrote, through :mod:`pipeline.runs` (each run directory's record
``metrics.json``, ``predictions/<split>/<output>.npz`` and ``predictions/<split>/face_mask.npz``)
and the manifests (ground truth, clip lengths); never the dataset's frame folders. Writes into ``out``, every file atomically:

* ``scores.json``: the final ensemble's ``macro_f1`` (and ``macro_f1_ci``, its bootstrap
  interval), ``accuracy``, ``abaw2021_score``, ``per_class_f1``, ``n_frames`` and confusion
  matrix; every member's and ensemble's scores with what they were fitted on and their interval
  (``rows``); ``final_minus_best_member``: the paired bootstrap of the final row minus the best
  member; and ``tuning``: the protocol and, for every fit, the clips it was tuned on, the clips
  it predicted, its applied choices (combiner, its rule and fitted parameters, weights, window,
  biases, steps), the nested decision of which steps to apply and the selection rule's record
  (:mod:`pipeline.scoring.selection`), the test fit included; ``feature_precision``: the precision
  the members' features were extracted in (:mod:`stages.precision`);
* ``config.toml`` (the :class:`EnsembleConfig` used), ``report.html`` with its PNGs;
* ``final_<split>.npz`` and ``face_mask_<split>.npz``: the final pipeline's per-frame
  probabilities of the scored split (:mod:`pipeline.scoring.final_probs`; ``export OUT``);
* ``submission.txt`` in the ABAW format when every member has test predictions and the manifests
  list test clips (checked with :func:`check_submission` after writing), with the test clips'
  final probabilities beside it (``final_test.npz``, ``face_mask_test.npz``: their argmax is
  the submission's labels unless a mode filter decided them; ``export OUT --split test``).

The outputs are written into a staging folder and moved into ``out`` together, ``scores.json``
last (:func:`pipeline.io.staged_files`): an interruption leaves the previous outputs intact, and
a ``scores.json`` is never beside a report of another run. The runs must have read the same
manifests as ``manifests`` (:func:`stages.ensemble_inputs.check_manifests`: their ``manifest_fingerprint`` against the
fingerprint of the clips their tasks read from ``manifests``, multi-task runs included) unless
``allow_manifest_mismatch``; ``scores.json`` records the fingerprint of the expression splits.

Runs with action-unit outputs (multi-task heads, ``metrics.json``'s ``au_outputs``) are scored on
the AU validation split as well (:mod:`pipeline.scoring.au_ensemble`: each AU output at threshold
0.5, their mean, and per-AU thresholds fitted by the same protocol and folds); ``scores.json``
holds them under ``au``, the report lists them, and ``submission_au.txt`` (the ABAW AU format,
checked with :func:`check_au_submission`) is written for the test clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import io
from pipeline.config import save_toml, to_dict
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import SPLITS, Clip, fingerprint
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.au_ensemble import AUOutcome, action_units
from pipeline.scoring.va_ensemble import VAOutcome, va_notes, valence_arousal
from pipeline.metrics.va import abaw_multitask_score
from pipeline.scoring.bootstrap import Difference
from pipeline.scoring.crossfit import (
    Outcome,
    Row,
    cross_fit,
    gain_note,
    member_dev_f1,
    member_fitted_on,
    nested_fit,
    same_frames_note,
)
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.fitting import predict, predict_probs
from pipeline.scoring.frames import (
    FaceMasks,
    Member,
    SplitData,
    clip_data,
    load_split,
    open_predictions,
)
from pipeline.scoring.final_probs import final_face_path, final_path, write_final_probs
from pipeline.runs.predictions import FaceMaskWriter, PredictionWriter
from pipeline.runs.record import RunInfo
from pipeline.scoring.report import ReportData, TestSplit, Timeline, write_report
from pipeline.scoring.submission import check_submission, write_submission
from stages.ensemble_inputs import check_manifests, clips_by_split, find_members
from stages.precision import feature_precision
from stages.provenance import provenance, warnings as feature_warnings


@dataclass
class EnsembleResult:
    """What the stage produced (the CLI prints it as a table)."""

    split: str  # the scored split
    rows: list[Row]  # members, ensembles, pipeline steps
    final: Row  # the final ensemble (its scores are the headline of scores.json)
    protocol: str  # the tuning protocol used
    tuned_on_scored_frames: bool  # True only when the user asked for protocol "same"
    scores_path: Path
    report_path: Path
    submission_path: Path | None  # None when no submission was written ...
    submission_note: str  # ... and why (or how many rows were written)
    best_member: str | None = None  # the member row with the best macro-F1
    gain: Difference | None = None  # final minus best member (paired bootstrap; None: off)
    au: AUOutcome | None = None  # AU scores, when runs have AU outputs
    au_submission_path: Path | None = None  # submission_au.txt, if written ...
    au_submission_note: str = ""  # ... and why not (or how many rows were written)
    precision: str = "unknown"  # the precision of the members' features (stages.precision)
    va: VAOutcome | None = None  # VA scores, when runs have VA outputs
    va_submission_path: Path | None = None  # submission_va.txt, if written


def class_counts(clips: Sequence[Clip]) -> np.ndarray:
    """int [9]: annotated frames per class, then frames not annotated."""
    counts = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    for clip in clips:
        if clip.labels is not None:
            # bincount of label + 1 puts -1 first; roll it to the end
            counts += np.roll(np.bincount(clip.labels.astype(np.int64) + 1,
                                          minlength=NUM_CLASSES + 1), -1)
    return counts


def run_ensemble(run_dirs: Sequence[Path], manifests: Path, out: Path,
                 config: EnsembleConfig | None = None,
                 progress: ProgressFn = silent,
                 allow_manifest_mismatch: bool = False) -> EnsembleResult:
    """Build, score and report every ensemble of the runs' outputs; write the submission too."""
    config = config or EnsembleConfig()
    members, runs = find_members(run_dirs, config.split)
    names = [m.name for m in members]
    clips = clips_by_split(Path(manifests))
    manifest_fingerprint = fingerprint(c for split in SPLITS for c in clips[split])
    if not allow_manifest_mismatch:
        check_manifests(runs, run_dirs, Path(manifests))
    if not clips[config.split]:
        raise PipelineError(f"{manifests}: no {config.split} clips to score")

    scored = load_split(members, clips[config.split], config.split, progress)
    tuning_data = None
    if config.tune_on == "train":
        if not clips["train"]:
            raise PipelineError(f"{manifests}: no train clips to tune on")
        missing = [m.name for m in members if not m.path("train").exists()]
        if missing:
            raise PipelineError(f"--tune-on train: {missing[0]} has no train predictions"
                                f" ({missing[0].split('/')[0]}/predictions/train/)")
        tuning_data = load_split(members, clips["train"], "train", progress)
    outcome = cross_fit(scored, names, config, tuning_data, progress,
                        member_fitted_on(members, runs), member_dev_f1(members, runs))

    tuning = {
        "protocol": config.tune_on,
        "tuned_on_scored_frames": outcome.tuned_on_scored_frames,
        "tuning_split": config.tuning_split,
        "scored_split": config.split,
        "folds": len(outcome.folds) if config.tune_on == "val-crossfit" else None,
        "fits": [record.to_json(names) for record in outcome.folds],
        "test": None,
    }

    out = Path(out)
    with io.staged_files(out, last="scores.json",
                         optional=["submission.txt", "submission_au.txt", "submission_va.txt",
                                   final_path("", "test").name,
                                   final_face_path("", "test").name]) as staging:
        return _write_outputs(run_dirs, members, names, runs, clips, scored, outcome, config,
                              manifests,
                              manifest_fingerprint, allow_manifest_mismatch, out, staging,
                              tuning, progress)


def _write_outputs(run_dirs: Sequence[Path], members: list[Member], names: list[str],
                   runs: list[RunInfo],
                   clips: dict[str, list[Clip]], scored: SplitData, outcome: Outcome,
                   config: EnsembleConfig, manifests: Path, manifest_fingerprint: str,
                   mismatch_allowed: bool, out: Path, staging: Path, tuning: dict,
                   progress: ProgressFn) -> EnsembleResult:
    """Write the submission, the report, config.toml and scores.json into ``staging`` (moved
    into ``out`` afterwards); the result names the files where they will be."""
    test = TestSplit()  # the test predictions, summarised for the report as they are written
    submission_path, note = _submission(members, names, clips["test"], scored, outcome, config,
                                        staging, tuning, progress, test)
    if submission_path is None and (out / "submission.txt").exists():
        note += "; removed the earlier submission.txt"  # (the move into `out` removes it)
    au, au_path, au_note = action_units(run_dirs, runs, manifests, config, staging)
    va, va_path, va_note = valence_arousal(run_dirs, runs, manifests, config, staging)

    final = outcome.final
    precision = feature_precision(run_dirs, [run.record for run in runs])
    record = {
        "split": config.split,
        "final": final.name,
        "feature_precision": precision,
        **final.scores.to_json(),
        "members": names,
        "macro_f1_ci": final.interval.to_json() if final.interval else None,
        "rows": [{"name": r.name, "kind": r.kind, "fitted_on": r.fitted_on,
                  "macro_f1_ci": r.interval.to_json() if r.interval else None,
                  **r.scores.to_json()} for r in outcome.rows],
        "best_member": outcome.best_member,
        "final_minus_best_member": outcome.gain.to_json() if outcome.gain else None,
        "tuning": tuning,
        "config": to_dict(config),
        "submission": submission_path.name if submission_path else None,
        "submission_note": note,
        "manifest_fingerprint": manifest_fingerprint,
        "manifest_mismatch_allowed": mismatch_allowed,
        "au": None if au is None else {**au.to_json(), "submission": au_path and au_path.name,
                                       "submission_note": au_note},
    }
    if va is not None:  # absent without VA outputs: scores.json of other runs stays as before
        record["va"] = {**va.to_json(), "submission": va_path and va_path.name,
                        "submission_note": va_note}
        if au is not None:  # ABAW multi-task: EXPR F1 + AU F1 + VA mean CCC, final rows
            record["abaw_multitask"] = abaw_multitask_score(
                final.scores.macro_f1, au.final.scores.mean_f1, va.final.scores.mean_ccc)

    notes = [f"members: {', '.join(names)}", f"features extracted in: {precision}",
             f"manifests: {manifests}", f"submission: {note}"]
    if mismatch_allowed:
        notes.insert(0, "WARNING: --allow-manifest-mismatch: the runs' manifests were not checked")
    for run in runs:  # stage two may have tuned something on the split scored here
        grid = run.record.grid
        if isinstance(grid, dict) and grid.get("fitted_on") == config.split:
            notes.append(f"{run.name}: its m,n were chosen on {config.split} by fuse, so its"
                         f" fusion output's {config.split} score is not cross-fitted")
    if au is not None:
        notes += [f"AU {row.name}{' (tuned)' if row.tuned else ''}: mean F1"
                  f" {row.scores.mean_f1:.4f}, accuracy {row.scores.accuracy:.4f}, ABAW-2021 AU"
                  f" {row.scores.abaw2021_score:.4f} over {row.scores.n_frames} frames"
                  for row in au.rows] + [f"AU submission: {au_note}", *au.notes]
    if va is not None:
        notes += va_notes(va, va_note, record.get("abaw_multitask"))
    if outcome.tuned_on_scored_frames:
        notes.insert(0, "WARNING: tuned on the scored frames (--tune-on same): optimistic scores")
    counts = {split: class_counts(clips[split]) for split in ("train", "val")
              if any(c.labels is not None for c in clips[split])}
    if outcome.gain is not None:
        notes.append(gain_note(outcome))
    same = same_frames_note(outcome.rows)
    if same:
        notes.append(same)
    sources = provenance(run_dirs, [run.record for run in runs], precision)
    # the banner: what makes these scores optimistic or not about a trained model
    leaks = [n for n in notes if n.startswith("WARNING") or "not cross-fitted" in n
             or n == same]
    report_path = write_report(staging, ReportData(
        config.split, outcome.rows, final.name, runs, counts, tuning,
        [n for n in notes if n not in leaks], timelines(scored, outcome),
        leaks + feature_warnings(sources.members, precision), sources, outcome.best_member,
        outcome.gain, test if test.clip_ids else None, va.timelines if va else []))
    save_toml(config, staging / "config.toml")
    write_final_probs(scored, outcome.folds, config.split, staging)  # for `export OUT`
    io.write_json(staging / "scores.json", record, indent=1)  # moved into `out` last
    return EnsembleResult(config.split, outcome.rows, final, config.tune_on,
                          outcome.tuned_on_scored_frames, out / "scores.json",
                          out / report_path.name,
                          out / submission_path.name if submission_path else None, note,
                          outcome.best_member, outcome.gain, au,
                          out / au_path.name if au_path else None, au_note, precision, va,
                          out / va_path.name if va_path else None)


def timelines(scored: SplitData, outcome: Outcome, count: int = 3) -> list[Timeline]:
    """The final pipeline's predictions for the ``count`` clips with the most annotated frames,
    each predicted by the fit that scored it (as in the scores)."""
    if scored.labels is None:
        return []
    annotated = [int((scored.labels[scored.offsets[c]:scored.offsets[c + 1]] >= 0).sum())
                 for c in range(len(scored.clip_ids))]
    chosen = sorted(range(len(annotated)), key=lambda c: (-annotated[c], c))[:count]
    out = []
    for c in sorted(chosen):
        clip_id = scored.clip_ids[c]
        record = next(r for r in outcome.folds if clip_id in r.scored_clips)
        clip = scored.subset([c])
        out.append(Timeline(clip_id, predict(clip, record.fit.applied), clip.labels))
    return out


def _submission(members: list[Member], names: list[str], test_clips: list[Clip],
                scored: SplitData, outcome: Outcome, config: EnsembleConfig, out: Path,
                tuning: dict, progress: ProgressFn,
                test: TestSplit | None = None) -> tuple[Path | None, str]:
    """Fit on all of the tuning split, predict the test clips, write and check the file.

    Records the test fit in ``tuning["test"]``; returns the file (None if none) and a note. A
    submission.txt left in ``out`` by an earlier run is removed when none is written: it would
    not match these scores.
    """
    path = out / "submission.txt"
    missing = [m.name for m in members if not m.path("test").exists()]
    if not test_clips or missing:
        stale = path.exists()
        path.unlink(missing_ok=True)
        note = ("no test clips in the manifests" if not test_clips
                else f"no test predictions for {', '.join(missing)}")
        return None, note + ("; removed the earlier submission.txt" if stale else "")
    if config.tune_on == "val-crossfit":
        # all of val: no fold is scored here
        test_fit = nested_fit(scored, names, config, outcome.anchor)
        tuning_clips = list(scored.clip_ids)
    else:  # the single fit of "same" / "train" already used all of its tuning split
        test_fit = outcome.folds[0].fit
        tuning_clips = outcome.folds[0].tuning_clips
    readers = open_predictions([m.path("test") for m in members], test_clips, "test")
    faces = FaceMasks([m.run_dir for m in members], "test")
    progress(ProgressEvent("test", total=len(test_clips)))

    def rows(probs: PredictionWriter, masks: FaceMaskWriter):
        for clip in test_clips:  # clip by clip: memory does not grow with the test set
            data = clip_data(readers, faces, clip, "test")
            probs.add(clip.clip_id, predict_probs(data, test_fit.applied))  # for `export OUT`
            masks.add(clip.clip_id, data.face)
            predicted = predict(data, test_fit.applied)
            if test is not None:
                test.add(clip.clip_id, predicted)
            yield clip, predicted
            progress(ProgressEvent("test", advance=1))

    with PredictionWriter(final_path(out, "test")) as probs, \
            FaceMaskWriter(final_face_path(out, "test")) as masks:
        count = write_submission(path, rows(probs, masks))
    problems = check_submission(path, test_clips)
    if problems:  # the writer and the checker disagree: a bug, not a user error
        raise AssertionError(f"{path}: written submission fails its check: {problems[0]}")
    tuning["test"] = {
        "tuning_split": config.tuning_split,
        "tuning_clips": tuning_clips,
        "choices": test_fit.applied.to_json(names),
        "decision": test_fit.decision,
        "selection": test_fit.selection,
    }
    return path, f"{count} rows for {len(test_clips)} test clips"
