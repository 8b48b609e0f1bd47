"""``weighted``: integer weights ``0..max_weight`` (5) per member, tuned for macro-F1.

Searched exhaustively when the grid has at most 256 points (three members or fewer), otherwise by
coordinate ascent from all-ones (:func:`pipeline.metrics.search.weight_search`). Proposed for three
members or more, and for two when the proportional rule is off (it would cover them). Option
(``--set combiner.weighted.max_weight=``): the largest weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import PipelineError
from pipeline.scoring.combiners import Candidate, Combination, Combiner, register, registry
from pipeline.metrics.search import weight_search


@dataclass
class WeightedConfig:
    """The ``weighted`` rule's options."""

    max_weight: int = 5  # integer weights 0..max_weight per member

    def __post_init__(self) -> None:
        if self.max_weight < 1:
            raise PipelineError(f"ensemble config: combiner.weighted.max_weight"
                                f" {self.max_weight}: want 1 or more")


@register
class Weighted(Combiner):
    name = "weighted"
    order = 3
    Config = WeightedConfig

    @classmethod
    def candidates(cls, member_names, config):
        m = len(member_names)
        proportional = registry()["proportional"].options(config).enabled
        if m > 2 or (m == 2 and not proportional):
            return [Candidate("weighted", cls.name, tuple(range(m)))]
        return []

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        weights = weight_search(evaluator, len(data.probs), cls.options(config).max_weight)
        return Combination(candidate.name, cls.name, tuple(float(w) for w in weights))
