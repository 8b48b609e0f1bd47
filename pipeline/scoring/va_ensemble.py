"""Stage three's valence and arousal: score the VA outputs of multi-task runs (CCC per dimension
and mean, with clip-level bootstrap intervals), ensemble them by a weighted mean, and write the
ABAW VA submission for the test clips.

A run with VA lists its VA outputs in its record's ``va_outputs`` and writes
``predictions/<split>/va.npz`` (float32 ``[T, 2]`` per clip, in [-1, 1]). For the VA split scored
(the clips with VA labels there, ``Clip.scoring_labels("va")``) :func:`va_rows` scores:

* each VA member as written;
* with two or more members, their mean (equal weights, nothing tuned) and their weighted mean,
  the weights of each dimension proportional to each member's CCC (floored at 0; equal where all
  are 0) fitted by cross-fitting: the folds of whole videos of the expression ensemble
  (:func:`~pipeline.scoring.crossfit.assign_folds`), each fold's frames combined with weights
  fitted on the other folds. The test clips use weights fitted on the whole scored split;
* then (unless the ensemble's ``smooth`` is ``none`` or ``windows`` holds only 1) the final
  row, ``<weighted or the member>+smooth``: a moving mean within each clip whose window, per
  dimension, is chosen from the ensemble's ``windows`` (1 = off) on the same folds: each
  held-out fold is smoothed with the windows fitted on the other folds' combined values
  (:mod:`pipeline.scoring.va_smoothing`). The test clips use the weights and windows fitted on
  the whole scored split.

Each row carries CCC intervals (valence, arousal, mean) from the clip-level bootstrap: the
resample counts of :func:`pipeline.scoring.bootstrap.resample_counts` with the ensemble's
``bootstrap`` and ``bootstrap_seed``, the same videos as the expression table's intervals.

Submission (:func:`write_va_submission`, ABAW VA track): the header
``image_location,valence,arousal`` and one row per frame, ``<clip>/00001.jpg,0.123456,-0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pipeline import io as atomic
from pipeline.data.frames import clips_frames
from pipeline.data.labels import VA_NAMES
from pipeline.data.manifest import SPLITS, Clip, load_clips
from pipeline.errors import PipelineError
from pipeline.metrics.va import VAScores, ccc, clip_moments, score_va, va_intervals
from pipeline.scoring.bootstrap import resample_counts
from pipeline.scoring.crossfit import assign_folds
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.frames import Member, task_values
from pipeline.scoring.submission import image_location
from pipeline.scoring.va_smoothing import fit_windows, smooth_va, subset_offsets

TIMELINES = 3  # clips shown in the report's VA timelines
MEAN, WEIGHTED = "mean", "weighted"  # the row names of the members' mean and weighted mean
VA_SUBMISSION_HEADER = "image_location," + ",".join(VA_NAMES)


@dataclass(eq=False)
class VAData:
    """The VA predictions of one split's clips, concatenated (the fields assign_folds reads)."""

    clip_ids: tuple[str, ...]
    groups: tuple[str, ...]  # video id of each clip
    offsets: np.ndarray  # int64 [n_clips + 1]
    values: np.ndarray  # float32 [n_members, n_frames, 2]
    labels: np.ndarray | None  # float32 [n_frames, 2], -5 = invalid; None for test clips

    def frames(self, clip_indices: Sequence[int]) -> np.ndarray:
        return clips_frames(self.offsets, clip_indices)


def load_va(members: Sequence[Member], clips: Sequence[Clip], split: str, labelled: bool
            ) -> VAData:
    """Read every VA member's ``split`` predictions for ``clips``, checking each clip."""
    offsets, values = task_values(members, clips, split, "VA", 2,
                                  lambda a: bool((np.abs(a) <= 1).all()),  # NaN fails too
                                  "VA values outside [-1, 1]")
    labels = None
    if labelled:
        labels = (np.concatenate([c.scoring_labels("va") for c in clips]).astype(np.float32)
                  if clips else np.zeros((0, 2), np.float32))
    return VAData(tuple(c.clip_id for c in clips), tuple(c.video_id for c in clips), offsets,
                  values, labels)


