"""Cross-fitting: folds of whole videos, one fit per fold, and the scored rows of the table.

:func:`cross_fit` scores every member, candidate and pipeline step on the scored split, each
frame predicted by a pipeline fitted without it (protocol ``val-crossfit``), fitted on another
split (``train``), or on the scored frames themselves (``same``, labelled so); see
:mod:`pipeline.scoring.ensemble`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring import combiners
from pipeline.scoring.fitting import Fit, fit, pipeline_steps, predict
from pipeline.scoring.frames import SplitData
from pipeline.scoring.metrics import Scores, confusion_matrix


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


@dataclass
class Row:
    """One line of the results table."""

    name: str  # a candidate ("mean", a member, "proportional A + B", ...), "ensemble", "ensemble+..."
    kind: str  # "member" (a run's output as written), "ensemble" (a combination), "pipeline"
    tuned: bool  # whether anything in it was fitted (then: on other frames, unless protocol same)
    scores: Scores
    rule: str | None = None  # the combiner of a candidate's row (None: a pipeline row)


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
            "choices": self.fit.choices.to_json(member_names),
            "candidates": {
                name: {**combination.to_json(member_names),
                       "tuning_macro_f1": self.fit.tuning_macro_f1[name]}
                for name, combination in self.fit.candidates.items()
            },
        }


@dataclass
class Outcome:
    """Scores of every member, candidate and pipeline step on the scored split."""

    rows: list[Row]  # members, combinations, then the pipeline steps; the last row is the final
    folds: list[FoldRecord]  # one per fit
    tuned_on_scored_frames: bool  # True only for protocol "same"

    @property
    def final(self) -> Row:
        return self.rows[-1]


def pipeline_row_names(config: EnsembleConfig) -> list[str]:
    names, current = ["ensemble"], "ensemble"
    for step in pipeline_steps(config):
        current += f"+smooth({config.smooth})" if step == "smooth" else f"+{step}"
        names.append(current)
    return names


def cross_fit(scored: SplitData, member_names: Sequence[str], config: EnsembleConfig,
              tuning: SplitData | None = None, progress: ProgressFn = silent) -> Outcome:
    """Score members, candidates and pipeline steps on ``scored``, fitting per the protocol.

    ``tuning`` is the declared tuning split's data (protocol ``train``); ignored otherwise.
    """
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
    records = []
    progress(ProgressEvent("tune", total=len(plan)))
    for fold, tune_data, inside, tuning_split in plan:
        result = fit(tune_data, member_names, config)
        target = scored if len(inside) == len(all_clips) else scored.subset(inside)
        where = scored.frame_index(inside)
        for name in names:
            choices = replace(result.choices, combination=result.candidates[name])
            predictions[name][where] = predict(target, choices, steps=())
        for i, name in enumerate(pipeline_names):
            predictions[name][where] = predict(target, result.choices, steps=steps[:i])
        records.append(FoldRecord(
            fold=fold,
            scored_clips=[scored.clip_ids[c] for c in inside],
            tuning_clips=list(tune_data.clip_ids),
            tuning_split=tuning_split,
            fit=result,
        ))
        progress(ProgressEvent("tune", advance=1, info={"fold": fold if fold is not None else 0}))

    def scores(name: str) -> Scores:
        return Scores.from_confusion(confusion_matrix(scored.labels, predictions[name]))

    rows = [Row(name, "member" if name in member_names else "ensemble",
                name not in member_names and name != "mean", scores(name), rules[name])
            for name in names]
    for i, name in enumerate(pipeline_names):
        # tuned: the selection among several candidates, a window, biases (not the fill rule)
        tuned = len(names) > 1 or any(step != "fill" for step in steps[:i])
        rows.append(Row(name, "pipeline", tuned, scores(name)))
    return Outcome(rows, records, config.tune_on == "same")
