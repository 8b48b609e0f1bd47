"""AU labels: parsing annotation files, packing them into manifests, scoring and threshold fitting.

Run: ``PYTHONPATH=. python tests/bench/bench_au.py [--frames N]``. Prints frames per second of
each step on N frames of runs like real annotations (default 50,000, one long clip), and the
manifest bytes per frame, for the real dataset's ~2.6 million AU-annotated frames.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _timing import best_of

from pipeline.data.labels import AU_HEADER, NUM_AUS, parse_au_annotation
from pipeline.data.manifest import Clip
from pipeline.metrics.au import fit_au_thresholds, score_au


def annotation(n: int, spaced: bool) -> tuple[bytes, np.ndarray]:
    """An AU file of ``n`` frames: states held for 25 frames, 5% of them rows of -1."""
    rng = np.random.default_rng(0)
    runs = n // 25 + 1
    rows = np.repeat(rng.integers(0, 2, (runs, NUM_AUS)), 25, axis=0)[:n].astype(np.int8)
    rows[np.repeat(rng.random(runs) < 0.05, 25)[:n]] = -1
    sep = ", " if spaced else ","
    text = "\n".join([AU_HEADER, *(sep.join(map(str, r)) for r in rows.tolist())]) + "\n"
    return text.encode(), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    n = parser.parse_args().frames
    for spaced in (False, True):
        data, rows = annotation(n, spaced)
        wall, cpu, _ = best_of(lambda: parse_au_annotation(data))
        kind = "with spaces (row by row)" if spaced else "clean"
        print(f"parse AU file, {kind}: {n / wall / 1e6:.2f} M frames/s (cpu {n / cpu / 1e6:.2f})")
    clip = Clip("x", "train", "x", n, 30.0, None, None, None, None, au_labels=rows,
                au_split="train")
    wall, _, record = best_of(lambda: json.dumps(clip.to_json(), separators=(",", ":")))
    print(f"manifest record: {len(record) / n:.2f} bytes per frame, written at "
          f"{n / wall / 1e6:.2f} M frames/s")
    wall, _, _ = best_of(lambda: Clip.from_json(json.loads(record)))
    print(f"manifest record read at {n / wall / 1e6:.2f} M frames/s")
    probs = np.clip(0.6 * rows + np.random.default_rng(1).random(rows.shape) * 0.7, 0, 1)
    wall, _, _ = best_of(lambda: score_au(rows, probs))
    print(f"score_au: {n / wall / 1e6:.2f} M frames/s")
    wall, _, _ = best_of(lambda: fit_au_thresholds(rows, probs))
    print(f"fit_au_thresholds (19-value grid): {n / wall / 1e6:.2f} M frames/s")


if __name__ == "__main__":
    main()
