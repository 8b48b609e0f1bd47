"""``proportional``: the rule of paper 004, ``(m P_A + n P_B) / (m + n)``, for every pair of members.

Integers ``0 < m, n <= max_weight`` (5) are grid-searched for macro-F1 on the tuning frames by
:func:`pipeline.metrics.search.proportional_search` (the 25 pairs; ties: the smallest m, then n).
Options (``--set combiner.proportional.<key>=``): ``enabled`` (false: no proportional candidate;
the ``weighted`` rule then covers two members) and ``max_weight``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pipeline.errors import PipelineError
from pipeline.scoring.combiners import Candidate, Combination, Combiner, register
from pipeline.metrics.search import proportional_search


@dataclass
class ProportionalConfig:
    """The ``proportional`` rule's options."""

    enabled: bool = True  # propose the m,n rule for every pair of members
    max_weight: int = 5  # m and n range over 1..max_weight (paper 004: 5)

    def __post_init__(self) -> None:
        if self.max_weight < 1:
            raise PipelineError(f"ensemble config: combiner.proportional.max_weight"
                                f" {self.max_weight}: want 1 or more")


@register
class Proportional(Combiner):
    name = "proportional"
    order = 2
    Config = ProportionalConfig

    @classmethod
    def candidates(cls, member_names, config):
        if not cls.options(config).enabled:
            return []
        return [Candidate(f"proportional {member_names[i]} + {member_names[j]}", cls.name, (i, j))
                for i, j in itertools.combinations(range(len(member_names)), 2)]

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        i, j = candidate.members
        pair = proportional_search(data.probs[i], data.probs[j], data.labels,
                                   cls.options(config).max_weight)
        weights = tuple(float(pair.m if k == i else pair.n if k == j else 0)
                        for k in range(len(data.probs)))
        return Combination(candidate.name, cls.name, weights, {"m": pair.m, "n": pair.n})
