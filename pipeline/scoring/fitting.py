"""Fitting stage three's pipeline on tuning frames, and applying it: combine, fill, smooth,
fallback, bias.

:func:`fit_candidates` fits every candidate of every combiner (:mod:`pipeline.scoring.combiners`)
on the tuning clips and keeps the one with the best macro-F1 there (the first on a tie);
:func:`fit_steps` tunes the given post-processing steps greedily in :func:`pipeline_steps` order;
:func:`fit` does both with every configured step. :func:`predict` applies a fitted pipeline
(:class:`Choices`, which names the steps it applies) to any clips. The order and the rules are described in
:mod:`pipeline.scoring.ensemble`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, NUM_CLASSES, UNLABELED
from pipeline.errors import PipelineError
from pipeline.scoring import combiners
from pipeline.scoring.combiners import Combination
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.frames import SplitData
from pipeline.metrics.scores import confusion_matrix, macro_f1_from_confusion
from pipeline.scoring.postprocess import (
    EPS,
    argmax_labels,
    biased_labels,
    fill_no_face,
    low_confidence,
    mode_filter,
    smooth_probs,
)
from pipeline.metrics.search import WeightScorer, bias_search


@dataclass(frozen=True)
class Choices:
    """A fitted pipeline: everything that was chosen on the tuning frames."""

    combination: Combination  # the selected candidate, fitted
    fill: str  # "nearest" or "none"
    smooth: str  # "mean", "median", "mode" or "none"
    window: int  # filter width in frames (1 = off)
    bias: tuple[float, ...]  # per-class log-probability offsets (zeros = none)
    steps: tuple[str, ...] = ("fill", "smooth", "bias")  # the post-processing steps applied
    # confidence fallback: only frames whose top probability is below this take the smoothed
    # prediction (None: every frame does, plain smoothing); used when "fallback" is in steps
    threshold: float | None = None

    @property
    def combiner(self) -> str:
        """The selected candidate's name: "mean", a member, "proportional A + B", "weighted"."""
        return self.combination.name

    def to_json(self, member_names: Sequence[str]) -> dict:
        return {
            "combiner": self.combiner,
            **self.combination.to_json(member_names),
            "fill": self.fill,
            "smooth": self.smooth,
            "window": self.window,
            "bias": dict(zip(CLASSES, self.bias)),
            "fallback_threshold": self.threshold,
            "steps": list(self.steps),
        }


@dataclass
class Fit:
    """The outcome of fitting on one set of tuning clips."""

    candidates: dict[str, Combination]  # every candidate, fitted
    tuning_macro_f1: dict[str, float]  # each candidate's macro-F1 on the tuning frames
    choices: Choices  # the pipeline with every configured step, built on the best candidate
    final: Choices | None = None  # the steps decided to help (nested decisions); None: choices
    decision: dict | None = None  # how they were decided, for scores.json
    selection: dict | None = None  # the anchored rule's record (pipeline.scoring.selection)
    kept_anchor: str | None = None  # the member applied alone when the anchored rule kept it

    @property
    def applied(self) -> Choices:
        """The pipeline actually used for predictions."""
        return self.choices if self.final is None else self.final


def pipeline_steps(config: EnsembleConfig) -> list[str]:
    """The post-processing steps after "combine", in the order they are applied and tuned."""
    steps = ["fill"] if config.fill != "none" else []
    smooth = (["smooth"] + (["fallback"] if config.fallback else [])
              if config.smooth != "none" else [])
    bias = ["bias"] if config.bias else []
    return steps + (bias + smooth if config.smooth == "mode" else smooth + bias)


def _tuning_scores(fitted: list[Combination], data: SplitData, evaluator: WeightScorer
                   ) -> list[float]:
    """Macro-F1 of each fitted candidate on the labelled tuning frames (weighted means at once)."""
    weighted = [c.weights for c in fitted if c.weights is not None]
    scores = iter(evaluator.macro_f1s(weighted).tolist() if weighted else [])
    keep = data.labels != UNLABELED
    out = []
    for combination in fitted:
        if combination.weights is not None:
            out.append(next(scores))
        else:
            labels = argmax_labels(combiners.apply(combination, data.probs)[keep])
            out.append(float(macro_f1_from_confusion(confusion_matrix(data.labels[keep], labels))))
    return out


