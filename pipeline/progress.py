"""Progress reporting without printing: library code calls a callback the caller supplies.

A task is announced with ``total`` set, then advanced; ``info`` carries figures worth showing
(frames/s, loss, F1). The CLI turns these into rich progress bars; tests pass :func:`silent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class ProgressEvent:
    task: str  # a short stable name, e.g. "clips" or "epoch 3"
    advance: int = 0  # units completed since the previous event for this task
    total: int | None = None  # set on the first event of a task: an event with a total (re)starts it
    info: dict[str, Any] = field(default_factory=dict)  # figures to display beside the bar


ProgressFn = Callable[[ProgressEvent], None]


def silent(event: ProgressEvent) -> None:
    """A callback that ignores everything."""
