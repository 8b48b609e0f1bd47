"""Multi-task schedules (Jin et al. 2021, section 3.1), shared by ``fuse``
(:mod:`pipeline.fusion.tasks`) and ``finetune`` (``task_schedule``): which tasks an epoch trains
(:func:`epoch_tasks`) and how the tasks' batches take turns (:func:`alternate`). Pure functions of
their arguments."""

from __future__ import annotations

from typing import Sequence, TypeVar

EXPR, AU, VA = 0, 1, 2  # task tags of training examples

T = TypeVar("T")


def epoch_tasks(multitask: bool, schedule: str, epoch: int,
                tags: tuple[int, ...] = (EXPR, AU)) -> tuple[int, ...]:
    """The tasks epoch ``epoch`` (0 for the first) trains: expressions alone for an
    expression-only head; under the ``epoch`` schedule one task per epoch, cycling through
    ``tags`` (expressions on even epochs and AUs on odd ones for ``[expr, au]``); all otherwise."""
    if not multitask:
        return (EXPR,)
    if schedule == "epoch":
        return (tags[epoch % len(tags)],)
    return tuple(tags)


def alternate(*tasks: Sequence[T]) -> list[T]:
    """The ``batch`` schedule's order: one batch of each task in turn (in the order given,
    expressions first); where a task runs out, the others' remaining batches follow in turn (the
    paper does not say what happens when the sets differ in size; nothing is repeated or
    dropped). For two tasks: alternate while both last, then the rest of the longer one."""
    longest = max((len(batches) for batches in tasks), default=0)
    return [batches[i] for i in range(longest) for batches in tasks if i < len(batches)]
