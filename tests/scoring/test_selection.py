"""The anchored selection rule (issue 25): the best member (on the fitting clips, or by its dev
score) unless the ensemble's held-out gain is clear, decided on the fitting clips only."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.data.labels import NUM_CLASSES
from pipeline.errors import PipelineError
from pipeline.scoring import crossfit as C
from pipeline.scoring import ensemble as E
from pipeline.scoring.selection import dev_anchor

from .splits import make_split

NAMES = ["r/a", "r/b"]


def _member(rng, labels, strength, classes=range(NUM_CLASSES)):
    """Peaked on the label (by ``strength``) on frames of ``classes``, pure noise elsewhere."""
    logits = rng.normal(size=(len(labels), NUM_CLASSES))
    knows = np.isin(labels, list(classes))
    logits[np.flatnonzero(knows), labels[knows]] += strength
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _labels(rng, lengths):
    n = sum(lengths)
    return np.repeat(rng.integers(0, NUM_CLASSES, n // 8 + 1), 8)[:n]


def _macro_f1(labels, predicted):
    return f1_score(labels, predicted, average="macro", labels=range(NUM_CLASSES),
                    zero_division=0)


def _config(**change):
    return E.EnsembleConfig(**{"folds": 3, "fill": "none", "bootstrap": 0, **change})


def test_it_keeps_the_best_member_when_the_gain_is_noise():
    # b is a noisy copy of a: combining them gains nothing real, but on the fitting clips a tuned
    # pair or biases score a little above a by chance, and the plain "best" rule takes them
    rng = np.random.default_rng(1)
    lengths = [40] * 6
    labels = _labels(rng, lengths)
    a = _member(rng, labels, 1.6)
    b = np.exp(np.log(a) + rng.normal(size=a.shape) * 0.7)
    b /= b.sum(axis=1, keepdims=True)
    data = make_split([a, b], labels, lengths)
    dev = {"r/a": 0.61, "r/b": 0.55}
    best = C.cross_fit(data, NAMES, _config(selection="best", smooth="none"),
                       member_dev_f1=dev)
    assert any(r.fit.applied.combiner != "r/a" or r.fit.applied.steps
               for r in best.folds)  # the old rule picks something else
    # min_videos=2: the bootstrap gate itself decides (6 videos are below the default 10)
    outcome = C.cross_fit(data, NAMES, _config(smooth="none", min_videos=2), member_dev_f1=dev)
    assert all(r.fit.kept_anchor == "r/a" and r.fit.selection["kept"] == "anchor"
               and r.fit.selection["held_out_gain"]["share_positive"] < 0.95
               for r in outcome.folds)
    rows = {r.name: r for r in outcome.rows}
    assert outcome.final.name == "final: r/a"
    assert outcome.final.scores.macro_f1 == rows["r/a"].scores.macro_f1
    assert outcome.final.scores.macro_f1 == _macro_f1(labels, a.argmax(axis=1))


def test_it_keeps_the_ensemble_when_the_gain_is_clear():
    # a knows classes 0-3, b knows 4-7: their mean is far better than either, on every video;
    # 15 videos in 3 folds: each fit sees 10, min_videos
    rng = np.random.default_rng(1)
    lengths = [30] * 15
    labels = _labels(rng, lengths)
    a = _member(rng, labels, 4.0, classes=range(4))
    b = _member(rng, labels, 4.0, classes=range(4, 8))
    data = make_split([a, b], labels, lengths)
    outcome = C.cross_fit(data, NAMES, _config(), member_dev_f1={"r/a": 0.5, "r/b": 0.4})
    for record in outcome.folds:
        assert record.fit.kept_anchor is None and record.fit.selection["kept"] == "ensemble"
        gain = record.fit.selection["held_out_gain"]
        assert gain["estimate"] > 0.2 and gain["share_positive"] >= 0.95
    assert outcome.final.name.startswith("final: ensemble")
    rows = {r.name: r for r in outcome.rows}
    assert outcome.final.scores.macro_f1 > rows["r/a"].scores.macro_f1 + 0.2
    # the same clear gain on fewer fitting videos than min_videos does not count
    few = C.cross_fit(data, NAMES, _config(min_videos=11))
    assert all(r.fit.kept_anchor is not None and "10 videos" in r.fit.selection["why"]
               for r in few.folds)


def test_the_anchor_is_chosen_on_the_fitting_clips_or_on_dev_scores():
    rng = np.random.default_rng(2)
    lengths = [40] * 6
    labels = _labels(rng, lengths)
    a = _member(rng, labels, 1.6)
    b = _member(rng, labels, 1.3)  # worse on val ...
    data = make_split([a, b], labels, lengths)
    dev = {"r/a": 0.4, "r/b": 0.6}
    outcome = C.cross_fit(data, NAMES, _config(anchor="dev"), member_dev_f1=dev)
    assert outcome.anchor == "r/b"  # ... but better on its dev slice: the anchor
    assert all(r.fit.selection["anchor"] == "r/b" and r.fit.selection["anchor_chosen_on"]
               == "train-dev" for r in outcome.folds)
    # by default, or with no dev score, the anchor is chosen per fit on its fitting clips
    for outcome in (C.cross_fit(data, NAMES, _config(), member_dev_f1=dev),
                    C.cross_fit(data, NAMES, _config(anchor="dev"))):
        assert outcome.anchor is None
        assert all(r.fit.selection["anchor_chosen_on"] == "fitting clips"
                   and r.fit.selection["anchor"] == "r/a" for r in outcome.folds)
    assert dev_anchor(NAMES, {"r/b": 0.3}) == "r/b" and dev_anchor(NAMES, {}) is None


def test_the_gain_is_decided_on_the_fitting_clips_against_held_out_predictions():
    rng = np.random.default_rng(3)
    lengths = [40] * 8
    labels = _labels(rng, lengths)
    data = make_split([_member(rng, labels, 2.0, range(5)), _member(rng, labels, 2.0, range(3, 8))],
                  labels, lengths)
    config = _config(bias=False, min_videos=2)
    fit = C.nested_fit(data, NAMES, config, anchor="r/a")
    inner = C.inner_fits(data, NAMES, config)
    steps = fit.final.steps if fit.kept_anchor is None else fit.decision["steps"]
    held_out = C.held_out_predictions(data, inner, config, steps)
    expected = _macro_f1(labels, held_out) - _macro_f1(labels, data.probs[0].argmax(axis=1))
    assert abs(fit.selection["held_out_gain"]["estimate"] - expected) < 1e-9
    # the rows of every configured step still show what each step does
    outcome = C.cross_fit(data, NAMES, config, member_dev_f1={"r/a": 0.5})
    assert [r.name for r in outcome.rows if r.kind == "pipeline"] == ["ensemble",
                                                                      "ensemble+smooth(mean)"]


def test_final_row_name_counts_the_fits_that_kept_the_member():
    config = _config()
    assert C.final_row_name(config, [(), (), ()], ["m/f"] * 3) == "final: m/f"
    assert C.final_row_name(config, [(), ("bias",), ()], ["m/f", None, "m/f"]) == (
        "final: m/f[2/3] | ensemble[1/3]+bias[1/3]")
    assert C.final_row_name(config, [(), ()], ["m/f", None]) == "final: m/f[1/2] | ensemble[1/2]"
    assert C.final_row_name(config, [("bias",), ("bias",)]) == "final: ensemble+bias"


@pytest.mark.parametrize("change, message", [
    (dict(selection="worst"), "selection"),
    (dict(anchor="val"), "anchor"),
    (dict(clear_gain=0.0), "clear_gain"),
    (dict(min_gain=-0.1), "min_gain"),
    (dict(min_videos=1), "min_videos"),
    (dict(fallback_thresholds=(0.5, 1.5)), "fallback_thresholds"),
])
def test_bad_selection_or_fallback_options_are_one_line_errors(change, message):
    with pytest.raises(PipelineError, match=message):
        E.EnsembleConfig(**change)


def test_without_held_out_predictions_the_record_says_so_not_that_videos_are_few():
    """``anchored`` keeps the anchor when it has no held-out predictions of the challenger; its
    record said "N videos to fit on (fewer than M)" then even with N >= M."""
    from pipeline.scoring.selection import anchored

    rng = np.random.default_rng(2)
    lengths = [30] * 6
    labels = _labels(rng, lengths)
    data = make_split([_member(rng, labels, 2.0), _member(rng, labels, 1.0)], labels, lengths)
    config = _config(min_videos=2)
    fit = C.nested_fit(data, NAMES, _config(selection="best"))
    kept = anchored(fit, data, NAMES, config, None, None)
    assert kept.kept_anchor == "r/a" and kept.selection["kept"] == "anchor"
    assert "fewer than" not in kept.selection["why"]
    assert "no held-out predictions" in kept.selection["why"]
    few = anchored(fit, data, NAMES, _config(min_videos=7), None, None)
    assert few.selection["why"].startswith("6 videos to fit on (fewer than 7)")
