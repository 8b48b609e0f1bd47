"""``mean``: plain soft voting, every member's probabilities with weight 1 (nothing is tuned)."""

from __future__ import annotations

from pipeline.scoring.combiners import Candidate, Combination, Combiner, register


@register
class Mean(Combiner):
    name = "mean"
    order = 0

    @classmethod
    def candidates(cls, member_names, config):
        if len(member_names) < 2:
            return []
        return [Candidate("mean", cls.name, tuple(range(len(member_names))))]

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        return Combination(candidate.name, cls.name, (1.0,) * len(data.probs))