def fit_candidates(data: SplitData, member_names: Sequence[str], config: EnsembleConfig
                   ) -> tuple[dict[str, Combination], dict[str, float], str]:
    """Fit every candidate on ``data``: (candidates, their tuning macro-F1, the best one's name)."""
    if data.labels is None or not (data.labels != UNLABELED).any():
        raise PipelineError(f"no annotated frames to tune on in {len(data.clip_ids)} clips")
    keep = data.labels != UNLABELED
    evaluator = WeightScorer([p[keep] for p in data.probs], data.labels[keep])
    fitted = [combiners.combiner(c.rule).fit(c, data, evaluator, config)
              for c in combiners.candidates(member_names, config)]
    candidates = {c.name: c for c in fitted}
    tuning = dict(zip(candidates, _tuning_scores(fitted, data, evaluator)))
    best = max(tuning, key=lambda name: tuning[name])  # first of the best on a tie
    return candidates, tuning, best


def fit_steps(data: SplitData, combination: Combination, config: EnsembleConfig,
              steps: Sequence[str]) -> Choices:
    """Tune the given post-processing steps (a sub-sequence of :func:`pipeline_steps`) greedily,
    in order, on ``data``; a step not given is off (fill none, smoothing none, no biases)."""
    keep = data.labels != UNLABELED
    y = data.labels[keep]
    smooths = "smooth" in steps or "fallback" in steps
    choices = Choices(combination, config.fill if "fill" in steps else "none",
                      config.smooth if smooths else "none", 1, (0.0,) * NUM_CLASSES,
                      tuple(steps))
    probs = _prepare(data, choices)
    for step in steps:
        if step == "smooth":
            window = _window_search(probs, data, choices, config.windows)
            choices = replace(choices, window=window)
        elif step == "fallback":
            # given the smooth step's window when it is applied; else the window is tuned too
            windows = [choices.window] if "smooth" in steps else config.windows
            window, threshold = _fallback_search(probs, data, choices, windows,
                                                 config.fallback_thresholds)
            choices = replace(choices, window=window, threshold=threshold)
        elif step == "bias":
            smoothed = _smoothed_probs(probs, data.offsets, choices, "fallback" in steps)
            bias = bias_search(np.log(smoothed[keep] + EPS), y, config.bias_grid(),
                               config.bias_rounds)
            choices = replace(choices, bias=tuple(float(b) for b in bias))
    return choices


def fit(data: SplitData, member_names: Sequence[str], config: EnsembleConfig) -> Fit:
    """Fit every candidate and every configured post-processing step on ``data`` (the tuning
    clips only); which steps to apply is decided in :mod:`pipeline.scoring.crossfit`."""
    candidates, tuning, best = fit_candidates(data, member_names, config)
    return Fit(candidates, tuning,
               fit_steps(data, candidates[best], config, pipeline_steps(config)))


def _prepare(data: SplitData, choices: Choices, fill: bool = True) -> np.ndarray:
    probs = combiners.apply(choices.combination, data.probs)
    if fill and choices.fill == "nearest":
        probs = fill_no_face(probs, data.offsets, data.face)
    return probs


