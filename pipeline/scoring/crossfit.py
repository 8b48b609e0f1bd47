"""Cross-fitting: folds of whole videos, one fit per fold, and the scored rows of the table.

:func:`cross_fit` scores every member, candidate and pipeline step on the scored split, each
frame predicted by a pipeline fitted without it (protocol ``val-crossfit``), fitted on another
split (``train``), or on the scored frames themselves (``same``, labelled so); see
:mod:`pipeline.scoring.ensemble`. :func:`nested_fit` is one such fit: the candidate and every
step tuned on the fitting clips, and which steps to apply decided by inner folds over those same
clips (:func:`decide_steps`), then the rule of :mod:`pipeline.scoring.selection` (the best member
unless the ensemble's held-out gain is clear) picks what is applied. Every row carries a
clip-level bootstrap interval and the outcome a paired bootstrap of the final row minus the best
member (:mod:`pipeline.scoring.bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring import combiners
from pipeline.scoring.combiners import Combination
from pipeline.data.labels import UNLABELED
from pipeline.scoring.bootstrap import (
    Difference,
    Interval,
    clip_confusions,
    interval,
    paired_difference,
    resample_counts,
)
from pipeline.scoring.fitting import (
    Fit,
    fit_candidates,
    fit_steps,
    pipeline_steps,
    predict,
)
from pipeline.scoring.frames import Member, SplitData
from pipeline.metrics.scores import Scores, confusion_matrix, macro_f1_from_confusion
from pipeline.scoring.selection import anchored, dev_anchor


def assign_folds(data: SplitData, k: int) -> np.ndarray:
    """int [n_clips] fold of each clip: whole videos, balanced by frames, deterministic."""
    frames: dict[str, int] = {}
    for group, length in zip(data.groups, np.diff(data.offsets)):
        frames[group] = frames.get(group, 0) + int(length)
    k = min(k, len(frames))
    load = [0] * k
    fold_of_group = {}
    for group in sorted(frames, key=lambda g: (-frames[g], g)):
        fold = min(range(k), key=lambda f: (load[f], f))
        fold_of_group[group] = fold
        load[fold] += frames[group]
    return np.array([fold_of_group[g] for g in data.groups], dtype=np.int64)


NOTHING = "nothing"  # the "fitted on" of a row with nothing fitted (the plain mean)


def fitted_on_label(where: str, split: str) -> str:
    """How a row's "fitted on" reads: the split or slice, flagged when it is the scored split."""
    return f"{split} (same frames)" if where == split else where


@dataclass
class Row:
    """One line of the results table."""

    name: str  # a candidate ("mean", a member, "proportional A + B", ...), "ensemble", "ensemble+..."
    kind: str  # "member" (a run's output as written), "ensemble", "pipeline" (a step), "final"
    fitted_on: str  # what its choices saw: "train-dev", "val-crossfit", "val (same frames)", ...
    scores: Scores
    rule: str | None = None  # the combiner of a candidate's row (None: a pipeline row)
    interval: Interval | None = None  # bootstrap interval of macro-F1 (None: bootstrap off)
    clip_confusions: np.ndarray | None = None  # int64 [n_clips, 8, 8], for paired differences


@dataclass
class FoldRecord:
    """What one fit saw and chose."""

    fold: int | None  # fold number (None when the protocol has a single fit)
    scored_clips: list[str]  # clips whose frames were predicted with this fit
    tuning_clips: list[str]  # clips this fit was tuned on
    tuning_split: str  # split of the tuning clips
    fit: Fit

    def to_json(self, member_names: Sequence[str]) -> dict:
        return {
            "fold": self.fold,
            "tuning_split": self.tuning_split,
            "tuning_clips": self.tuning_clips,
            "scored_clips": self.scored_clips,
            "choices": self.fit.applied.to_json(member_names),
            "every_step_choices": self.fit.choices.to_json(member_names),
            "decision": self.fit.decision,
            "selection": self.fit.selection,
            "candidates": {
                name: {**combination.to_json(member_names),
                       "tuning_macro_f1": self.fit.tuning_macro_f1[name]}
                for name, combination in self.fit.candidates.items()
            },
        }


@dataclass
class Outcome:
    """Scores of every member, candidate and pipeline step on the scored split."""

    rows: list[Row]  # members, combinations, the pipeline steps, then the final row
    folds: list[FoldRecord]  # one per fit
    tuned_on_scored_frames: bool  # True only for protocol "same"
    best_member: str | None = None  # the member row with the best macro-F1
    gain: Difference | None = None  # final minus best member, paired bootstrap
    # the member with the best dev score with anchor "dev" (None: chosen per fit, see selection)
    anchor: str | None = None

    @property
    def final(self) -> Row:
        return self.rows[-1]


