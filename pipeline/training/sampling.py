"""Which frames train, and how often per epoch: label purity, majority subsampling, class balance,
equal-interval frames.

A frame is **trainable** when it is labelled (``-1`` never is a target) and meets its head's needs
(a face, audio, a pure enough dynamic window; see ``Head.trainable``). Each epoch every trainable
frame is drawn ``k`` times, ``k`` random with expectation ``rate[class]``:

* ``balance = "none"``: rate 1, every trainable frame once;
* ``balance = "subsample"`` (Kim et al. 2023): classes with more than ``majority_cap`` times the
  median class count are subsampled to that many frames per epoch (a fresh random subset every
  epoch); all frames of the other (minority) classes are kept. The paper subsamples "the majority
  class such as 'Happiness'" and keeps every frame of the minority classes, without a number. On
  its Table 1 train counts the median is 56,352 frames (between Surprise and Sadness): the
  default cap of 1x the median (``kim2023``) cuts Neutral, Other, Happiness and Sadness to
  56,352 frames each and keeps Anger, Disgust, Fear and Surprise whole; a cap of 2x (this
  project's earlier default) would leave Happiness whole, which the paper names as subsampled;
* ``balance = "balanced"``: every class is drawn equally often (rare classes repeat); the epoch
  keeps about its original size.

Rates come from class counts over the whole training split, computed once before training; the
draw itself happens clip by clip as clips stream in, from the run's seeded generator.

``interval = k`` (Yu et al. 2025) trains on every k-th frame of each clip only
(:func:`equal_interval`), for any head; class rates are counted over those frames.

Label purity (``purity = true``, as in the ``kim2023`` preset) is off by default: where label runs
are short next to the windows (the demo's runs last 10-40 frames) it keeps only the frames of the
longest runs (a labelled demo training frame keeps at least one window in 34% of cases with the
paper's rule, ``purity_over = "window"``, 39% with the lenient ``"labelled"``), and heads learn
less. On Aff-Wild2, whose runs are long, it drops few frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.data.labels import NUM_CLASSES, UNLABELED
from pipeline.errors import PipelineError
from pipeline.training.windows import PAPER_THRESHOLDS, PAPER_WINDOWS, PURITY_RULES

BALANCE_MODES = ("none", "subsample", "balanced")
_WINDOW_NAME = re.compile(r"_w(\d+)$")


@dataclass
class SamplingConfig:
    balance: str = "none"  # "none", "subsample" (cap majority classes) or "balanced" (equalise)
    majority_cap: float = 1.0  # "subsample": a class keeps at most this x the median class count
    purity: bool = False  # dynamic audio windows train only when pure enough (kim2023 preset)
    # What purity divides by: "window" (every frame of the window: the paper) or "labelled"
    # (its labelled frames only, lenient); see pipeline.training.windows.
    purity_over: str = "window"
    windows: tuple[int, ...] = PAPER_WINDOWS  # window lengths (frames) that have a threshold
    thresholds: tuple[float, ...] = PAPER_THRESHOLDS  # purity threshold of each window length
    interval: int = 1  # train on every k-th frame of each clip only (yu2025); 1 = every frame

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_MODES:
            raise PipelineError(f"sampling.balance {self.balance!r}: choose from "
                                f"{', '.join(BALANCE_MODES)}")
        if self.majority_cap <= 0:
            raise PipelineError(f"sampling.majority_cap {self.majority_cap}: need a positive number")
        if self.purity_over not in PURITY_RULES:
            raise PipelineError(f"sampling.purity_over {self.purity_over!r}: choose from "
                                f"{', '.join(PURITY_RULES)}")
        if len(self.windows) != len(self.thresholds):
            raise PipelineError(f"sampling.windows has {len(self.windows)} lengths but "
                                f"sampling.thresholds {len(self.thresholds)} values")
        if self.interval < 1:
            raise PipelineError(f"sampling.interval {self.interval}: need at least 1")


def purity_rule(audio_arrays: tuple[str, ...], config: SamplingConfig
                ) -> tuple[tuple[int, ...], tuple[float, ...], str] | None:
    """Window length and purity threshold of each dynamic audio array, and what purity divides
    by (``config.purity_over``); None when purity is off.

    An array's window length is read from its name (``<extractor>_w<frames>``, as stage one
    names them), so the rule cannot silently pair an array with another window's threshold.
    """
    if not config.purity or not audio_arrays:
        return None
    thresholds = dict(zip(config.windows, config.thresholds))
    lengths = []
    for name in audio_arrays:
        match = _WINDOW_NAME.search(name)
        if match is None:
            raise PipelineError(f"audio array {name!r}: label purity needs the window length in its "
                                "name (<extractor>_w<frames>); or set sampling.purity=false")
        length = int(match.group(1))
        if length not in thresholds:
            raise PipelineError(f"audio array {name!r}: no purity threshold for {length}-frame "
                                f"windows (sampling.windows = {list(config.windows)})")
        lengths.append(length)
    return tuple(lengths), tuple(thresholds[length] for length in lengths), config.purity_over


def class_counts(labels: np.ndarray, trainable: np.ndarray) -> np.ndarray:
    """int64 [8]: trainable frames per class."""
    labels = np.asarray(labels)[np.asarray(trainable, dtype=bool)]
    labels = labels[labels != UNLABELED]
    return np.bincount(labels.astype(np.int64), minlength=NUM_CLASSES).astype(np.int64)


def class_rates(counts: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """float64 [8]: expected draws per trainable frame of each class, per epoch."""
    counts = np.asarray(counts, dtype=np.float64)
    rates = np.ones(NUM_CLASSES)
    present = counts > 0
    if config.balance == "none" or not present.any():
        return rates
    if config.balance == "subsample":
        cap = config.majority_cap * float(np.median(counts[present]))
        rates[present] = np.minimum(1.0, cap / counts[present])
    else:  # "balanced": each present class gets total / n_present draws
        rates[present] = counts.sum() / present.sum() / counts[present]
    return rates


def draw(labels: np.ndarray, trainable: np.ndarray, rates: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
    """int64 [N]: how many times each frame trains this epoch (0 for frames that are not trainable).

    ``floor(rate)`` draws plus one more with probability ``rate - floor(rate)``, so the expected
    count is exactly the class rate. One uniform number is drawn per frame, trainable or not, so
    the generator advances by the same amount whatever the masks are.
    """
    labels = np.asarray(labels).astype(np.int64)
    trainable = np.asarray(trainable, dtype=bool) & (labels != UNLABELED)
    rate = np.where(trainable, rates[np.where(trainable, labels, 0)], 0.0)
    whole = np.floor(rate)
    extra = rng.random(labels.size) < rate - whole
    return (whole + extra).astype(np.int64)


def equal_interval(offsets: np.ndarray, interval: int) -> np.ndarray:
    """bool [N]: frames ``0, k, 2k, ...`` of each clip (clip ``i`` is rows offsets[i]:offsets[i+1]).

    Yu et al. 2025 select training images "at equal time intervals". The grid starts at each
    clip's first frame and is the same every epoch (the paper's fixed selection); the other
    frames still count for validation and prediction. ``interval`` 1 keeps every frame.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    position = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], sizes)
    return position % interval == 0
