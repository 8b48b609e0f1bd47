"""``bag``: soft voting of bagged variants of one head (paper 001), equal weights.

Paper 001 trains "multiple variants" of its model and averages their class probabilities (soft
voting). In this pipeline a bag is built in stage two (``fer-pipeline fuse --bag K``): K members
of one head, each on a bootstrap resample of the training videos, in ``RUN/members/<i>/``, and the
run's own predictions are :func:`soft_vote` of its members', so stage three sees a bag as one
member (it can be ensembled with other heads like any run, and no stage-three choice is needed to
form it: the bag is the paper's rule, fixed before any validation label is read).

The combiner covers the other case: the user passes several runs of one head to stage three
(bag members ``RUN/members/<i>`` or runs of several seeds). Members are grouped by output name, the
user's grouping being which runs they pass: for every output name that two or more members share,
and that is not every member (then ``mean`` is the same rule), the candidate ``bag <output>``
averages those members with weight 1 each. Nothing is tuned.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.scoring.combiners import Candidate, Combination, Combiner, combine, register


def soft_vote(probs: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [N, 8]: the mean of the members' probabilities (what a bag writes)."""
    return combine(np.asarray(probs), [1.0] * len(probs))


@register
class Bag(Combiner):
    name = "bag"
    order = 4

    @classmethod
    def candidates(cls, member_names, config):
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(member_names):
            groups.setdefault(name.rsplit("/", 1)[-1], []).append(i)
        return [Candidate(f"bag {output}", cls.name, tuple(members))
                for output, members in groups.items()
                if 1 < len(members) < len(member_names)]

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        weights = tuple(float(k in candidate.members) for k in range(len(data.probs)))
        return Combination(candidate.name, cls.name, weights,
                           {"members": [int(i) for i in candidate.members]})
