"""Benchmark of the clip-level bootstrap at Aff-Wild2 scale (prints figures, asserts nothing).

Run: ``.venv/bin/python tests/bench/bench_bootstrap.py``. 2.7M frames in 550 clips (the whole
Aff-Wild2 EXPR set's size; its val split alone is smaller), 5000 resamples:

* the per-clip confusion matrices of one row (one bincount over the frames);
* the resample counts (drawn once per table: every row shares them);
* the interval of one row and the paired difference of two rows from their clip matrices.
"""

from __future__ import annotations

import numpy as np

from _timing import best_of

from pipeline.scoring import bootstrap as B

FRAMES, CLIPS, RESAMPLES = 2_700_000, 550, 5000


def _timed(label: str, fn, repeat: int = 3):
    wall, cpu, result = best_of(fn, repeat)
    print(f"{label:<58s} {wall * 1000:9.1f} ms wall {cpu * 1000:9.1f} ms cpu")
    return result


def main() -> None:
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, FRAMES), CLIPS - 1, replace=False))
    offsets = np.concatenate([[0], cuts, [FRAMES]]).astype(np.int64)
    labels = np.repeat(rng.integers(0, 8, FRAMES // 100 + 1), 100)[:FRAMES].astype(np.int8)
    labels[rng.random(FRAMES) < 0.1] = -1
    first = np.where(rng.random(FRAMES) < 0.6, np.maximum(labels, 0),
                     rng.integers(0, 8, FRAMES)).astype(np.int8)
    second = np.where(rng.random(FRAMES) < 0.5, np.maximum(labels, 0), first).astype(np.int8)
    groups = [f"v{c // 2 if c < 40 else c}" for c in range(CLIPS)]  # 20 two-person videos

    a = _timed(f"clip confusions, {FRAMES / 1e6:.1f}M frames, {CLIPS} clips",
               lambda: B.clip_confusions(labels, first, offsets))
    b = B.clip_confusions(labels, second, offsets)
    counts = _timed(f"resample counts, {RESAMPLES} resamples",
                    lambda: B.resample_counts(groups, RESAMPLES, seed=0))
    ci = _timed(f"interval of one row, {RESAMPLES} resamples", lambda: B.interval(a, counts))
    gain = _timed("paired difference of two rows", lambda: B.paired_difference(b, a, counts))
    print(f"row: {ci.estimate:.4f} [{ci.low:.4f}, {ci.high:.4f}]; difference {gain.estimate:+.4f}"
          f" [{gain.low:+.4f}, {gain.high:+.4f}], > 0 in {gain.share_positive:.0%}")


if __name__ == "__main__":
    main()
