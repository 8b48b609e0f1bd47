"""``bag``: soft voting of bagged variants of one head (paper 001), equal weights.

Paper 001 trains "multiple variants" of its model and averages their class probabilities (soft
voting). In this pipeline a bag is built in stage two (``fer-pipeline fuse --bag K``): K members
of one head, each on a bootstrap resample of the training videos, in ``RUN/members/<i>/``, and the
run's own predictions are :func:`pipeline.metrics.mean.soft_vote` of its members', so stage three sees a bag as one
member (it can be ensembled with other heads like any run, and no stage-three choice is needed to
form it: the bag is the paper's rule, fixed before any validation label is read).

The combiner covers the other case: the user passes several runs of one head to stage three
(bag members ``RUN/members/<i>``, or runs of several seeds). Variants of one head are recognised by
their run names, which differ only in a trailing number (``image_s0``, ``image_s1``;
``image-seed3``; the members ``0``, ``1``, ...): members whose run names share the stem before that
number (:func:`variant_stem`) and share an output are one bag. For every such group of two or more
members that is not every member (then ``mean`` is the same rule), the candidate ``bag <stem>
<output>`` averages them with weight 1 each. Nothing is tuned. Runs of different heads never form
a bag, even when their outputs share a name such as ``main``.
"""

from __future__ import annotations

import re

from pipeline.scoring.combiners import Candidate, Combination, Combiner, register


_NUMBERED = re.compile(r"^(?P<stem>.*?)[-_.]?(?:seed|s)?\d+$")


def variant_stem(run: str) -> str | None:
    """The stem of a run name that ends in a number (a seed or member index), else None."""
    match = _NUMBERED.match(run)
    return None if match is None else match["stem"]


@register
class Bag(Combiner):
    name = "bag"
    order = 4

    @classmethod
    def candidates(cls, member_names, config):
        groups: dict[tuple[str, str], list[int]] = {}
        for i, name in enumerate(member_names):
            run, _, output = name.rpartition("/")
            stem = variant_stem(run)
            if stem is not None:
                groups.setdefault((stem, output), []).append(i)
        return [Candidate(" ".join(["bag", *filter(None, key)]), cls.name, tuple(members))
                for key, members in groups.items()
                if 1 < len(members) < len(member_names)]

    @classmethod
    def fit(cls, candidate, data, evaluator, config):
        weights = tuple(float(k in candidate.members) for k in range(len(data.probs)))
        return Combination(candidate.name, cls.name, weights,
                           {"members": [int(i) for i in candidate.members]})
