"""Stage three's protocol: ensembles of per-frame predictions and their post-processing, tuned
without scoring leakage, and its configuration (:class:`EnsembleConfig`).

A *member* is one output of one run directory, named ``<run_dir_name>/<output>``. The ways of
combining members are plug-ins (:mod:`pipeline.scoring.combiners`, one file each):

* ``mean``: all weights 1 (plain soft voting, nothing tuned);
* ``member``: a member alone (the members' own rows);
* ``proportional A + B``: the rule of paper 004, ``(m P_A + n P_B) / (m + n)`` with integers
  ``0 < m, n <= max_weight`` (5: the 25 pairs) grid-searched, for every pair of members;
* ``weighted``: integer weights ``0..max_weight`` (5) per member, searched exhaustively when
  the grid has at most 256 points (three members or fewer), otherwise by coordinate ascent
  from all-ones (each member's weight in turn set to its best value, sweeps until nothing
  changes). It is left out for exactly two members when the proportional rule covers them.

Each combiner owns its options (``[combiner.<name>]``, ``--set combiner.<name>.<key>=value``:
``combiner.proportional.enabled``, ``combiner.proportional.max_weight``,
``combiner.weighted.max_weight``); this config keeps what every rule shares.

The fitted pipeline (:class:`pipeline.scoring.fitting.Choices`) applies, in order:

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
   **fallback** (``EnsembleConfig.fallback``, off by default; issue 21's confidence fallback):
   only the frames whose own top probability (combined and filled, before smoothing) is below a
   threshold take the smoothed prediction; the others keep their own. The threshold is tuned from
   ``fallback_thresholds`` and "every frame" (plain smoothing), the lowest of equally good ones,
   given the smooth step's window when smoothing is applied, else jointly with the window. A
   step of its own: applied only where the nested decisions below keep it;
4. **bias**: per-class offsets added to log-probabilities before the argmax, tuned for macro-F1
   by coordinate ascent (each class's offset in turn set to its best value on a grid, holding
   the others; the best value is found exactly for the whole grid from one cumulative count).

Each step is tuned greedily given the previous ones. With ``mode`` the bias step comes before the
smoothing step (biases act on probabilities, the mode filter on the labels they give).

**Selection** (``EnsembleConfig.selection``): ``anchored`` (default) applies the best member alone
unless the pipeline above gains clearly over it on held-out inner folds of the fitting clips;
``best`` always applies the pipeline above. The rule and why: :mod:`pipeline.scoring.selection`.

**Nested decisions** (``EnsembleConfig.nested``, default on): whether fill, smoothing and biases
are applied at all is decided on the fitting clips only, by inner folds over them (whole videos,
the same fold rule, ``inner_folds``): each inner fold selects its candidate and tunes the steps on
the other inner folds and predicts its own clips; then, step by step in the order above, a step
is kept iff it raises the pooled macro-F1 of those held-out predictions (strictly: a tie keeps the
simpler pipeline), later steps being tuned with the steps kept so far. The final pipeline is then
tuned on all fitting clips with the kept steps only. With fewer than two videos to fit on there
are no inner folds, nothing can show that a step helps, and none is applied (recorded as
unchecked); ``nested = false`` applies every configured step unchecked. Inside
``val-crossfit`` this runs once per outer fold, so the scored fold is never seen; the rows of the
single steps (``ensemble+fill``, ...) still apply every configured step, to show what each does.

**Uncertainty**: every row's macro-F1 carries a clip-level bootstrap interval
(:mod:`pipeline.scoring.bootstrap`; ``bootstrap`` resamples, ``bootstrap_seed``, ``confidence``),
and the final row a paired bootstrap of its difference from the best member.

Tuning protocol (``EnsembleConfig.tune_on``): nothing is tuned on the frames it is scored on.

* ``val-crossfit`` (default): the scored split's clips are split into k folds (whole videos: the
  ``_left``/``_right`` clips of one video share a fold; deterministic: videos by decreasing frame
  count, each to the fold with the fewest frames so far, ties to the lower fold). Each fold's
  frames are predicted by a pipeline fitted on the other folds only.
* ``train``: the pipeline is fitted on another split's predictions (e.g. train) and scored on val.
* ``same``: fitted and scored on the same frames; optimistic, and labelled so.

For the test split one pipeline is fitted on all of the tuning split (val, or the declared one).

The steps themselves are in :mod:`pipeline.scoring.postprocess`, the searches that tune them in
:mod:`pipeline.metrics.search`, fitting and applying the pipeline in
:mod:`pipeline.scoring.fitting`, the folds and the scored rows in :mod:`pipeline.scoring.crossfit`,
and reading the members' predictions in :mod:`pipeline.scoring.frames`; this module holds the
configuration and its choice lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from pipeline.data.manifest import SPLITS
from pipeline.errors import PipelineError
from pipeline.scoring import combiners


class Smoother(str, Enum):
    """Temporal filters within clips (``EnsembleConfig.smooth``)."""

    mean = "mean"
    median = "median"
    mode = "mode"
    none = "none"


class Fill(str, Enum):
    """What frames with no face get (``EnsembleConfig.fill``)."""

    nearest = "nearest"
    none = "none"


class Selection(str, Enum):
    """What the final row applies (``EnsembleConfig.selection``; see
    :mod:`pipeline.scoring.selection`)."""

    anchored = "anchored"  # the best member by its dev score unless the ensemble's gain is clear
    best = "best"  # the candidate and steps that score best on the fitting clips


class Protocol(str, Enum):
    """Where the choices are fitted (``EnsembleConfig.tune_on``)."""

    val_crossfit = "val-crossfit"
    train = "train"
    same = "same"


def values(choices: type[Enum]) -> tuple[str, ...]:
    return tuple(member.value for member in choices)


SMOOTHERS = values(Smoother)
FILLS = values(Fill)
PROTOCOLS = values(Protocol)
SELECTIONS = values(Selection)
ANCHORS = ("fitting", "dev")


@dataclass
class EnsembleConfig:
    """What stage three combines, how it post-processes, and where it tunes its choices."""

    split: str = "val"  # the split that is scored (its labels are the ground truth)
    tune_on: str = "val-crossfit"  # val-crossfit | train | same (see the module docstring)
    folds: int = 5  # k for val-crossfit (fewer when the split has fewer videos)
    smooth: str = "mean"  # temporal filter within clips: mean | median | mode | none
    windows: tuple[int, ...] = (1, 5, 11, 25, 51, 101, 201)  # odd filter widths tried (1 = off)
    fill: str = "nearest"  # frames with no face: nearest (copy the nearest face frame) | none
    # confidence fallback (off by default): only frames whose top probability is below a tuned
    # threshold take the smoothed prediction; a step of its own, decided like the others
    fallback: bool = False
    fallback_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # tried
    bias: bool = True  # tune per-class log-probability offsets for macro-F1
    bias_range: float = 2.0  # offsets are searched in [-bias_range, +bias_range] ...
    bias_step: float = 0.1  # ... on a grid of this step
    bias_rounds: int = 3  # coordinate-ascent sweeps over the 8 classes (stops early when stable)
    # each combiner's own options ([combiner.<name>], --set combiner.<name>.<key>=value; see
    # pipeline.scoring.combiners): built into its Config, defaults for those not given
    combiner: dict[str, Any] = field(default_factory=dict)
    nested: bool = True  # decide by inner folds whether fill, smoothing and biases are applied
    selection: str = "anchored"  # anchored | best (see pipeline.scoring.selection)
    # anchored: the anchor member is the best on the fitting clips ("fitting") or by its run's
    # dev-slice score ("dev": no validation label, but the demo's 3 dev videos rank it wrongly)
    anchor: str = "fitting"
    # anchored: the ensemble replaces the anchor member only when its gain on held-out inner
    # folds is positive in at least this share of paired video resamples
    clear_gain: float = 0.95
    min_gain: float = 0.0  # ... and its estimate is above this (macro-F1 points, 0 = any gain)
    # ... and the fitting clips hold at least this many videos (fewer: the anchor is kept; a
    # bootstrap over so few videos says "clear" too easily, see pipeline.scoring.selection)
    min_videos: int = 10
    selection_resamples: int = 1000  # paired video resamples of that decision
    inner_folds: int = 5  # k of those inner folds (fewer when the fitting clips have fewer videos)
    bootstrap: int = 2000  # resamples of the clip-level bootstrap (0 = no intervals)
    bootstrap_seed: int = 0  # seed of those resamples
    confidence: float = 0.95  # level of the bootstrap intervals

    def __post_init__(self) -> None:
        """Raise :class:`PipelineError` naming the first bad option."""
        for name, allowed in (("split", SPLITS), ("tune_on", PROTOCOLS), ("smooth", SMOOTHERS),
                              ("fill", FILLS), ("selection", SELECTIONS),
                              ("anchor", ANCHORS)):
            value = getattr(self, name)
            if isinstance(value, Enum):  # a choice given as the Enum itself: store its value
                value = value.value
                setattr(self, name, value)
            if value not in allowed:
                raise PipelineError(f"ensemble config: {name} {value!r} is not one"
                                    f" of {', '.join(allowed)}")
        self.windows = tuple(self.windows)
        self.fallback_thresholds = tuple(float(t) for t in self.fallback_thresholds)
        if not self.fallback_thresholds or not all(0 < t <= 1 for t in self.fallback_thresholds):
            raise PipelineError(f"ensemble config: fallback_thresholds"
                                f" {list(self.fallback_thresholds)}: want values in (0, 1]")
        if (not 0 < self.clear_gain <= 1 or self.selection_resamples < 1 or self.min_gain < 0
                or self.min_videos < 2):
            raise PipelineError(f"ensemble config: clear_gain {self.clear_gain} (want in (0, 1]),"
                                f" selection_resamples {self.selection_resamples} (want >= 1),"
                                f" min_gain {self.min_gain} (want >= 0), min_videos"
                                f" {self.min_videos} (want >= 2)")
        if self.tune_on == "train" and self.split == "train":
            raise PipelineError("ensemble config: tune_on train while scoring train (say"
                                " tune_on = \"same\" to tune on the scored frames)")
        if self.folds < 2 or self.inner_folds < 2:
            raise PipelineError(f"ensemble config: folds {self.folds}, inner_folds"
                                f" {self.inner_folds} (want 2 or more)")
        if self.bootstrap < 0 or not 0 < self.confidence < 1:
            raise PipelineError(f"ensemble config: bootstrap {self.bootstrap} (want >= 0),"
                                f" confidence {self.confidence} (want between 0 and 1)")
        bad = [w for w in self.windows if w < 1 or w % 2 == 0]
        if bad or not self.windows:
            raise PipelineError(f"ensemble config: windows {list(self.windows)}: want odd"
                                " widths >= 1")
        if self.bias_step <= 0 or self.bias_range < 0 or self.bias_rounds < 1:
            raise PipelineError("ensemble config: bias_step, bias_rounds must be positive and"
                                " bias_range non-negative")
        self.combiner = combiners.options(self.combiner)

    @property
    def tuning_split(self) -> str:
        """The split the pipeline is fitted on."""
        return self.split if self.tune_on in ("val-crossfit", "same") else self.tune_on

    def bias_grid(self) -> np.ndarray:
        steps = int(round(self.bias_range / self.bias_step))
        # rounded: offsets print as 0.3, not 0.30000000000000004
        return np.round(np.arange(-steps, steps + 1) * self.bias_step, 10)
