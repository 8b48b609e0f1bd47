"""The final row's selection rule: the best member unless the ensemble's gain is clear.

**Why.** On a validation split of few videos the choices of the ensemble pipeline (which
candidate, which steps) are made on a handful of fitting videos, and the small change of the
members' probabilities that fp32 instead of bf16 features cause after training flips them. The
plain rule "the candidate and steps that score best on the fitting clips" (``selection =
"best"``) then puts the final row below the best member and moves it with every perturbation of
the members; this rule keeps the best member's score and spread (docs/stability.md has the
measurements; tests/bench/bench_stability.py makes them).

**The rule** (``selection = "anchored"``, the default), inside every fit, on the fitting clips only:

1. The *anchor* is the member with the best macro-F1 on the fitting clips (``anchor =
   "fitting"``, the default: a choice among a few fixed members, nothing tuned), or, with
   ``anchor = "dev"``, the member with the best macro-F1 on its own run's dev slice of the training
   videos (``metrics.json``'s ``dev_macro_f1``, written by heads that select on dev; members
   without one are not anchors, and with none the fitting clips decide). ``dev`` reads no
   validation label, but a dev slice of a few training videos can rank the members unlike
   validation does (the demo's does), so the default is ``fitting``. Either way the anchor's rows
   are honest: the scored fold is not among the fitting clips. Its predictions on the fitting
   clips are the ones it was chosen on, which favours it a little in step 3, i.e. towards the
   simpler pipeline.
2. The *challenger* is the pipeline the ``best`` rule builds: the best candidate and the steps the
   nested decisions keep (:mod:`pipeline.scoring.crossfit`). Its held-out predictions on the fitting
   clips come from the inner folds those decisions already ran: each inner fold's clips predicted
   by a candidate selected and steps tuned on the other inner folds.
3. The challenger replaces the anchor only if its gain is *clear*: the paired bootstrap over the
   fitting videos (``selection_resamples`` resamples, :mod:`pipeline.scoring.bootstrap`) of
   macro-F1(challenger's held-out predictions) minus macro-F1(anchor's predictions as written) is
   positive in at least ``clear_gain`` (0.95) of the resamples, its estimate is above ``min_gain``
   (0), and the fitting clips hold at least ``min_videos`` (10) videos. Otherwise the fit applies
   the anchor alone (no step), and its record says which condition failed. The video count is a
   condition because a bootstrap over a handful of videos says "clear" too easily (5 videos have
   only 126 distinct resamples).

So the final row equals the best member unless combining helps on held-out videos in nearly every
resample of them, and a perturbation can only move it where the gain is near that bar. The scored
fold is never seen by any of this: ``val-crossfit`` runs the rule once per outer fold on the
other folds.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pipeline.data.labels import NUM_CLASSES
from pipeline.scoring.bootstrap import clip_confusions, paired_difference, resample_counts
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.scoring.fitting import Choices, Fit
from pipeline.scoring.frames import SplitData
from pipeline.metrics.scores import argmax_labels


def dev_anchor(member_names: Sequence[str], dev_macro_f1: Mapping[str, float]) -> str | None:
    """The member with the best dev macro-F1 (the first on a tie); None when none has one."""
    scored = [name for name in member_names if dev_macro_f1.get(name) is not None]
    return max(scored, key=lambda name: dev_macro_f1[name], default=None)


def anchor_choices(fit: Fit, anchor: str) -> Choices:
    """The anchor member alone, as a pipeline with no post-processing step."""
    return Choices(fit.candidates[anchor], "none", "none", 1, (0.0,) * NUM_CLASSES, steps=())


def anchored(fit: Fit, data: SplitData, member_names: Sequence[str], config: EnsembleConfig,
             anchor: str | None, held_out: np.ndarray | None) -> Fit:
    """Apply the rule to a fit on ``data``: the fit as it is (the challenger kept) or with the
    anchor member alone as its applied pipeline, and a record of why in ``fit.selection``.

    ``anchor``: the dev-chosen member (None: the best member on ``data``); ``held_out``: the
    challenger's held-out labels on every frame of ``data`` (None: no inner folds).
    """
    source = "train-dev"
    if anchor is None:
        source = "fitting clips"
        anchor = max((n for n in member_names), key=lambda n: fit.tuning_macro_f1[n])
    record: dict = {"rule": "anchored", "anchor": anchor, "anchor_chosen_on": source,
                    "clear_gain": config.clear_gain, "min_gain": config.min_gain,
                    "min_videos": config.min_videos}
    n_videos = len(set(data.groups))
    if n_videos < config.min_videos:
        record.update(kept="anchor", why=f"{n_videos} videos to fit on (fewer than"
                      f" {config.min_videos}): no gain can be clear")
        return _keep_anchor(fit, anchor, record)
    if held_out is None:
        record.update(kept="anchor", why="no held-out predictions of the ensemble (no inner "
                      "folds): its gain cannot be measured")
        return _keep_anchor(fit, anchor, record)
    index = member_names.index(anchor)
    anchor_labels = argmax_labels(data.probs[index])
    counts = resample_counts(data.groups, config.selection_resamples, config.bootstrap_seed)
    gain = paired_difference(clip_confusions(data.labels, held_out, data.offsets),
                             clip_confusions(data.labels, anchor_labels, data.offsets),
                             counts, config.confidence)
    clear = (gain.estimate > config.min_gain and gain.share_positive >= config.clear_gain)
    record.update(held_out_gain=gain.to_json(), kept="ensemble" if clear else "anchor")
    if clear:
        fit.selection = record
        return fit
    return _keep_anchor(fit, anchor, record)


def _keep_anchor(fit: Fit, anchor: str, record: dict) -> Fit:
    return Fit(fit.candidates, fit.tuning_macro_f1, fit.choices, anchor_choices(fit, anchor),
               fit.decision, record, kept_anchor=anchor)