def pipeline_row_names(config: EnsembleConfig) -> list[str]:
    names, current = ["ensemble"], "ensemble"
    for step in pipeline_steps(config):
        current += _step_name(step, config)
        names.append(current)
    return names


def _step_name(step: str, config: EnsembleConfig) -> str:
    return f"+smooth({config.smooth})" if step == "smooth" else f"+{step}"


def final_row_name(config: EnsembleConfig, applied: Sequence[Sequence[str]],
                   anchors: Sequence[str | None] | None = None) -> str:
    """``final: ensemble+...``: the steps applied, each with ``[k/n]`` unless every fit chose it.

    ``anchors``: per fit, the member applied alone by the anchored rule (None: the ensemble).
    Fits that kept a member read ``<member>[k/n]``, joined to the ensemble's part by `` | ``.
    """
    n = len(applied)
    anchors = list(anchors) if anchors is not None else [None] * n
    kept = {a: anchors.count(a) for a in anchors if a is not None}
    parts = [name + ("" if count == n else f"[{count}/{n}]") for name, count in kept.items()]
    ensemble_fits = [steps for steps, a in zip(applied, anchors) if a is None]
    if ensemble_fits:
        name = "ensemble"
        for step in pipeline_steps(config):
            count = sum(step in steps for steps in ensemble_fits)
            if count:
                name += _step_name(step, config) + ("" if count == n else f"[{count}/{n}]")
        if len(ensemble_fits) < n:
            name = f"ensemble[{len(ensemble_fits)}/{n}]" + name[len("ensemble"):]
        parts.append(name)
    return "final: " + " | ".join(parts)


def _pooled_macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    keep = labels != UNLABELED
    return float(macro_f1_from_confusion(confusion_matrix(labels[keep], predicted[keep])))


# per inner fold: (its fitting clips, its held-out clips, their frames, the candidate chosen
# without them)
InnerFits = list[tuple[SplitData, SplitData, np.ndarray, Combination]]


def inner_fits(data: SplitData, member_names: Sequence[str], config: EnsembleConfig
               ) -> InnerFits | None:
    """The inner folds of ``data`` (whole videos), each with the candidate selected on the other
    inner folds; None with fewer than two videos (no held-out clip)."""
    folds = assign_folds(data, config.inner_folds)
    k = int(folds.max()) + 1 if len(folds) else 0
    if k < 2:
        return None
    inner = []
    for j in range(k):
        inside = [c for c in range(len(folds)) if folds[c] == j]
        train = data.subset([c for c in range(len(folds)) if folds[c] != j])
        candidates, _, best = fit_candidates(train, member_names, config)
        inner.append((train, data.subset(inside), data.frame_index(inside), candidates[best]))
    return inner


def held_out_predictions(data: SplitData, inner: InnerFits, config: EnsembleConfig,
                         steps: Sequence[str]) -> np.ndarray:
    """int8 [N] labels of ``data``: each inner fold's frames predicted by the pipeline with
    ``steps`` tuned on the other inner folds."""
    predicted = np.zeros(data.n_frames, dtype=np.int8)
    for train, held, where, combination in inner:
        predicted[where] = predict(held, fit_steps(train, combination, config, steps))
    return predicted


def decide_steps(data: SplitData, member_names: Sequence[str], config: EnsembleConfig,
                 inner: InnerFits | None = None) -> tuple[tuple[str, ...], dict]:
    """Which configured steps help on held-out clips of ``data`` (inner folds): (steps, record).

    See "Nested decisions" in :mod:`pipeline.scoring.ensemble`. Only ``data`` is read;
    ``inner``: its :func:`inner_fits`, when made already.
    """
    configured = pipeline_steps(config)
    if not config.nested or not configured:
        return tuple(configured), {"checked": False, "why": "nested off" if configured else
                                   "no step configured", "inner_folds": 0,
                                   "steps": list(configured), "trials": []}
    inner = inner if inner is not None else inner_fits(data, member_names, config)
    if inner is None:  # no held-out clip to show that a step helps: none is applied
        return (), {"checked": False, "why": "fewer than 2 videos to fit on: no step applied",
                    "inner_folds": 0, "steps": [], "trials": []}
    k = len(inner)

    def held_out_score(steps: Sequence[str]) -> float:
        return _pooled_macro_f1(data.labels, held_out_predictions(data, inner, config, steps))

    applied: list[str] = []
    current = held_out_score(applied)
    trials = []
    for step in configured:
        with_step = held_out_score(applied + [step])
        keep = with_step > current
        trials.append({"step": step, "without": current, "with": with_step, "applied": keep})
        if keep:
            applied.append(step)
            current = with_step
    return tuple(applied), {"checked": True, "inner_folds": k, "steps": applied,
                            "trials": trials}