def fit_weights(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float64 [n_members, 2]: per dimension, weights proportional to each member's CCC on these
    frames (floored at 0), summing to 1; equal where no member has a positive CCC."""
    scores = np.stack([ccc(labels, v) for v in values])  # [M, 2]
    scores = np.maximum(scores, 0.0)
    total = scores.sum(axis=0)
    equal = np.full_like(scores, 1.0 / len(values))
    return np.where(total > 0, scores / np.where(total > 0, total, 1.0), equal)


def weighted(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 [n_frames, 2]: the members' values ``[M, N, 2]`` weighted per dimension."""
    return np.einsum("mnd,md->nd", values.astype(np.float64), weights).astype(np.float32)


@dataclass
class VARow:
    """One line of the VA table."""

    name: str  # a member, "mean" or "weighted"
    tuned: bool  # weights fitted (on other folds)
    scores: VAScores
    intervals: dict[str, Any] | None  # "valence", "arousal", "mean" -> VAInterval

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tuned": self.tuned, **self.scores.to_json(),
                "ci": None if self.intervals is None
                else {k: v.to_json() for k, v in self.intervals.items()}}


@dataclass
class VAOutcome:
    """VA scores of the scored split and the weights the test clips use."""

    split: str
    members: list[str]
    rows: list[VARow]  # the last row is the final one
    weights: np.ndarray  # [n_members, 2] for the test clips
    folds: list[dict[str, Any]] = field(default_factory=list)
    windows: tuple[int, int] = (1, 1)  # the test clips' smoothing windows (valence, arousal)
    notes: list[str] = field(default_factory=list)
    # (clip id, final values [T, 2], labels [T, 2]) of the clips with the most valid frames
    timelines: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def final(self) -> VARow:
        return self.rows[-1]

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "members": self.members, "final": self.final.name,
                **self.final.scores.to_json(), "rows": [r.to_json() for r in self.rows],
                "weights": {m: dict(zip(VA_NAMES, map(float, w)))
                            for m, w in zip(self.members, self.weights)},
                "smoothing": dict(zip(VA_NAMES, map(int, self.windows))),
                "fits": self.folds, "notes": self.notes}


def _row(name: str, tuned: bool, data: VAData, values: np.ndarray, counts: np.ndarray | None,
         level: float) -> VARow:
    intervals = None
    if counts is not None:
        intervals = va_intervals(clip_moments(data.labels, values, data.offsets), counts, level)
    return VARow(name, tuned, score_va(data.labels, values), intervals)


def va_rows(scored: VAData, names: Sequence[str], config: EnsembleConfig) -> VAOutcome:
    """Score every VA member, their mean, their cross-fitted weighted mean and its cross-fitted
    smoothing, with intervals."""
    if scored.labels is None:
        raise PipelineError(f"split {config.split} has no VA labels to score against")
    counts = (resample_counts(scored.groups, config.bootstrap, config.bootstrap_seed)
              if config.bootstrap else None)
    level = config.confidence
    rows = [_row(n, False, scored, scored.values[m], counts, level) for m, n in enumerate(names)]
    final_values = scored.values[0]
    weights = np.full((len(names), 2), 1.0 / len(names))
    windows = (1, 1)
    smoothing = config.smooth != "none" and max(config.windows) > 1
    notes: list[str] = []
    folds_record: list[dict[str, Any]] = []
    if len(names) > 1:
        final_values = scored.values.mean(axis=0)
        rows.append(_row(MEAN, False, scored, final_values, counts, level))
    if (len(names) > 1 or smoothing) and len(set(scored.groups)) < 2:
        notes.append("VA weights and smoothing not fitted: cross-fitting needs 2 or more videos")
    elif len(names) > 1 or smoothing:
        combined, smoothed, folds_record = _cross_fit(scored, len(names) > 1, smoothing, config)
        if len(names) > 1:
            rows.append(_row(WEIGHTED, True, scored, combined, counts, level))
            weights = fit_weights(scored.labels, scored.values)  # the test clips' weights
        final_values = combined
        if smoothing:
            base = WEIGHTED if len(names) > 1 else names[0]
            rows.append(_row(f"{base}+smooth", True, scored, smoothed, counts, level))
            windows = fit_windows(scored.labels, weighted(scored.values, weights),
                                  scored.offsets, config.windows)  # the test clips' windows
            final_values = smoothed
    valid = [int((scored.labels[scored.offsets[c]:scored.offsets[c + 1]] != -5).all(axis=1).sum())
             for c in range(len(scored.clip_ids))]
    shown = sorted(range(len(valid)), key=lambda c: -valid[c])[:TIMELINES]
    timelines = [(scored.clip_ids[c], final_values[scored.offsets[c]:scored.offsets[c + 1]],
                  scored.labels[scored.offsets[c]:scored.offsets[c + 1]]) for c in shown]
    return VAOutcome(config.split, list(names), rows, weights, folds_record, windows=windows,
                     notes=notes, timelines=timelines)


