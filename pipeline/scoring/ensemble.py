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
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.data.labels import CLASSES, NUM_CLASSES, UNLABELED
from pipeline.data.manifest import SPLITS, Clip
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.metrics import Scores, confusion_matrix, macro_f1_from_confusion
from pipeline.scoring.predictions import Predictions, prediction_path

SMOOTHERS = ("mean", "median", "mode", "none")
FILLS = ("nearest", "none")
PROTOCOLS = ("val-crossfit", "train", "same")
EPS = 1e-7  # added before the log so that a probability of exactly 0 stays finite
EXHAUSTIVE_WEIGHT_GRID = 256  # larger weight grids are searched by coordinate ascent
MEDIAN_CHUNK = 4096  # frames per block in the median filter (bounds its [8, block, window] copy)


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
        if self.split not in SPLITS:
            raise PipelineError(f"ensemble config: split {self.split!r} is not one of"
                                f" {', '.join(SPLITS)}")
        if self.tune_on not in PROTOCOLS:
            raise PipelineError(f"ensemble config: tune_on {self.tune_on!r} is not one of"
                                f" {', '.join(PROTOCOLS)}")
        if self.tune_on == "train" and self.split == "train":
            raise PipelineError("ensemble config: tune_on train while scoring train (say"
                                " tune_on = \"same\" to tune on the scored frames)")
        if self.smooth not in SMOOTHERS:
            raise PipelineError(f"ensemble config: smooth {self.smooth!r} is not one of"
                                f" {', '.join(SMOOTHERS)}")
        if self.fill not in FILLS:
            raise PipelineError(f"ensemble config: fill {self.fill!r} is not one of"
                                f" {', '.join(FILLS)}")
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


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Member:
    """One output of one run directory."""

    run_dir: Path  # the run directory
    output: str  # which of its outputs ("main", "fusion", "image", "audio", ...)

    @property
    def name(self) -> str:
        return f"{self.run_dir.name}/{self.output}"

    def path(self, split: str) -> Path:
        return prediction_path(self.run_dir, split, self.output)


@dataclass(eq=False)
class SplitData:
    """The frames of one split, clips concatenated: every member's probabilities, labels, faces."""

    clip_ids: tuple[str, ...]  # clip ids in manifest order
    groups: tuple[str, ...]  # video id of each clip (clips of one video share a fold)
    offsets: np.ndarray  # int64 [n_clips + 1]: clip c is frames offsets[c]:offsets[c + 1]
    probs: np.ndarray  # float32 [n_members, n_frames, 8]
    labels: np.ndarray | None  # int8 [n_frames], -1 = not annotated; None when unlabeled (test)
    face: np.ndarray  # bool [n_frames]: the frame has a face image

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    def frame_index(self, clip_indices: Sequence[int]) -> np.ndarray:
        """Positions of the frames of the given clips, in that order."""
        if len(clip_indices) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.offsets[c], self.offsets[c + 1])
                               for c in clip_indices])

    def subset(self, clip_indices: Sequence[int]) -> "SplitData":
        """A copy holding only the given clips (whole clips, in the given order)."""
        index = self.frame_index(clip_indices)
        lengths = np.diff(self.offsets)[list(clip_indices)]
        return SplitData(
            clip_ids=tuple(self.clip_ids[c] for c in clip_indices),
            groups=tuple(self.groups[c] for c in clip_indices),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            probs=self.probs[:, index],
            labels=None if self.labels is None else self.labels[index],
            face=self.face[index],
        )


_FRAME_NAME = re.compile(r"^(\d{5})\.jpg$")


def face_mask(clip: Clip) -> np.ndarray:
    """bool [n_frames]: frame i has a face iff its image exists (one directory listing per clip)."""
    mask = np.zeros(clip.n_frames, dtype=bool)
    if clip.frames_dir is None or not os.path.isdir(clip.frames_dir):
        return mask
    with os.scandir(clip.frames_dir) as entries:
        for entry in entries:
            match = _FRAME_NAME.match(entry.name)
            if match:
                index = int(match.group(1)) - 1
                if 0 <= index < clip.n_frames:
                    mask[index] = True
    return mask