def nested_fit(data: SplitData, member_names: Sequence[str], config: EnsembleConfig,
               anchor: str | None = None) -> Fit:
    """Fit on ``data``: the best candidate, every configured step (for the step rows), and the
    pipeline of the steps :func:`decide_steps` keeps; with ``selection = "anchored"`` the
    anchor member replaces that pipeline unless its held-out gain is clear
    (:func:`pipeline.scoring.selection.anchored`; ``anchor``: the dev-chosen member, None:
    chosen on ``data``)."""
    candidates, tuning, best = fit_candidates(data, member_names, config)
    every = fit_steps(data, candidates[best], config, pipeline_steps(config))
    rule = config.selection == "anchored" and len(member_names) > 1
    needs_inner = rule or (config.nested and pipeline_steps(config))
    inner = inner_fits(data, member_names, config) if needs_inner else None
    steps, decision = decide_steps(data, member_names, config, inner)
    final = every if list(steps) == pipeline_steps(config) else fit_steps(
        data, candidates[best], config, steps)
    fit = Fit(candidates, tuning, every, final, decision)
    if not rule:
        return fit
    few = len(set(data.groups)) < config.min_videos  # the anchor is kept: no need to predict
    held_out = None if inner is None or few else held_out_predictions(data, inner, config, steps)
    return anchored(fit, data, member_names, config, anchor, held_out)


def cross_fit(scored: SplitData, member_names: Sequence[str], config: EnsembleConfig,
              tuning: SplitData | None = None, progress: ProgressFn = silent,
              member_fitted_on: dict[str, str] | None = None,
              member_dev_f1: dict[str, float] | None = None) -> Outcome:
    """Score members, candidates and pipeline steps on ``scored``, fitting per the protocol.

    ``tuning`` is the declared tuning split's data (protocol ``train``); ignored otherwise.
    ``member_fitted_on`` says where each member's head made its choices (default: on val, as
    heads that early-stop on val do). ``member_dev_f1``: each member's macro-F1 on its run's dev
    slice, where recorded (the anchored rule's anchor, :mod:`pipeline.scoring.selection`).
    """
    anchor = dev_anchor(member_names, member_dev_f1 or {}) if config.anchor == "dev" else None
    if scored.labels is None:
        raise PipelineError(f"split {config.split} has no labels to score against")
    all_clips = list(range(len(scored.clip_ids)))
    # (fold, data to tune on, clips to predict, split tuned on): one fit each
    plan: list[tuple[int | None, SplitData, list[int], str]] = []
    if config.tune_on == "val-crossfit":
        n_videos = len(set(scored.groups))
        if n_videos < 2:
            raise PipelineError(f"split {config.split} has {n_videos} video(s): cross-fitting needs"
                                " 2 or more (use --tune-on same or --tune-on train)")
        folds = assign_folds(scored, config.folds)
        for f in range(int(folds.max()) + 1):
            inside = [c for c in all_clips if folds[c] == f]
            outside = [c for c in all_clips if folds[c] != f]
            plan.append((f, scored.subset(outside), inside, config.split))
    elif config.tune_on == "same":
        plan.append((None, scored, all_clips, config.split))
    else:
        if tuning is None:
            raise PipelineError(f"tune_on {config.tune_on}: no {config.tune_on} predictions given")
        plan.append((None, tuning, all_clips, config.tune_on))

    rules = {c.name: c.rule for c in combiners.candidates(member_names, config)}
    names = list(rules)
    pipeline_names = pipeline_row_names(config)
    steps = pipeline_steps(config)
    n = scored.n_frames
    predictions = {name: np.zeros(n, dtype=np.int8) for name in names + pipeline_names}
    final_predictions = np.zeros(n, dtype=np.int8)  # each fold's decided pipeline
    records = []
    progress(ProgressEvent("tune", total=len(plan)))
    for fold, tune_data, inside, tuning_split in plan:
        result = nested_fit(tune_data, member_names, config, anchor)
        target = scored if len(inside) == len(all_clips) else scored.subset(inside)
        where = scored.frame_index(inside)
        for name in names:
            choices = replace(result.choices, combination=result.candidates[name])
            predictions[name][where] = predict(target, choices, steps=())
        for i, name in enumerate(pipeline_names):
            predictions[name][where] = predict(target, result.choices, steps=steps[:i])
        final_predictions[where] = predict(target, result.applied)
        records.append(FoldRecord(
            fold=fold,
            scored_clips=[scored.clip_ids[c] for c in inside],
            tuning_clips=list(tune_data.clip_ids),
            tuning_split=tuning_split,
            fit=result,
        ))
        progress(ProgressEvent("tune", advance=1, info={"fold": fold if fold is not None else 0}))

    counts = (resample_counts(scored.groups, config.bootstrap, config.bootstrap_seed)
              if config.bootstrap else None)

    def row(name: str, kind: str, fitted_on: str, rule: str | None = None,
            predicted: np.ndarray | None = None) -> Row:
        predicted = predictions[name] if predicted is None else predicted
        confusions = clip_confusions(scored.labels, predicted, scored.offsets)
        ci = None if counts is None else interval(confusions, counts, config.confidence)
        return Row(name, kind, fitted_on, Scores.from_confusion(confusions.sum(axis=0)), rule,
                   ci, confusions)

    protocol = {"val-crossfit": "val-crossfit", "train": config.tune_on,
                "same": fitted_on_label(config.split, config.split)}[config.tune_on]
    member_fitted_on = member_fitted_on or {}
    rows = []
    for name in names:
        if name in member_names:
            where = member_fitted_on.get(name, "val")
            rows.append(row(name, "member", fitted_on_label(where, config.split), rules[name]))
        else:
            rows.append(row(name, "ensemble", NOTHING if name == "mean" else protocol,
                            rules[name]))
    for i, name in enumerate(pipeline_names):
        # fitted: the selection among several candidates, a window, biases (not the fill rule)
        tuned = len(names) > 1 or any(step != "fill" for step in steps[:i])
        rows.append(row(name, "pipeline", protocol if tuned else NOTHING))
    final = row(final_row_name(config, [r.fit.applied.steps for r in records],
                               [r.fit.kept_anchor for r in records]),
                "final", protocol, predicted=final_predictions)
    rows.append(final)

    members = [r for r in rows if r.kind == "member"]
    best = max(members, key=lambda r: r.scores.macro_f1, default=None)
    gain = None
    if best is not None and counts is not None:
        gain = paired_difference(final.clip_confusions, best.clip_confusions, counts,
                                 config.confidence)
    return Outcome(rows, records, config.tune_on == "same", best.name if best else None, gain,
                   anchor)


