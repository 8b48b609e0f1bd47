"""Multi-task schedules (Jin et al. 2021, section 3.1), shared by ``fuse``
(:mod:`pipeline.fusion.tasks`) and ``finetune`` (``task_schedule``): which tasks an epoch trains
(:func:`epoch_tasks`) and how two tasks' batches take turns (:func:`alternate`). Pure functions of
their arguments."""

from __future__ import annotations

from typing import Sequence, TypeVar

EXPR, AU = 0, 1  # task tags of training examples

T = TypeVar("T")


def epoch_tasks(multitask: bool, schedule: str, epoch: int) -> tuple[int, ...]:
    """The tasks epoch ``epoch`` (0 for the first) trains: expressions alone for an
    expression-only head; under the ``epoch`` schedule expressions on even epochs and AUs on odd
    ones; both otherwise."""
    if not multitask:
        return (EXPR,)
    if schedule == "epoch":
        return (EXPR if epoch % 2 == 0 else AU,)
    return (EXPR, AU)


def alternate(expr: Sequence[T], au: Sequence[T]) -> list[T]:
    """The ``batch`` schedule's order: expression and AU batches in turn (expression first);
    where one task runs out, the other's remaining batches follow (the paper does not say what
    happens when the two sets differ in size; nothing is repeated or dropped)."""
    mixed = [batch for pair in zip(expr, au) for batch in pair]
    return mixed + list(expr[len(au):]) + list(au[len(expr):])
