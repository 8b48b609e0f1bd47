"""Ensembles and post-processing: filters stay in clips, searches match brute force, no leakage."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.labels import NUM_CLASSES
from pipeline.errors import PipelineError
from pipeline.scoring import crossfit as C
from pipeline.scoring import ensemble as E
from pipeline.scoring import fitting as F
from pipeline.scoring import postprocess as P
from pipeline.metrics import search as S
from pipeline.metrics.scores import accuracy, macro_f1

from .splits import make_split


def _offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _probs(rng, n):
    p = rng.random((n, NUM_CLASSES)).astype(np.float32) + 1e-3
    return p / p.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- filters

def _reference_mean(clip, window):
    half = window // 2
    return np.stack([clip[max(0, i - half):i + half + 1].mean(axis=0) for i in range(len(clip))])


def _reference_mode(clip, window):
    half, out = window // 2, []
    for i in range(len(clip)):
        votes = np.bincount(clip[max(0, i - half):i + half + 1], minlength=NUM_CLASSES)
        best = np.flatnonzero(votes == votes.max())
        out.append(clip[i] if clip[i] in best else best[0])
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 25), min_size=2, max_size=4),
       window=st.sampled_from([1, 3, 5, 9, 31]),
       kind=st.sampled_from(["mean", "median", "mode"]),
       seed=st.integers(0, 10_000))
def test_smoothing_never_crosses_clip_boundaries(lengths, window, kind, seed):
    rng = np.random.default_rng(seed)
    offsets = _offsets(lengths)
    probs = _probs(rng, offsets[-1])
    changed = probs.copy()  # every clip but the first replaced by something else entirely
    changed[offsets[1]:] = _probs(rng, offsets[-1] - offsets[1])

    def run(p):
        if kind == "mode":
            return P.mode_filter(p.argmax(axis=1), offsets, window)
        return P.smooth_probs(p, offsets, kind, window)

    first = slice(0, offsets[1])
    np.testing.assert_array_equal(run(probs)[first], run(changed)[first])
    # and each clip alone gives what it gives inside the split
    for c in range(len(lengths)):
        part = slice(offsets[c], offsets[c + 1])
        single = _offsets([lengths[c]])
        if kind == "mode":
            alone = P.mode_filter(probs[part].argmax(1), single, window)
        else:
            alone = P.smooth_probs(probs[part], single, kind, window)
        np.testing.assert_allclose(run(probs)[part], alone, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=3),
       window=st.sampled_from([3, 7, 21]), seed=st.integers(0, 10_000))
def test_filters_match_naive_references(lengths, window, seed):
    rng = np.random.default_rng(seed)
    offsets = _offsets(lengths)
    probs = _probs(rng, offsets[-1])
    labels = rng.integers(0, 3, offsets[-1])  # few classes: plenty of ties
    mean = P.smooth_probs(probs, offsets, "mean", window)
    mode = P.mode_filter(labels, offsets, window)
    for c in range(len(lengths)):
        part = slice(offsets[c], offsets[c + 1])
        np.testing.assert_allclose(mean[part], _reference_mean(probs[part], window), rtol=1e-5)
        np.testing.assert_array_equal(mode[part], _reference_mode(labels[part], window))
        half = window // 2
        padded = np.pad(probs[part], ((half, half), (0, 0)), mode="edge")
        median = np.stack([np.median(padded[i:i + window], axis=0) for i in range(lengths[c])])
        median /= median.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(P.smooth_probs(probs, offsets, "median", window)[part], median,
                                   rtol=1e-5)


def test_fill_copies_the_nearest_face_frame_of_the_same_clip():
    offsets = _offsets([5, 3, 2])
    probs = np.arange(10, dtype=np.float32)[:, None] * np.ones(NUM_CLASSES, dtype=np.float32)
    face = np.array([0, 1, 0, 0, 1,   0, 0, 0,   0, 1], dtype=bool)
    filled = P.fill_no_face(probs, offsets, face)[:, 0]
    # clip 1: frame 0 -> 1, frame 2 -> 1 (nearer than 4), frame 3 -> 4; clip 2 has no face:
    # unchanged; clip 3: frame 8 -> 9 (never from clip 1 or 2)
    np.testing.assert_array_equal(filled, [1, 1, 1, 4, 4, 5, 6, 7, 9, 9])


def test_fill_breaks_ties_towards_the_earlier_frame():
    offsets = _offsets([5])
    probs = np.arange(5, dtype=np.float32)[:, None] * np.ones(NUM_CLASSES, dtype=np.float32)
    face = np.array([1, 0, 0, 0, 1], dtype=bool)
    np.testing.assert_array_equal(P.fill_no_face(probs, offsets, face)[:, 0], [0, 0, 0, 4, 4])


# ----------------------------------------------------------------------------- searches

def _naive_f1(probs, labels, weights):
    combined = sum(w * p.astype(np.float64) for w, p in zip(weights, probs))
    return macro_f1(labels, combined.argmax(axis=1))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), members=st.integers(1, 4), n=st.integers(1, 200))
def test_evaluator_matches_naive_scoring(seed, members, n):
    rng = np.random.default_rng(seed)
    probs = [_probs(rng, n) for _ in range(members)]
    if members > 1:  # make members agree on many frames, which the evaluator skips
        agree = rng.random(n) < 0.5
        for p in probs[1:]:
            p[agree] = probs[0][agree]
    labels = rng.integers(-1, NUM_CLASSES, n)
    keep = labels != -1
    evaluator = S.WeightScorer([p[keep] for p in probs], labels[keep])
    for _ in range(5):
        weights = rng.integers(0, 4, members)
        if not weights.any():
            continue
        assert evaluator.macro_f1(weights) == pytest.approx(
            _naive_f1(probs, labels, weights), abs=1e-6)


def test_proportional_search_scores_all_25_pairs():
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, NUM_CLASSES, 400)
    a, b = _probs(rng, 400), _probs(rng, 400)
    fitted = S.proportional_search(a, b, labels)
    for m, n in itertools.product(range(1, 6), repeat=2):
        assert fitted.grid[m - 1, n - 1] == pytest.approx(_naive_f1([a, b], labels, (m, n)),
                                                          abs=1e-6)
    assert fitted.grid[fitted.m - 1, fitted.n - 1] == fitted.grid.max()


def test_weight_search_exhaustive_and_coordinate():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, NUM_CLASSES, 300)
    probs = [_probs(rng, 300) for _ in range(4)]
    three = S.WeightScorer(probs[:3], labels)
    best = S.weight_search(three, 3)
    brute = max(_naive_f1(probs[:3], labels, w)
                for w in itertools.product(range(6), repeat=3) if any(w))
    assert three.macro_f1(best) == pytest.approx(brute, abs=1e-9)
    four = S.WeightScorer(probs, labels)  # 6^4 > 256 points: coordinate ascent from all-ones
    weights = S.weight_search(four, 4)
    assert four.macro_f1(weights) >= four.macro_f1((1, 1, 1, 1))


def test_bias_sweep_matches_brute_force_argmax():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, NUM_CLASSES, 500)
    log_probs = np.log(_probs(rng, 500)).astype(np.float64)
    grid = np.round(np.arange(-10, 11) * 0.2, 10)
    bias = rng.normal(scale=0.3, size=NUM_CLASSES)
    for c in (0, 3, 7):
        swept = S.bias_sweep(np.ascontiguousarray(log_probs.T), labels, bias, c, grid)
        for i, value in enumerate(grid):
            trial = bias.copy()
            trial[c] = value
            assert swept[i] == pytest.approx(macro_f1(labels, (log_probs + trial).argmax(1)),
                                             abs=1e-9)


def test_bias_search_fixes_a_shifted_class():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, NUM_CLASSES, 2000)
    logits = rng.normal(size=(2000, NUM_CLASSES))
    logits[np.arange(2000), labels] += 2.0
    logits[:, 2] += 1.5  # a head that over-predicts Disgust
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    bias = S.bias_search(log_probs, labels, np.round(np.arange(-20, 21) * 0.1, 10))
    before = macro_f1(labels, log_probs.argmax(1))
    after = macro_f1(labels, (log_probs + bias).argmax(1))
    assert after > before + 0.05
    assert bias[2] < -0.5  # the offset pushed Disgust back down


# ----------------------------------------------------------------------------- protocol

def test_folds_keep_videos_together_balanced_and_deterministic():
    lengths = [50, 40, 40, 30, 30, 20, 10, 10]
    groups = ["a", "a", "b", "c", "d", "e", "f", "g"]  # a_left / a_right share video a
    data = make_split([np.zeros((sum(lengths), 8))], np.zeros(sum(lengths)), lengths, groups)
    folds = C.assign_folds(data, 3)
    assert folds[0] == folds[1]
    load = np.bincount(folds, weights=lengths)
    assert load.max() - load.min() <= 20
    np.testing.assert_array_equal(folds, C.assign_folds(data, 3))
    assert C.assign_folds(make_split([np.zeros((30, 8))], np.zeros(30), [10, 20], ["x", "x"]),
                          5).max() == 0  # one video: one fold


def _leaky_case(folds_of_clips, lengths, rng):
    """Member A is right on fold-0 clips and confidently wrong on the others; member B the reverse.

    Fitting on other folds picks the member that is wrong on the scored fold: near-zero F1.
    A fit that saw the scored frames would pick the right member: near-perfect F1.
    """
    n = sum(lengths)
    labels = np.repeat(rng.integers(0, NUM_CLASSES, n // 10 + 1), 10)[:n]
    wrong = (labels + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES
    a = np.full((n, NUM_CLASSES), 0.01, dtype=np.float32)
    b = a.copy()
    fold_of_frame = np.repeat(folds_of_clips, lengths)
    rows = np.arange(n)
    a[rows, np.where(fold_of_frame == 0, labels, wrong)] = 0.9
    b[rows, np.where(fold_of_frame == 0, wrong, labels)] = 0.9
    return [a, b], labels


def test_crossfit_never_tunes_on_the_frames_it_scores():
    rng = np.random.default_rng(7)
    lengths = [60, 50, 60, 50, 40, 40]
    probe = make_split([np.zeros((sum(lengths), 8))], np.zeros(sum(lengths)), lengths)
    folds = C.assign_folds(probe, 2)
    probs, labels = _leaky_case(folds, lengths, rng)
    data = make_split(probs, labels, lengths)
    config = E.EnsembleConfig(folds=2, smooth="mean", windows=(1, 5))

    crossfit = C.cross_fit(data, ["r/a", "r/b"], config)
    assert crossfit.final.scores.macro_f1 < 0.05 and crossfit.final.scores.accuracy < 0.05
    assert not crossfit.tuned_on_scored_frames
    scored = [clip for record in crossfit.folds for clip in record.scored_clips]
    assert sorted(scored) == sorted(data.clip_ids)  # every clip scored exactly once
    for record in crossfit.folds:
        assert not set(record.scored_clips) & set(record.tuning_clips)

    # the same data tuned per fold on its own frames would be perfect: the case can show leakage
    for f in (0, 1):
        inside = [c for c in range(len(lengths)) if folds[c] == f]
        own = data.subset(inside)
        fitted = F.fit(own, ["r/a", "r/b"], config)
        assert accuracy(own.labels, F.predict(own, fitted.choices)) > 0.95

    same = C.cross_fit(data, ["r/a", "r/b"], E.EnsembleConfig(tune_on="same", smooth="none"))
    assert same.tuned_on_scored_frames
    assert same.final.scores.macro_f1 > 0.3


def test_tuning_on_another_split_fits_there_only():
    rng = np.random.default_rng(8)
    lengths = [40, 40, 40]
    labels = rng.integers(0, NUM_CLASSES, 120)
    good = np.full((120, 8), 0.05, dtype=np.float32)
    good[np.arange(120), labels] = 0.6
    noise = np.full((120, 8), 0.01, dtype=np.float32)  # confidently wrong
    noise[np.arange(120), (labels + 1) % NUM_CLASSES] = 0.9
    val = make_split([good, noise], labels, lengths)
    train = make_split([noise, good], labels, lengths)  # on train the *second* member is the good one
    config = E.EnsembleConfig(tune_on="train", smooth="none", bias=False)
    outcome = C.cross_fit(val, ["r/a", "r/b"], config, tuning=train)
    (record,) = outcome.folds
    assert record.tuning_split == "train"
    assert record.fit.choices.combiner == "r/b"  # chosen on train, wrong for val
    rows = {r.name: r for r in outcome.rows}
    assert outcome.final.scores.macro_f1 == rows["r/b"].scores.macro_f1
    assert rows["r/a"].scores.macro_f1 == 1.0


def test_rows_members_then_ensembles_then_pipeline_steps():
    rng = np.random.default_rng(9)
    lengths = [30, 30, 30, 30]
    labels = rng.integers(-1, NUM_CLASSES, 120)
    data = make_split([_probs(rng, 120) for _ in range(3)], labels, lengths)
    outcome = C.cross_fit(data, ["r/a", "r/b", "s/main"], E.EnsembleConfig(smooth="mode"))
    names = [r.name for r in outcome.rows]
    assert names[:-1] == ["mean", "r/a", "r/b", "s/main", "proportional r/a + r/b",
                          "proportional r/a + s/main", "proportional r/b + s/main", "weighted",
                          "ensemble", "ensemble+fill", "ensemble+fill+bias",
                          "ensemble+fill+bias+smooth(mode)"]
    assert outcome.final.name == names[-1] and outcome.final.kind == "final"
    applied = [record.fit.applied.steps for record in outcome.folds]
    anchors = [record.fit.kept_anchor for record in outcome.folds]
    assert outcome.final.name == C.final_row_name(E.EnsembleConfig(smooth="mode"), applied,
                                                  anchors)
    assert all(r.scores.n_frames == int((labels != -1).sum()) for r in outcome.rows)


@pytest.mark.parametrize("change, message", [
    (dict(tune_on="test-set"), "tune_on"),
    (dict(tune_on="val"), "tune_on"),
    (dict(tune_on="train", split="train"), "same"),
    (dict(smooth="gauss"), "smooth"),
    (dict(fill="zero"), "fill"),
    (dict(windows=(1, 4)), "windows"),
    (dict(folds=1), "folds"),
])
def test_bad_config_is_a_one_line_error(change, message):
    with pytest.raises(PipelineError, match=message):
        E.EnsembleConfig(**change)


def test_crossfit_needs_two_videos():
    data = make_split([np.full((20, 8), 0.125)], np.zeros(20), [10, 10], ["v", "v"])
    with pytest.raises(PipelineError, match="2 or more"):
        C.cross_fit(data, ["r/a"], E.EnsembleConfig())


def test_combiners_are_discovered_in_order_and_a_new_rule_is_one_class():
    from pipeline.scoring import combiners

    found = combiners.registry()  # every combiner module of the package, none listed here
    assert {"mean", "member", "proportional", "weighted", "bag"} <= set(found)
    assert list(found) == sorted(found, key=lambda name: (found[name].order, name))

    @combiners.register
    class Geometric(combiners.Combiner):  # not a weighted mean: scored through its own apply
        name, order = "geometric", 9

        @classmethod
        def candidates(cls, member_names, config):
            return [combiners.Candidate("geometric", cls.name, tuple(range(len(member_names))))]

        @classmethod
        def fit(cls, candidate, data, evaluator, config):
            return combiners.Combination(candidate.name, cls.name, None, {"power": 1})

        @classmethod
        def apply(cls, combination, probs):
            log = np.log(probs + P.EPS).mean(axis=0)
            p = np.exp(log - log.max(axis=1, keepdims=True))
            return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    try:
        rng = np.random.default_rng(11)
        labels = rng.integers(0, NUM_CLASSES, 90)
        data = make_split([_probs(rng, 90) for _ in range(2)], labels, [30, 30, 30])
        fitted = F.fit(data, ["r/a", "r/b"], E.EnsembleConfig(smooth="none", bias=False))
        assert list(fitted.candidates)[-1] == "geometric"
        geometric = Geometric.apply(fitted.candidates["geometric"], data.probs).argmax(axis=1)
        assert fitted.tuning_macro_f1["geometric"] == pytest.approx(macro_f1(labels, geometric))
        weighted = fitted.candidates["proportional r/a + r/b"]
        assert weighted.rule == "proportional" and set(weighted.params) == {"m", "n"}
        record = fitted.choices.to_json(["r/a", "r/b"])
        assert record["combiner"] == fitted.choices.combiner
        assert record["rule"] == fitted.candidates[fitted.choices.combiner].rule
    finally:
        combiners.COMBINERS.unregister("geometric")



def _every_combiner():
    from pipeline.scoring import combiners

    return list(combiners.registry())


@pytest.mark.parametrize("rule", _every_combiner())
def test_every_registered_combiner_fits_and_applies(rule):
    """Each combiner of the registry (a new one too, with no edit here) proposes candidates for
    members that share an output name and for members that do not, fits them on the tuning
    frames and applies them: probabilities of every frame, a tuning macro-F1 for each."""
    from pipeline.scoring import combiners

    rng = np.random.default_rng(5)
    labels = rng.integers(0, NUM_CLASSES, 90)
    data = make_split([_probs(rng, 90) for _ in range(3)], labels, [30, 30, 30])
    names = ["r1/fusion", "r2/fusion", "r3/main"]
    config = E.EnsembleConfig(smooth="none", bias=False)
    candidates, tuning, _ = F.fit_candidates(data, names, config)
    mine = {n: c for n, c in candidates.items() if c.rule == rule}
    assert mine, f"{rule} proposed no candidate for {names}"
    for name, combination in mine.items():
        probs = combiners.apply(combination, data.probs)
        assert probs.shape == (90, NUM_CLASSES) and np.isfinite(probs).all()
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert 0.0 <= tuning[name] <= 1.0