def _window_search(probs: np.ndarray, data: SplitData, choices: Choices,
                   windows: Sequence[int]) -> int:
    """The narrowest window whose finished labels score the best macro-F1 on ``data``.

    It lives here rather than in :mod:`pipeline.metrics.search` because it scores the fitted
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


def _fallback_search(probs: np.ndarray, data: SplitData, choices: Choices,
                     windows: Sequence[int], thresholds: Sequence[float]
                     ) -> tuple[int, float | None]:
    """(window, threshold) of the confidence fallback with the best macro-F1 on ``data``.

    Every threshold (then None: every frame smoothed) for every window; ties go to the narrowest
    window, then the lowest threshold (the fewest frames changed). Each window is smoothed once.
    """
    keep = data.labels != UNLABELED
    best, best_score = (choices.window, None), -1.0
    for window in sorted(windows):
        at_window = replace(choices, window=window)
        smoothed = (smooth_probs(probs, data.offsets, choices.smooth, window)
                    if choices.smooth in ("mean", "median") else None)
        for threshold in (*sorted(thresholds), None):
            labels = _finish(probs, data.offsets, replace(at_window, threshold=threshold),
                             smooth=True, bias=True, fallback=True, smoothed=smoothed)
            score = macro_f1_from_confusion(confusion_matrix(data.labels[keep], labels[keep]))
            if score > best_score:
                best, best_score = (window, threshold), score
    return best


def _smoothed_probs(probs: np.ndarray, offsets: np.ndarray, choices: Choices, fallback: bool,
                    smoothed: np.ndarray | None = None) -> np.ndarray:
    """The probabilities after a mean or median filter (``smoothed``: computed already), only on
    the low-confidence frames under the fallback; ``probs`` as they are for ``mode``/``none``."""
    if choices.smooth not in ("mean", "median"):
        return probs
    if smoothed is None:
        smoothed = smooth_probs(probs, offsets, choices.smooth, choices.window)
    low = low_confidence(probs, choices.threshold) if fallback else None
    return smoothed if low is None else np.where(low[:, None], smoothed, probs)


def _finish(probs: np.ndarray, offsets: np.ndarray, choices: Choices, smooth: bool,
            bias: bool, fallback: bool = False, smoothed: np.ndarray | None = None
            ) -> np.ndarray:
    """Labels from combined (and filled) probabilities: smoothing (with the confidence fallback:
    only on frames whose own top probability is below the threshold), biases, argmax, mode
    filter. ``smoothed``: the mean or median filter's output, when computed already."""
    own = probs
    if smooth:
        probs = _smoothed_probs(own, offsets, choices, fallback, smoothed)
    if bias and any(choices.bias):
        labels = biased_labels(probs, choices.bias)
    else:
        labels = argmax_labels(probs)
    if smooth and choices.smooth == "mode":
        filtered = mode_filter(labels, offsets, choices.window)
        low = low_confidence(own, choices.threshold) if fallback else None
        labels = filtered if low is None else np.where(low, filtered, labels)
    return labels


def predict_probs(data: SplitData, choices: Choices, steps: Sequence[str] | None = None
                  ) -> np.ndarray:
    """float32 [N, 8]: the pipeline's probabilities before its decisions: combined, filled and
    smoothed as the named steps (its own when None) say (under the confidence fallback only the
    low-confidence frames take the smoothed probabilities, as in :func:`predict`), then the
    biases applied as ``softmax(log p + bias)``, so that their argmax is :func:`predict`'s labels
    (before a mode filter, which acts on labels and has no probabilities)."""
    steps = choices.steps if steps is None else steps
    probs = _prepare(data, choices, fill="fill" in steps)
    if "smooth" in steps or "fallback" in steps:
        probs = _smoothed_probs(probs, data.offsets, choices, fallback="fallback" in steps)
    if "bias" in steps and any(choices.bias):
        logits = np.log(probs + EPS) + np.asarray(choices.bias, dtype=np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
    return np.asarray(probs, dtype=np.float32)


def predict(data: SplitData, choices: Choices, steps: Sequence[str] | None = None) -> np.ndarray:
    """int8 [N] labels of the pipeline, applying only the named steps (its own when None)."""
    steps = choices.steps if steps is None else steps
    probs = _prepare(data, choices, fill="fill" in steps)
    return _finish(probs, data.offsets, choices, smooth="smooth" in steps or "fallback" in steps,
                   bias="bias" in steps, fallback="fallback" in steps)
