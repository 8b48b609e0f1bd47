"""Ensembles of per-frame predictions and their post-processing, tuned without scoring leakage.

A *member* is one output of one run directory, named ``<run_dir_name>/<output>``. Every way of
combining members is a non-negative weight per member, ``P = sum_i w_i P_i / sum_i w_i``:

* ``mean``: all weights 1 (plain soft voting, nothing tuned);
* a member alone: a one-hot weight vector (the members' own rows);
* ``proportional A + B``: the rule of paper 004, ``(m P_A + n P_B) / (m + n)`` with integers
  ``0 < m, n < 6`` grid-searched (the 25 pairs), for every pair of members;
* ``weighted``: integer weights ``0..max_weight`` (5) per member, searched exhaustively when
  the grid has at most 256 points (three members or fewer), otherwise by coordinate ascent
  from all-ones (each member's weight in turn set to its best value, sweeps until nothing
  changes). It is left out for exactly two members when the proportional rule covers them.

The fitted pipeline (:class:`Choices`) applies, in order:

1. **combine**: the candidate with the best macro-F1 on the tuning frames ("ensemble"; the
   tuned candidates are fitted on those same frames first, which favours them a little in this
   choice, but neither step ever sees the scored frames);
2. **fill** (``nearest``): a frame with no face image takes the probabilities of the nearest frame
   of the same clip that has one (the earlier on a tie); clips with no face frame are left as
   they are. ``none`` keeps what the heads wrote (an audio head does see those frames). Not tuned.
3. **smooth** within each clip, never across clips: ``mean`` (moving average of probabilities;
   the window shrinks at clip ends), ``median`` (per-class moving median; clip ends are padded
   by repeating the clip's first/last frame), or ``mode`` (majority vote over predicted labels;
   shrinking window; a tie keeps the frame's own label when it is among the tied, else the lowest
   class index). The window is tuned from ``EnsembleConfig.windows`` (1 = off);
4. **bias**: per-class offsets added to log-probabilities before the argmax, tuned for macro-F1
   by coordinate ascent (each class's offset in turn set to its best value on a grid, holding
   the others; the best value is found exactly for the whole grid from one cumulative count).

Each step is tuned greedily given the previous ones. With ``mode`` the bias step comes before the
smoothing step (biases act on probabilities, the mode filter on the labels they give).

Tuning protocol (``EnsembleConfig.tune_on``): nothing is tuned on the frames it is scored on.

* ``val-crossfit`` (default): the scored split's clips are split into k folds (whole videos: the
  ``_left``/``_right`` clips of one video share a fold; deterministic: videos by decreasing frame
  count, each to the fold with the fewest frames so far, ties to the lower fold). Each fold's
  frames are predicted by a pipeline fitted on the other folds only.
* ``train``: the pipeline is fitted on another split's predictions (e.g. train) and scored on val.
* ``same``: fitted and scored on the same frames; optimistic, and labelled so.

For the test split one pipeline is fitted on all of the tuning split (val, or the declared one).

The steps themselves are in :mod:`pipeline.scoring.postprocess`, the searches that tune them in
:mod:`pipeline.scoring.search`, and reading the members' predictions in
:mod:`pipeline.scoring.frames`; this module holds the configuration, the candidates, the fitted
pipeline and the tuning protocol.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, NUM_CLASSES, UNLABELED
from pipeline.data.manifest import SPLITS
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.frames import SplitData
from pipeline.scoring.metrics import Scores, confusion_matrix, macro_f1_from_confusion
from pipeline.scoring.postprocess import (
    EPS,
    argmax_labels,
    biased_labels,
    fill_no_face,
    mode_filter,
    smooth_probs,
)
from pipeline.scoring.search import _Evaluator, bias_search, proportional_search, weight_search

SMOOTHERS = ("mean", "median", "mode", "none")
FILLS = ("nearest", "none")
PROTOCOLS = ("val-crossfit", "train", "same")


@dataclass
class EnsembleConfig:
    """What stage three combines, how it post-processes, and where it tunes its choices."""

    split: str = "val"  # the split that is scored (its labels are the ground truth)
    tune_on: str = "val-crossfit"  # val-crossfit | train | same (see the module docstring)
    folds: int = 5  # k for val-crossfit (fewer when the split has fewer videos)
    smooth: str = "mean"  # temporal filter within clips: mean | median | mode | none
    windows: tuple[int, ...] = (1, 5, 11, 25, 51, 101, 201)  # odd filter widths tried (1 = off)
    fill: str = "nearest"  # frames with no face: nearest (copy the nearest face frame) | none
    bias: bool = True  # tune per-class log-probability offsets for macro-F1
    bias_range: float = 2.0  # offsets are searched in [-bias_range, +bias_range] ...
    bias_step: float = 0.1  # ... on a grid of this step
    bias_rounds: int = 3  # coordinate-ascent sweeps over the 8 classes (stops early when stable)
    proportional: bool = True  # the m,n rule of paper 004 for every pair of members
    max_weight: int = 5  # integer weights 0..max_weight (the m,n rule uses 1..max_weight)

    def validate(self) -> None:
        """Raise :class:`PipelineError` naming the first bad option."""
        for name, allowed in (("split", SPLITS), ("tune_on", PROTOCOLS), ("smooth", SMOOTHERS),
                              ("fill", FILLS)):
            if getattr(self, name) not in allowed:
                raise PipelineError(f"ensemble config: {name} {getattr(self, name)!r} is not one"
                                    f" of {', '.join(allowed)}")
        if self.tune_on == "train" and self.split == "train":
            raise PipelineError("ensemble config: tune_on train while scoring train (say"
                                " tune_on = \"same\" to tune on the scored frames)")
        if self.folds < 2:
            raise PipelineError(f"ensemble config: folds {self.folds} (want 2 or more)")
        bad = [w for w in self.windows if w < 1 or w % 2 == 0]
        if bad or not self.windows:
            raise PipelineError(f"ensemble config: windows {list(self.windows)}: want odd"
                                " widths >= 1")
        if (self.max_weight < 1 or self.bias_step <= 0 or self.bias_range < 0
                or self.bias_rounds < 1):
            raise PipelineError("ensemble config: max_weight, bias_step, bias_rounds must be"
                                " positive and bias_range non-negative")

    @property
    def tuning_split(self) -> str:
        """The split the pipeline is fitted on."""
        return self.split if self.tune_on in ("val-crossfit", "same") else self.tune_on

    def bias_grid(self) -> np.ndarray:
        steps = int(round(self.bias_range / self.bias_step))
        # rounded: offsets print as 0.3, not 0.30000000000000004
        return np.round(np.arange(-steps, steps + 1) * self.bias_step, 10)


# ----------------------------------------------------------------------------- combining


def combine(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """float32 [N, 8] = sum_i w_i P_i / sum_i w_i over members with a non-zero weight."""
    weights = np.asarray(weights, dtype=np.float64)
    assert weights.shape == (len(probs),) and (weights >= 0).all() and weights.sum() > 0, weights
    total = None
    for w, p in zip(weights, probs):
        if w > 0:
            term = p * np.float32(w / weights.sum())
            total = term if total is None else total + term
    return total


# ----------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class Choices:
    """A fitted pipeline: everything that was chosen on the tuning frames."""

    combiner: str  # the selected candidate: "mean", a member, "proportional A + B", "weighted"
    weights: tuple[float, ...]  # its weight per member
    fill: str  # "nearest" or "none"
    smooth: str  # "mean", "median", "mode" or "none"
    window: int  # filter width in frames (1 = off)
    bias: tuple[float, ...]  # per-class log-probability offsets (zeros = none)

    def to_json(self, member_names: Sequence[str]) -> dict:
        return {
            "combiner": self.combiner,
            "weights": dict(zip(member_names, self.weights)),
            "fill": self.fill,
            "smooth": self.smooth,
            "window": self.window,
            "bias": dict(zip(CLASSES, self.bias)),
        }


@dataclass
class Fit:
    """The outcome of fitting on one set of tuning clips."""

    candidates: dict[str, tuple[float, ...]]  # every combination rule, its (fitted) weights
    tuning_macro_f1: dict[str, float]  # each candidate's macro-F1 on the tuning frames
    choices: Choices  # the full pipeline built on the best candidate


def pipeline_steps(config: EnsembleConfig) -> list[str]:
    """The post-processing steps after "combine", in the order they are applied and tuned."""
    steps = ["fill"] if config.fill != "none" else []
    smooth = ["smooth"] if config.smooth != "none" else []
    bias = ["bias"] if config.bias else []
    return steps + (bias + smooth if config.smooth == "mode" else smooth + bias)


def candidate_names(member_names: Sequence[str], config: EnsembleConfig) -> list[str]:
    """The combination rules compared, in tie-breaking order (earlier wins a tie)."""
    m = len(member_names)
    names = ["mean"] if m > 1 else []
    names += list(member_names)
    if config.proportional:
        names += [f"proportional {a} + {b}" for a, b in itertools.combinations(member_names, 2)]
    if m > 2 or (m == 2 and not config.proportional):
        names.append("weighted")
    return names


def fit(data: SplitData, member_names: Sequence[str], config: EnsembleConfig) -> Fit:
    """Fit every candidate and the post-processing on ``data`` (the tuning clips only)."""
    if data.labels is None or not (data.labels != UNLABELED).any():
        raise PipelineError(f"no annotated frames to tune on in {len(data.clip_ids)} clips")
    m = len(member_names)
    keep = data.labels != UNLABELED
    y = data.labels[keep]
    evaluator = _Evaluator([p[keep] for p in data.probs], y)
    candidates: dict[str, tuple[float, ...]] = {}
    for name in candidate_names(member_names, config):
        if name == "mean":
            weights = (1,) * m
        elif name == "weighted":
            weights = weight_search(evaluator, m, config.max_weight)
        elif name.startswith("proportional "):
            a, b = name[len("proportional "):].split(" + ")
            i, j = member_names.index(a), member_names.index(b)
            pair = proportional_search(data.probs[i], data.probs[j], data.labels,
                                       config.max_weight)
            weights = tuple(pair.m if k == i else pair.n if k == j else 0 for k in range(m))
        else:
            weights = tuple(int(k == member_names.index(name)) for k in range(m))
        candidates[name] = tuple(float(w) for w in weights)
    tuning = dict(zip(candidates, evaluator.macro_f1s(list(candidates.values())).tolist()))
    combiner = max(tuning, key=lambda name: tuning[name])  # first of the best on a tie

    choices = Choices(combiner, candidates[combiner], config.fill, config.smooth, 1,
                      (0.0,) * NUM_CLASSES)
    probs = _prepare(data, choices)
    for step in pipeline_steps(config):
        if step == "smooth":
            window = _window_search(probs, data, choices, config.windows)
            choices = replace(choices, window=window)
        elif step == "bias":
            smoothed = smooth_probs(probs, data.offsets, choices.smooth, choices.window)
            bias = bias_search(np.log(smoothed[keep] + EPS), y, config.bias_grid(),
                               config.bias_rounds)
            choices = replace(choices, bias=tuple(float(b) for b in bias))
    return Fit(candidates, tuning, choices)


def _prepare(data: SplitData, choices: Choices, fill: bool = True) -> np.ndarray:
    probs = combine(data.probs, choices.weights)
    if fill and choices.fill == "nearest":
        probs = fill_no_face(probs, data.offsets, data.face)
    return probs


def _window_search(probs: np.ndarray, data: SplitData, choices: Choices,
                   windows: Sequence[int]) -> int:
    """The narrowest window whose finished labels score the best macro-F1 on ``data``.

    It lives here rather than in :mod:`pipeline.scoring.search` because it scores the fitted
    pipeline itself (:class:`Choices` and :func:`_finish`).
    """
    keep = data.labels != UNLABELED
    best, best_score = 1, -1.0
    for window in sorted(windows):  # the narrowest of equally good windows
        labels = _finish(probs, data.offsets, replace(choices, window=window), smooth=True,
                         bias=True)
        score = macro_f1_from_confusion(confusion_matrix(data.labels[keep], labels[keep]))
        if score > best_score:
            best, best_score = window, score
    return best


def _finish(probs: np.ndarray, offsets: np.ndarray, choices: Choices, smooth: bool,
            bias: bool) -> np.ndarray:
    """Labels from combined (and filled) probabilities: smoothing, biases, argmax, mode filter."""
    if smooth:
        probs = smooth_probs(probs, offsets, choices.smooth, choices.window)
    if bias and any(choices.bias):
        labels = biased_labels(probs, choices.bias)
    else:
        labels = argmax_labels(probs)
    if smooth and choices.smooth == "mode":
        labels = mode_filter(labels, offsets, choices.window)
    return labels


def predict(data: SplitData, choices: Choices, steps: Sequence[str] | None = None) -> np.ndarray:
    """int8 [N] labels of the pipeline, applying only the named steps (all when None)."""
    steps = ("fill", "smooth", "bias") if steps is None else steps
    probs = _prepare(data, choices, fill="fill" in steps)
    return _finish(probs, data.offsets, choices, smooth="smooth" in steps, bias="bias" in steps)


# ----------------------------------------------------------------------------- cross-fitting


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

    name: str  # "mean", a member name, "proportional A + B", "weighted", "ensemble", "ensemble+..."
    kind: str  # "member" (a run's output as written), "ensemble" (a combination), "pipeline"
    tuned: bool  # whether anything in it was fitted (then: on other frames, unless protocol same)
    scores: Scores


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
                name: {"weights": dict(zip(member_names, weights)),
                       "tuning_macro_f1": self.fit.tuning_macro_f1[name]}
                for name, weights in self.fit.candidates.items()
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
    config.validate()
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

    names = candidate_names(member_names, config)
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
            choices = replace(result.choices, weights=result.candidates[name])
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
                name not in member_names and name != "mean", scores(name)) for name in names]
    for i, name in enumerate(pipeline_names):
        # tuned: the selection among several candidates, a window, biases (not the fill rule)
        tuned = len(names) > 1 or any(step != "fill" for step in steps[:i])
        rows.append(Row(name, "pipeline", tuned, scores(name)))
    return Outcome(rows, records, config.tune_on == "same")
