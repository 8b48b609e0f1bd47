"""The determinism set-up both training loops run under: torch's deterministic kernels and a
fixed intra-op thread count, restored when the run ends (a library call leaves torch as it
found it).

Where a kernel has no deterministic version torch fails by default; ``warn_only`` makes it warn
instead. Stage two's heads fail on CPU (every kernel they use has one) and warn on CUDA; the
fine-tune warns everywhere (a backbone may use any kernel). Seeding is each loop's own: what it
seeds, and in which order, is part of its byte-identical outputs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def deterministic(threads: int, warn_only: bool) -> Iterator[None]:
    """Deterministic torch kernels, and ``threads`` intra-op threads (0: leave the count as it
    is), for the duration of the block."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])
