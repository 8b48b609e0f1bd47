"""Benchmark of stage three's hot loops at Aff-Wild2 scale (prints figures, asserts nothing).

Run: ``.venv/bin/python tests/bench/bench_ensemble.py`` (``make bench`` runs every bench file).
numpy runs single-threaded here, so CPU time is what the code costs and wall time what it took.

* macro-F1 (all metrics, one bincount) on 2.7M frames: the whole Aff-Wild2 EXPR set;
* the 25-pair proportional m,n search on 1M frames x 8 classes (target < 1 s), for two members
  that mostly agree (trained heads) and for two independent random members (the worst case:
  the frames where both members agree are counted once, so agreement makes it cheaper);
* the other tuned steps on 1M frames: mean filter (one window), bias coordinate ascent;
* a whole cross-fitted ensemble (5 folds + the test fit) of 3 members on a 0.5M-frame val split,
  without and with the nested decisions (5 inner folds per fit), and the bootstrap intervals.
"""

from __future__ import annotations

import numpy as np

from _timing import best_of

from pipeline.scoring import crossfit as C
from pipeline.scoring import ensemble as E
from pipeline.scoring import postprocess as P
from pipeline.metrics import search as S
from pipeline.scoring.frames import SplitData
from pipeline.metrics.scores import score


def _timed(label: str, fn, repeat: int = 3):
    """Print the best of ``repeat`` runs (wall and CPU time); return the result."""
    wall, cpu, result = best_of(fn, repeat)
    print(f"{label:<62s} {wall * 1000:9.1f} ms wall {cpu * 1000:9.1f} ms cpu")
    return result


def _labels(rng, n: int) -> np.ndarray:
    """Labels in runs of ~100 frames, 10% unannotated, as in Aff-Wild2."""
    runs = rng.integers(0, 8, n // 100 + 1)
    labels = np.repeat(runs, 100)[:n].astype(np.int8)
    labels[rng.random(n) < 0.1] = -1
    return labels


def _member(rng, labels: np.ndarray, strength: float) -> np.ndarray:
    logits = rng.normal(size=(len(labels), 8)).astype(np.float32)
    logits[np.arange(len(labels)), np.clip(labels, 0, 7)] += strength
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def main() -> None:
    rng = np.random.default_rng(0)

    n = 2_700_000
    truth = rng.integers(-1, 8, n).astype(np.int8)
    pred = rng.integers(0, 8, n).astype(np.int8)
    s = _timed(f"metrics.score on {n:,} frames", lambda: score(truth, pred))
    print(f"{'':<62s} macro-F1 {s.macro_f1:.4f} over {s.n_frames:,} annotated frames")

    n = 1_000_000
    labels = _labels(rng, n)
    audio, image = _member(rng, labels, 1.5), _member(rng, labels, 2.5)
    fit = _timed(f"proportional search, 25 pairs, {n:,} frames, heads agreeing",
                 lambda: S.proportional_search(audio, image, labels))
    print(f"{'':<62s} best m={fit.m} n={fit.n} macro-F1 {fit.grid.max():.4f}")
    noise_a, noise_b = _member(rng, labels, 0.0), _member(rng, labels, 0.0)
    _timed(f"proportional search, 25 pairs, {n:,} frames, random heads",
           lambda: S.proportional_search(noise_a, noise_b, labels))

    offsets = np.arange(0, n + 1, 5000, dtype=np.int64)  # 200 clips of 5,000 frames
    smoothed = _timed(f"mean filter, window 101, {n:,} frames",
                      lambda: P.smooth_probs(image, offsets, "mean", 101), repeat=1)
    _timed(f"bias search (3 sweeps x 8 classes x 41 values), {n:,} frames",
           lambda: S.bias_search(np.log(smoothed + P.EPS), labels,
                                 E.EnsembleConfig().bias_grid()), repeat=1)

    n = 500_000
    labels = _labels(rng, n)
    lengths = np.full(100, n // 100)
    data = SplitData(
        clip_ids=tuple(f"c{i}" for i in range(100)),
        groups=tuple(f"v{i}" for i in range(100)),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        probs=np.stack([_member(rng, labels, s) for s in (1.0, 1.5, 2.0)]),
        labels=labels,
        face=rng.random(n) > 0.05,
    )
    names = ["a/main", "b/main", "c/main"]
    config = E.EnsembleConfig(windows=(1, 11, 51, 101))
    _timed(f"cross-fitted ensemble, 3 members, 5 folds, {n:,} frames, not nested",
           lambda: C.cross_fit(data, names, E.EnsembleConfig(windows=config.windows,
                                                             nested=False)), repeat=1)
    outcome = _timed("the same, steps decided by 5 inner folds (default)",
                     lambda: C.cross_fit(data, names, config), repeat=1)
    _timed(f"test fit on all {n:,} val frames (nested)",
           lambda: C.nested_fit(data, names, config), repeat=1)
    for row in outcome.rows[-4:]:
        print(f"  {row.name:<60s} macro-F1 {row.scores.macro_f1:.4f}")


if __name__ == "__main__":
    main()
