"""``proportional``: the rule of paper 004, ``(m P_A + n P_B) / (m + n)``, for every pair of members.

Integers ``0 < m, n <= max_weight`` (5) are grid-searched for macro-F1 on the tuning frames by
:func:`pipeline.metrics.search.proportional_search` (the 25 pairs; ties: the smallest m, then n).
Off with ``EnsembleConfig.proportional = false``.
"""

from __future__ import annotations

import itertools

from pipeline.scoring.combiners import Candidate, Combination, Combiner, register
from pipeline.metrics.search import proportional_search


@register
class Proportional(Combiner):
    name = "proportional"
    order = 2

    @classmethod
    def candidates(cls, member_names, config):
        if not config.proportional:
            return []
        return [Candidate(f"proportional {member_names[i]} + {member_names[j]}", cls.name, (i, j))
                for i, j in itertools.combinations(range(len(member_names)), 2)]

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        i, j = candidate.members
        pair = proportional_search(data.probs[i], data.probs[j], data.labels, config.max_weight)
        weights = tuple(float(pair.m if k == i else pair.n if k == j else 0)
                        for k in range(len(data.probs)))
        return Combination(candidate.name, cls.name, weights, {"m": pair.m, "n": pair.n})