def clip_probs(predictions: Predictions, clip: Clip, split: str) -> np.ndarray:
    """One clip's [n_frames, 8] probabilities, checked: present, right shape, finite, >= 0."""
    path = predictions.path
    try:
        array = predictions[clip.clip_id]
    except KeyError:
        raise PipelineError(f"{path}: no predictions for {split} clip {clip.clip_id}") from None
    if array.shape != (clip.n_frames, NUM_CLASSES):
        raise PipelineError(f"{path}: clip {clip.clip_id} has predictions of shape"
                            f" {list(array.shape)}, want [{clip.n_frames}, {NUM_CLASSES}]")
    if not np.isfinite(array).all() or (array < 0).any():
        raise PipelineError(f"{path}: clip {clip.clip_id} has negative or non-finite probabilities")
    return array


def check_clip_set(predictions: Predictions, clips: Sequence[Clip], split: str) -> None:
    """Reject a predictions file holding clips the manifest split does not have."""
    extra = sorted(set(predictions) - {c.clip_id for c in clips})
    if extra:
        raise PipelineError(f"{predictions.path}: clip {extra[0]} is not in the {split} manifest"
                            f" ({len(extra)} such clips; wrong --manifests or split?)")


def open_predictions(paths: Sequence[Path], clips: Sequence[Clip], split: str
                     ) -> list[Predictions]:
    """Open each member's predictions file for a split, rejecting clips the manifest lacks."""
    readers = []
    for path in paths:
        if not Path(path).exists():
            raise PipelineError(f"{path}: no such predictions file")
        readers.append(Predictions(path))
        check_clip_set(readers[-1], clips, split)
    return readers


def load_split(paths: Sequence[Path], clips: Sequence[Clip], split: str,
               progress: ProgressFn = silent) -> SplitData:
    """Read each member's predictions file for the given clips of one split, checking every clip."""
    offsets = np.concatenate([[0], np.cumsum([c.n_frames for c in clips])]).astype(np.int64)
    probs = np.empty((len(paths), int(offsets[-1]), NUM_CLASSES), dtype=np.float32)
    progress(ProgressEvent(f"read {split}", total=len(paths) * len(clips)))
    for m, predictions in enumerate(open_predictions(paths, clips, split)):
        for c, clip in enumerate(clips):
            probs[m, offsets[c]:offsets[c + 1]] = clip_probs(predictions, clip, split)
            progress(ProgressEvent(f"read {split}", advance=1))
    labels = None
    if clips and all(c.labels is not None for c in clips):
        labels = np.concatenate([c.labels for c in clips]).astype(np.int8)
    face = (np.concatenate([face_mask(c) for c in clips]) if clips
            else np.zeros(0, dtype=bool))
    return SplitData(tuple(c.clip_id for c in clips), tuple(c.video_id for c in clips),
                     offsets, probs, labels, face)


def clip_data(readers: Sequence[Predictions], clip: Clip, split: str) -> SplitData:
    """One clip as a :class:`SplitData` (for applying a fitted pipeline clip by clip)."""
    probs = np.stack([clip_probs(r, clip, split) for r in readers])
    labels = None if clip.labels is None else clip.labels.astype(np.int8)
    return SplitData((clip.clip_id,), (clip.video_id,), np.array([0, clip.n_frames]), probs,
                     labels, face_mask(clip))


# ----------------------------------------------------------------------------- post-processing


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


