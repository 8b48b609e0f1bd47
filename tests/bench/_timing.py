"""Timing shared by the benchmarks: best of several runs, wall-clock and CPU time.

CPU time is reported beside wall time because it is steadier on a shared machine. Benchmarks run
as scripts (``python tests/bench/bench_x.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    """(best wall seconds, best CPU seconds, the last result) over ``repeat`` calls of ``fn``."""
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result