def member_fitted_on(members: Sequence[Member], runs: Sequence[Any]) -> dict[str, str]:
    """Where each member's head made its choices: its run record's ``selected_on`` ("train-dev"
    or "val"; :data:`pipeline.runs.record.DEFAULT_SELECTED_ON` for records without it)."""
    selected = {run.name: run.record.selected_on for run in runs}
    return {m.name: str(selected[m.run_dir.name]) for m in members}


def member_dev_f1(members: Sequence[Member], runs: Sequence[Any]) -> dict[str, float]:
    """Each member's macro-F1 on its run's dev slice (its record's ``dev_macro_f1``), for the
    members whose run recorded one (heads that selected on val record none)."""
    dev = {run.name: run.record.dev_macro_f1 for run in runs}
    out = {}
    for m in members:
        scores = dev.get(m.run_dir.name)
        if isinstance(scores, dict) and isinstance(scores.get(m.output), (int, float)):
            out[m.name] = float(scores[m.output])
    return out


def same_frames_note(rows: Sequence[Row]) -> str | None:
    """A line naming the members whose heads chose on the scored frames (None if none did)."""
    same = [r.name for r in rows if r.kind == "member" and r.fitted_on.endswith("(same frames)")]
    if not same:
        return None
    return (f"{', '.join(same)}: the head chose its epoch (or m,n) on these same frames, so its"
            " row and every ensemble of it are optimistic")


def gain_note(outcome: Any) -> str:
    """One line: the final row minus the best member, with its paired bootstrap interval (of an
    :class:`Outcome` or anything with its ``gain`` and ``best_member``)."""
    gain = outcome.gain
    return (f"final minus best member ({outcome.best_member}): {gain.estimate:+.4f} macro-F1,"
            f" {gain.level:.0%} CI [{gain.low:+.4f}, {gain.high:+.4f}], > 0 in"
            f" {gain.share_positive:.0%} of {gain.n_resamples} paired clip resamples")
