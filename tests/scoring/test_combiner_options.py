"""Combiners own their options (``--set combiner.<name>.<key>=value``), as heads do; the fitted
rules follow them (checked against scikit-learn's macro-F1 over the whole grid)."""

import dataclasses
import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.config import build, to_dict
from pipeline.data.labels import NUM_CLASSES
from pipeline.errors import PipelineError
from pipeline.scoring import combiners
from pipeline.scoring import fitting as F
from pipeline.scoring.ensemble import EnsembleConfig

from .splits import make_split
from .test_ensemble import _probs


def _data(seed=3, members=2, n=120):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    return make_split([_probs(rng, n) for _ in range(members)], labels, [n // 4] * 4), labels


def _config(*sets):
    return build(EnsembleConfig, sets=["smooth=none", "bias=false", *sets])


def test_proportional_max_weight_is_the_combiners_own_option():
    data, labels = _data(seed=0)
    default = F.fit(data, ["r/a", "r/b"], _config()).candidates["proportional r/a + r/b"].params
    assert max(default.values()) > 2  # on these data the default grid (1..5) picks beyond 2
    config = _config("combiner.proportional.max_weight=2")
    assert config.combiner["proportional"].max_weight == 2
    fitted = F.fit(data, ["r/a", "r/b"], config)
    params = fitted.candidates["proportional r/a + r/b"].params
    # scikit-learn's macro-F1 of every pair m, n in 1..2; ties: the smallest m, then n
    scores = {(m, n): f1_score(labels, ((m * data.probs[0] + n * data.probs[1]) / (m + n))
                               .argmax(axis=1), average="macro", labels=range(NUM_CLASSES),
                               zero_division=0)
              for m, n in itertools.product(range(1, 3), repeat=2)}
    best = max(scores.values())
    assert (params["m"], params["n"]) == min(k for k, v in scores.items() if v == best)
    assert fitted.tuning_macro_f1["proportional r/a + r/b"] == pytest.approx(best)


def test_weighted_max_weight_bounds_its_weights():
    data, _ = _data(members=3)
    names = ["r/a", "r/b", "r/c"]
    fitted = F.fit(data, names, _config("combiner.weighted.max_weight=1"))
    assert set(fitted.candidates["weighted"].weights) <= {0.0, 1.0}


def test_proportional_off_leaves_two_members_to_the_weighted_rule():
    data, _ = _data()
    on = F.fit(data, ["r/a", "r/b"], _config()).candidates
    off = F.fit(data, ["r/a", "r/b"], _config("combiner.proportional.enabled=false")).candidates
    assert "proportional r/a + r/b" in on and "weighted" not in on
    assert "weighted" in off and not any(name.startswith("proportional") for name in off)


def test_options_round_trip_through_the_saved_config():
    config = _config("combiner.proportional.max_weight=4")
    saved = to_dict(config)
    assert saved["combiner"] == {"proportional": {"enabled": True, "max_weight": 4},
                                 "weighted": {"max_weight": 5}}
    assert build(EnsembleConfig, preset=saved) == config


@pytest.mark.parametrize("assignment, message", [
    ("combiner.nope.x=1", "combiner.nope: no such combiner"),
    ("combiner.mean.k=3", "combiner.mean: the mean rule has no options"),
    ("combiner.proportional.m=3", "unknown option.*m for ProportionalConfig"),
    ("combiner.weighted.max_weight=0", "combiner.weighted.max_weight 0: want 1 or more"),
    ("max_weight=3", "unknown option.*max_weight for EnsembleConfig"),  # moved to the combiners
])
def test_bad_combiner_options_are_one_line_errors(assignment, message):
    with pytest.raises(PipelineError, match=message):
        _config(assignment)


def test_a_new_combiner_with_an_option_is_one_class():
    @dataclasses.dataclass
    class TopConfig:
        k: int = 1  # how many of the first members to average

    @combiners.register
    class Top(combiners.Combiner):
        name, order, Config = "top", 9, TopConfig

        @classmethod
        def candidates(cls, member_names, config):
            return [combiners.Candidate("top", cls.name, tuple(range(cls.options(config).k)))]

        @classmethod
        def fit(cls, candidate, data, evaluator, config):
            weights = tuple(1.0 if i in candidate.members else 0.0 for i in range(len(data.probs)))
            return combiners.Combination(candidate.name, cls.name, weights)

    try:
        data, _ = _data(members=3)
        fitted = F.fit(data, ["r/a", "r/b", "r/c"], _config("combiner.top.k=2"))
        assert fitted.candidates["top"].weights == (1.0, 1.0, 0.0)
    finally:
        combiners.COMBINERS.unregister("top")