def _clip_bounds(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First frame and one-past-last frame of each frame's clip (both [N])."""
    lengths = np.diff(offsets)
    return np.repeat(offsets[:-1], lengths), np.repeat(offsets[1:], lengths)


def fill_no_face(probs: np.ndarray, offsets: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Copy into each frame with no face the probabilities of the nearest face frame of its clip."""
    n = len(face)
    if face.all() or n == 0:
        return probs
    start, end = _clip_bounds(offsets)
    index = np.arange(n)
    previous = np.maximum.accumulate(np.where(face, index, -1))
    following = np.minimum.accumulate(np.where(face, index, n)[::-1])[::-1]
    has_previous = previous >= start
    has_following = following < end
    use_following = has_following & (~has_previous | (following - index < index - previous))
    source = np.where(use_following, following, np.where(has_previous, previous, index))
    return probs[source]


def _window_limits(offsets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    start, end = _clip_bounds(offsets)
    index = np.arange(int(offsets[-1]))
    half = window // 2
    return np.maximum(start, index - half), np.minimum(end, index + half + 1)


def smooth_probs(probs: np.ndarray, offsets: np.ndarray, kind: str, window: int) -> np.ndarray:
    """Moving mean or median of [N, 8] probabilities within each clip (window 1 = unchanged)."""
    if window <= 1 or kind in ("none", "mode") or len(probs) == 0:
        return probs
    if kind == "mean":
        low, high = _window_limits(offsets, window)
        # float64 running sums: float32 would lose precision over a split of millions of frames
        sums = np.zeros((len(probs) + 1, NUM_CLASSES), dtype=np.float64)
        np.cumsum(probs, axis=0, dtype=np.float64, out=sums[1:])
        return ((sums[high] - sums[low]) / (high - low)[:, None]).astype(np.float32)
    if kind == "median":
        out = np.empty_like(probs)
        half = window // 2
        for c in range(len(offsets) - 1):
            # class-major and np.partition: several times faster than np.median over [T, 8, w]
            clip = np.pad(probs[offsets[c]:offsets[c + 1]].T, ((0, 0), (half, half)), mode="edge")
            for s in range(0, clip.shape[1] - 2 * half, MEDIAN_CHUNK):
                block = sliding_window_view(clip[:, s:s + MEDIAN_CHUNK + 2 * half], window, axis=1)
                middle = np.partition(block, half, axis=-1)[..., half]  # [8, frames]
                out[offsets[c] + s:offsets[c] + s + middle.shape[1]] = middle.T
        total = out.sum(axis=1, keepdims=True)
        return np.divide(out, total, out=out, where=total > 0)
    raise ValueError(f"unknown smoothing {kind!r}")


def mode_filter(labels: np.ndarray, offsets: np.ndarray, window: int) -> np.ndarray:
    """Majority label over a moving window within each clip; ties keep the frame's own label."""
    if window <= 1 or len(labels) == 0:
        return labels
    low, high = _window_limits(offsets, window)
    one_hot = np.zeros((len(labels) + 1, NUM_CLASSES), dtype=np.int32)
    one_hot[np.arange(1, len(labels) + 1), labels] = 1
    counts = np.cumsum(one_hot, axis=0, out=one_hot)
    votes = (counts[high] - counts[low]).astype(np.float32)
    votes[np.arange(len(labels)), labels] += 0.5  # own label wins a tie
    return votes.argmax(axis=1).astype(labels.dtype)


def _argmax(scores: np.ndarray) -> np.ndarray:
    return scores.argmax(axis=1).astype(np.int8)


# ----------------------------------------------------------------------------- searches


# _LOWEST_BIT[code] = index of the lowest set bit of a byte: the first class reaching the maximum
_LOWEST_BIT = np.array([(code & -code).bit_length() - 1 if code else 0 for code in range(256)],
                       dtype=np.int8)
EVALUATOR_CHUNK = 32768  # frames per block: a block of every member stays in the CPU cache


def _first_argmax(scores: np.ndarray, maximum: np.ndarray, code: np.ndarray,
                  bits: np.ndarray) -> np.ndarray:
    """Index of the first maximum along axis 0 of a [8, n] block (numpy's argmax rule).

    Much faster than ``argmax(axis=1)`` on [n, 8]: every operation runs over contiguous rows.
    ``maximum``, ``code`` and ``bits`` are scratch buffers of length n.
    """
    np.max(scores, axis=0, out=maximum)
    code[:] = 0
    for c in range(len(scores)):
        np.equal(scores[c], maximum, out=bits.view(bool))
        np.left_shift(bits, c, out=bits)
        np.bitwise_or(code, bits, out=code)
    return _LOWEST_BIT[code]


class _Evaluator:
    """Confusion matrices of argmax(sum_i w_i P_i) on fixed labelled frames, for many weights.

    Where every member's argmax is the same class c, any non-negative weights (not all zero) also
    give c, so those frames are counted once and only the disagreeing ones are re-scored. Those
    are kept class-major ([member, 8, frames]) in cache-sized blocks, and each block is scored for
    every weight vector before moving on.
    """

    def __init__(self, probs: Sequence[np.ndarray], labels: np.ndarray) -> None:
        preds = [p.argmax(axis=1) for p in probs]
        agree = np.ones(len(labels), dtype=bool)
        for p in preds[1:]:
            agree &= p == preds[0]
        self.fixed = confusion_matrix(labels[agree], preds[0][agree])
        rest = np.flatnonzero(~agree)
        self.blocks = []
        for start in range(0, len(rest), EVALUATOR_CHUNK):
            index = rest[start:start + EVALUATOR_CHUNK]
            block = np.stack([p[index].T for p in probs]).astype(np.float32)
            self.blocks.append((block, labels[index].astype(np.intp) * NUM_CLASSES))

    def confusions(self, weights: Sequence[Sequence[float]]) -> np.ndarray:
        """int64 [n_vectors, 8, 8]: one confusion matrix per weight vector."""
        weights = np.asarray(weights, dtype=np.float32).reshape(len(weights), -1)
        assert (weights >= 0).all() and (weights.sum(axis=1) > 0).all(), weights
        counts = np.zeros((len(weights), NUM_CLASSES * NUM_CLASSES), dtype=np.int64)
        for block, truth in self.blocks:
            n = block.shape[2]
            total, term = np.empty((2, NUM_CLASSES, n), dtype=np.float32)
            maximum = np.empty(n, dtype=np.float32)
            code, bits = np.empty((2, n), dtype=np.uint8)
            for v, vector in enumerate(weights):
                used = np.flatnonzero(vector)
                np.multiply(block[used[0]], vector[used[0]], out=total)
                for i in used[1:]:
                    np.multiply(block[i], vector[i], out=term)
                    total += term
                predicted = _first_argmax(total, maximum, code, bits)
                counts[v] += np.bincount(truth + predicted, minlength=NUM_CLASSES * NUM_CLASSES)
        return counts.reshape(-1, NUM_CLASSES, NUM_CLASSES) + self.fixed

    def macro_f1s(self, weights: Sequence[Sequence[float]]) -> np.ndarray:
        return np.atleast_1d(macro_f1_from_confusion(self.confusions(weights)))

    def macro_f1(self, weights: Sequence[float]) -> float:
        return float(self.macro_f1s([weights])[0])


@dataclass(frozen=True)
class ProportionalFit:
    """The best (m, n) of the rule (m P_A + n P_B) / (m + n) and the whole grid of scores."""

    m: int  # weight of the first member
    n: int  # weight of the second member
    grid: np.ndarray  # float64 [max_weight, max_weight]: macro-F1 at m = row + 1, n = column + 1


def proportional_search(first: np.ndarray, second: np.ndarray, labels: np.ndarray,
                        max_weight: int = 5) -> ProportionalFit:
    """Grid-search integer 0 < m, n <= max_weight for macro-F1 on the labelled frames.

    Pairs with the same ratio (1:1, 2:2, ...) give the same argmax, so each ratio is scored once.
    Ties go to the first pair in (m, n) order.
    """
    keep = labels != UNLABELED
    evaluator = _Evaluator([first[keep], second[keep]], labels[keep])
    pairs = list(itertools.product(range(1, max_weight + 1), repeat=2))
    ratios = sorted({(m // math.gcd(m, n), n // math.gcd(m, n)) for m, n in pairs})
    by_ratio = dict(zip(ratios, evaluator.macro_f1s(ratios)))
    grid = np.array([by_ratio[(m // math.gcd(m, n), n // math.gcd(m, n))] for m, n in pairs])
    grid = grid.reshape(max_weight, max_weight)
    best = int(np.argmax(grid))  # first maximum in (m, n) order
    return ProportionalFit(best // max_weight + 1, best % max_weight + 1, grid)


def weight_search(evaluator: _Evaluator, n_members: int, max_weight: int = 5) -> tuple[int, ...]:
    """Integer weights 0..max_weight per member with the best macro-F1 (module docstring)."""
    if (max_weight + 1) ** n_members <= EXHAUSTIVE_WEIGHT_GRID:
        # all zero, or a multiple of a vector already in the grid, is skipped
        grid = [w for w in itertools.product(range(max_weight + 1), repeat=n_members)
                if math.gcd(*w) == 1]
        return grid[int(np.argmax(evaluator.macro_f1s(grid)))]  # first of the best
    weights = (1,) * n_members
    best_score = evaluator.macro_f1(weights)
    changed = True
    while changed:
        changed = False
        for i in range(n_members):
            trials = [weights[:i] + (v,) + weights[i + 1:] for v in range(max_weight + 1)]
            trials = [t for t in trials if t != weights and any(t)]
            scores = evaluator.macro_f1s(trials)
            if scores.max() > best_score:
                weights, best_score, changed = trials[int(np.argmax(scores))], scores.max(), True
    return weights


def bias_search(log_probs: np.ndarray, labels: np.ndarray, grid: np.ndarray,
                rounds: int = 3) -> np.ndarray:
    """Per-class offsets b (float64 [8]) maximising macro-F1 of argmax(log_probs + b).

    Coordinate ascent from b = 0 over ``rounds`` sweeps of the 8 classes (stopping early when a
    sweep changes nothing); :func:`bias_sweep` scores every grid value of one class at once. A
    class's offset moves only on a strict gain; ties go to the value nearest the current one
    (so no evidence, no offset).
    """
    keep = labels != UNLABELED
    class_major = np.ascontiguousarray(log_probs[keep].T, dtype=np.float64)
    labels = labels[keep].astype(np.intp)
    bias = np.zeros(NUM_CLASSES)
    if len(labels) == 0:
        return bias
    current = macro_f1_from_confusion(confusion_matrix(labels, _argmax(log_probs[keep] + bias)))
    for _ in range(rounds):
        moved = False
        for c in range(NUM_CLASSES):
            scores = bias_sweep(class_major, labels, bias, c, grid)
            best = scores.max()
            if best <= current + 1e-12:
                continue
            candidates = np.flatnonzero(scores >= best - 1e-12)
            choice = candidates[np.argmin(np.abs(grid[candidates] - bias[c]))]
            bias[c], current, moved = grid[choice], best, True
        if not moved:
            break
    return bias


def bias_sweep(class_major: np.ndarray, labels: np.ndarray, bias: np.ndarray, c: int,
               grid: np.ndarray) -> np.ndarray:
    """Macro-F1 of argmax(L + bias) with bias[c] set to each grid value (float64 [g]).

    ``class_major`` is L transposed, [8, n]; ``labels`` are all annotated. With the other offsets
    fixed, frame t is predicted c iff bias[c] > d_t = max_{j != c}(L_tj + b_j) - L_tc, else its
    best other class; binning d_t on the grid and accumulating counts gives the confusion matrix
    at every grid value at once. Exact except where two classes tie exactly.
    """
    k, g, n = NUM_CLASSES, len(grid), len(labels)
    others = class_major + bias[:, None]
    others[c] = -np.inf
    best_other = np.empty(n)
    alternative = _first_argmax(others, best_other, *np.empty((2, n), dtype=np.uint8))
    threshold = best_other - class_major[c]
    # at grid[i] a frame is predicted c iff grid[i] > threshold, i.e. iff its bin <= i
    bins = np.searchsorted(grid, threshold, side="right")
    counts = np.bincount((bins * k + labels) * k + alternative,
                         minlength=(g + 1) * k * k).reshape(g + 1, k, k)
    moved = np.cumsum(counts, axis=0)[:g]  # [g, truth, alternative]: frames that move to c
    confusions = counts.sum(axis=0)[None] - moved
    confusions[:, :, c] += moved.sum(axis=2)
    return macro_f1_from_confusion(confusions)


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
        labels = _argmax(np.log(probs + EPS) + np.asarray(choices.bias, dtype=np.float32))
    else:
        labels = _argmax(probs)
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
