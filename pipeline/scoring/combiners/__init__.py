"""Ensemble rules as plug-ins: each combiner proposes candidates for a set of members, fits them on
the tuning frames, and applies a fitted candidate to members' probabilities.

A *member* is one output of one run directory (``<run>/<output>``). A :class:`Combiner` is
registered under its ``name`` with :func:`register` in :data:`COMBINERS`, a
:class:`pipeline.registry.Registry` (the helper every plug-in kind shares, which finds the
modules of this package and entry points of group ``fer_pipeline.combiners``), so a new rule is
one new file here. Each combiner says:

* :meth:`Combiner.candidates`: the candidates it proposes for the members (none, one, or several,
  e.g. one per pair), given the :class:`~pipeline.scoring.ensemble.EnsembleConfig`;
* :meth:`Combiner.fit`: a :class:`Combination` fitted on the tuning frames (its parameters, and
  its weight per member when the rule is a weighted mean, which lets stage three score many
  weight vectors at once);
* :meth:`Combiner.apply`: combined float32 [N, 8] probabilities (default: the weighted mean).

A combiner with options declares them as heads do: a dataclass ``Config`` on the class (defaults,
checks in ``__post_init__``), set as ``[combiner.<name>]`` in the ensemble's TOML or with
``--set combiner.<name>.<key>=value``; :func:`options` builds every combiner's ``Config`` for
:class:`~pipeline.scoring.ensemble.EnsembleConfig`, and a combiner reads its own with
:meth:`Combiner.options`. So a combiner with an option is one file.

Candidates are compared in the order of the combiners' ``order`` (then each combiner's own order);
the earlier wins a tie. Built in: ``mean`` (0), ``member`` (1: a member alone), ``proportional``
(2: the m,n rule of paper 004 per pair; options ``enabled``, ``max_weight``), ``weighted`` (3:
integer weights per member; option ``max_weight``), ``bag`` (4: soft voting of the members that
share an output name, paper 001).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol, Sequence

import numpy as np

from pipeline.config import from_dict
from pipeline.errors import PipelineError
from pipeline.registry import Registry
from pipeline.metrics.mean import combine
from pipeline.suggest import did_you_mean

if TYPE_CHECKING:
    from pipeline.scoring.frames import SplitData
    from pipeline.metrics.search import WeightScorer


class EnsembleConfig(Protocol):
    """What a combiner reads of :class:`pipeline.scoring.ensemble.EnsembleConfig` (which builds
    the combiners' options with :func:`options`, so this package does not import it)."""

    combiner: dict[str, Any]  # combiner name -> its Config


@dataclass(frozen=True)
class Candidate:
    """One rule proposed for the members: the row name it is scored and reported under."""

    name: str  # "mean", a member's name, "proportional A + B", "weighted", ...
    rule: str  # the combiner's registry name
    members: tuple[int, ...]  # indices of the members it combines


@dataclass(frozen=True)
class Combination:
    """A fitted candidate."""

    name: str  # the candidate's name
    rule: str  # the combiner's registry name
    weights: tuple[float, ...] | None  # weight per member (None: not a weighted mean)
    params: dict[str, Any] = field(default_factory=dict)  # what was fitted, for scores.json

    def to_json(self, member_names: Sequence[str]) -> dict:
        record: dict[str, Any] = {"rule": self.rule, "params": self.params}
        if self.weights is not None:
            record["weights"] = dict(zip(member_names, self.weights))
        return record


class Combiner:
    """Base class of an ensemble rule (see the module docstring)."""

    name: ClassVar[str]
    order: ClassVar[int]  # position of its candidates in the comparison (ties: earlier wins)
    Config: ClassVar[type | None] = None  # its options (a dataclass), or None: it has none

    @classmethod
    def options(cls, config: EnsembleConfig) -> Any:
        """This combiner's options in ``config`` (an instance of its ``Config``)."""
        return config.combiner[cls.name]

    @classmethod
    def candidates(cls, member_names: Sequence[str], config: EnsembleConfig) -> list[Candidate]:
        raise NotImplementedError

    @classmethod
    def fit(cls, candidate: Candidate, data: "SplitData", evaluator: "WeightScorer",
            config: EnsembleConfig) -> Combination:
        """Fit ``candidate`` on ``data`` (the tuning clips); ``evaluator`` scores weight vectors
        on its labelled frames."""
        raise NotImplementedError

    @classmethod
    def apply(cls, combination: Combination, probs: np.ndarray) -> np.ndarray:
        """float32 [N, 8] combined probabilities from members' [n_members, N, 8]."""
        return combine(probs, combination.weights)


# Every combiner by name (pipeline.registry), in comparison order: the modules of this package
# and entry points of group fer_pipeline.combiners.
COMBINERS: Registry[type[Combiner]] = Registry(
    "ensemble rule", __name__, "fer_pipeline.combiners",
    order=lambda item: (item[1].order, item[0]))
register = COMBINERS.register  # class decorator: make a combiner available by its ``name``


def registry() -> dict[str, type[Combiner]]:
    """The combiners in comparison order."""
    return COMBINERS.classes()


def combiner(name: str) -> type[Combiner]:
    return COMBINERS.get(name)


def options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every combiner's options, built from ``given`` (combiner name -> a table of its options,
    or its ``Config`` itself); defaults for those not given. PipelineError naming the key for an
    unknown combiner, a combiner without options, or a bad option."""
    known = registry()
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise PipelineError(f"ensemble config: combiner.{unknown[0]}: no such combiner; choose "
                            f"from {', '.join(sorted(known))}"
                            f"{did_you_mean(unknown[0], known)}")
    built = {}
    for name, cls in registry().items():
        value = given.get(name, {})
        if cls.Config is None:
            if value:
                raise PipelineError(f"ensemble config: combiner.{name}: the {name} rule has no"
                                    " options")
            continue
        if isinstance(value, cls.Config):
            built[name] = value
            continue
        try:
            built[name] = from_dict(cls.Config, value, f"combiner.{name}")
        except (ValueError, TypeError) as e:
            raise PipelineError(f"ensemble config: {' '.join(str(e).split())}") from None
    return built


def candidates(member_names: Sequence[str], config: EnsembleConfig) -> list[Candidate]:
    """Every combiner's candidates, in tie-breaking order (earlier wins a tie)."""
    return [c for rule in registry().values() for c in rule.candidates(member_names, config)]


def apply(combination: Combination, probs: np.ndarray) -> np.ndarray:
    return combiner(combination.rule).apply(combination, probs)
