"""``member``: one member alone (a one-hot weight vector), so members compete with ensembles."""

from __future__ import annotations

from pipeline.scoring.combiners import Candidate, Combination, Combiner, register


@register
class Member(Combiner):
    name = "member"
    order = 1

    @classmethod
    def candidates(cls, member_names, config):
        return [Candidate(name, cls.name, (i,)) for i, name in enumerate(member_names)]

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        (i,) = candidate.members
        weights = tuple(float(k == i) for k in range(len(data.probs)))
        return Combination(candidate.name, cls.name, weights, {"member": candidate.name})