def _cross_fit(scored: VAData, fit: bool, smoothing: bool, config: EnsembleConfig
               ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Each fold's frames combined with weights (``fit``: else equal) and smoothed with windows
    (``smoothing``: else none) fitted on the other folds; (combined, smoothed, what each fold
    fitted)."""
    folds = assign_folds(scored, config.folds)
    n = len(scored.clip_ids)
    combined = np.zeros(scored.values.shape[1:], np.float32)
    smoothed = np.zeros_like(combined)
    record: list[dict[str, Any]] = []
    for f in range(int(folds.max()) + 1):
        tune_clips = [c for c in range(n) if folds[c] != f]
        score_clips = [c for c in range(n) if folds[c] == f]
        tune, score = scored.frames(tune_clips), scored.frames(score_clips)
        w = (fit_weights(scored.labels[tune], scored.values[:, tune]) if fit
             else np.full((len(scored.values), 2), 1.0 / len(scored.values)))
        win = (fit_windows(scored.labels[tune], weighted(scored.values[:, tune], w),
                           subset_offsets(scored.offsets, tune_clips), config.windows)
               if smoothing else (1, 1))
        combined[score] = weighted(scored.values[:, score], w)
        smoothed[score] = smooth_va(combined[score], subset_offsets(scored.offsets, score_clips),
                                    win)
        record.append({"fold": f, "weights": w.tolist(),
                       "smoothing": dict(zip(VA_NAMES, map(int, win))),
                       "tuning_clips": [scored.clip_ids[c] for c in tune_clips],
                       "scored_clips": [scored.clip_ids[c] for c in score_clips]})
    return combined, smoothed, record


def va_notes(outcome: VAOutcome, submission_note: str, multitask: float | None) -> list[str]:
    """The report's lines about VA: each row's CCCs (mean with its interval), the submission, and
    the ABAW multi-task score when there is one."""
    lines = []
    for row in outcome.rows:
        ci = row.intervals["mean"] if row.intervals else None
        fitted = (" (weights and windows fitted on other folds)" if row.name.endswith("+smooth")
                  else " (weights fitted on other folds)" if row.tuned else "")
        lines.append(f"VA {row.name}{fitted}: "
                     f"mean CCC {row.scores.mean_ccc:.4f}"
                     + (f" [{ci.low:.4f}, {ci.high:.4f}]" if ci else "")
                     + f", valence {row.scores.ccc_valence:.4f}, arousal"
                     f" {row.scores.ccc_arousal:.4f} over {row.scores.n_frames} frames")
    lines += [f"VA submission: {submission_note}", *outcome.notes]
    if multitask is not None:
        lines.append(f"ABAW multi-task score (EXPR F1 + AU F1 + VA mean CCC): {multitask:.4f}")
    return lines


def write_va_submission(path: str | Path, rows: Iterable[tuple[Clip, np.ndarray]]) -> int:
    """Write every frame of each (clip, valence-arousal ``[n_frames, 2]``) pair in the ABAW VA
    format, streamed, atomically; returns the rows written."""
    path = Path(path)
    count = 0
    with atomic.atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        f.write(VA_SUBMISSION_HEADER + "\n")
        for clip, values in rows:
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (clip.n_frames, 2):
                raise PipelineError(f"{path}: clip {clip.clip_id} has VA values of shape "
                                    f"{values.shape} for {clip.n_frames} frames")
            if not (np.abs(values) <= 1).all():
                raise PipelineError(f"{path}: clip {clip.clip_id} has VA values outside [-1, 1]")
            f.writelines(f"{image_location(clip.clip_id, i)},{v:.6f},{a:.6f}\n"
                         for i, (v, a) in enumerate(values.tolist()))
            count += clip.n_frames
    return count


def check_va_submission(path: str | Path, clips: Sequence[Clip]) -> list[str]:
    """Every problem of a VA submission for these clips, one line each: the header, a row that is
    not ``location,valence,arousal`` with values in [-1, 1], an unknown clip or frame, a
    duplicate, a clip's missing frames."""
    expected = {c.clip_id: c.n_frames for c in clips}
    seen: dict[str, set[int]] = {c: set() for c in expected}
    problems: list[str] = []
    with Path(path).open(encoding="utf-8") as f:
        if f.readline().rstrip("\n") != VA_SUBMISSION_HEADER:
            problems.append(f"line 1: header is not {VA_SUBMISSION_HEADER!r}")
        for line_no, line in enumerate(f, 2):
            cells = line.rstrip("\n").split(",")
            try:
                clip_id, frame = cells[0].rsplit("/", 1)
                index = int(frame.removesuffix(".jpg")) - 1
                values = [float(v) for v in cells[1:]]
            except ValueError:
                problems.append(f"line {line_no}: not 'clip/NNNNN.jpg,valence,arousal'")
                continue
            if len(values) != 2 or not all(abs(v) <= 1 for v in values):
                problems.append(f"line {line_no}: want two values in [-1, 1]")
            elif clip_id not in expected or not 0 <= index < expected[clip_id]:
                problems.append(f"line {line_no}: {cells[0]} is no frame of a test clip")
            elif index in seen[clip_id]:
                problems.append(f"line {line_no}: {cells[0]} again")
            else:
                seen[clip_id].add(index)
    problems += [f"clip {c}: {expected[c] - len(s)} frames missing" for c, s in seen.items()
                 if len(s) != expected[c]]
    return problems


def valence_arousal(run_dirs: Sequence[Path], runs: Sequence[Any], manifests: Path,
                    config: EnsembleConfig, out: Path
                    ) -> tuple[VAOutcome | None, Path | None, str]:
    """Score the runs' VA outputs on the VA split and write ``submission_va.txt`` into ``out``
    (the staging folder) for the test clips; (None, None, why) without VA predictions."""
    path = out / "submission_va.txt"
    members = [Member(Path(run_dir), output) for run_dir, run in zip(run_dirs, runs)
               for output in getattr(run.record, "va_outputs", ())]
    members = [m for m in members if m.path(config.split).exists()]
    clips = load_clips(manifests, SPLITS, au_only=True) if members else []
    scored_clips = [c for c in clips if c.scored_in("va", config.split)]
    if not scored_clips:
        path.unlink(missing_ok=True)
        return None, None, "no VA outputs" if not members else f"no VA {config.split} clips"
    outcome = va_rows(load_va(members, scored_clips, config.split, labelled=True),
                      [m.name for m in members], config)
    test_clips = [c for c in clips if c.split == "test"]
    missing = [m.name for m in members if not m.path("test").exists()]
    if not test_clips or missing:
        path.unlink(missing_ok=True)
        return outcome, None, ("no test clips" if not test_clips
                               else f"no test VA predictions for {', '.join(missing)}")

    def rows():  # clip by clip: memory does not grow with the test set
        for clip in test_clips:
            data = load_va(members, [clip], "test", labelled=False)
            yield clip, smooth_va(weighted(data.values, outcome.weights),
                                  data.offsets, outcome.windows)

    count = write_va_submission(path, rows())
    problems = check_va_submission(path, test_clips)
    if problems:  # the writer and the checker disagree: a bug, not a user error
        raise AssertionError(f"{path}: written VA submission fails its check: {problems[0]}")
    return outcome, path, f"{count} rows for {len(test_clips)} test clips"

