"""``weighted``: integer weights ``0..max_weight`` (5) per member, tuned for macro-F1.

Searched exhaustively when the grid has at most 256 points (three members or fewer), otherwise by
coordinate ascent from all-ones (:func:`pipeline.metrics.search.weight_search`). Proposed for three
members or more, and for two when the proportional rule is off (it would cover them).
"""

from __future__ import annotations

from pipeline.scoring.combiners import Candidate, Combination, Combiner, register
from pipeline.metrics.search import weight_search


@register
class Weighted(Combiner):
    name = "weighted"
    order = 3

    @classmethod
    def candidates(cls, member_names, config):
        m = len(member_names)
        if m > 2 or (m == 2 and not config.proportional):
            return [Candidate("weighted", cls.name, tuple(range(m)))]
        return []

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        weights = weight_search(evaluator, len(data.probs), config.max_weight)
        return Combination(candidate.name, cls.name, tuple(float(w) for w in weights))
