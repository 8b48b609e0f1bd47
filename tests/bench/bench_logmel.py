"""Log-mel: seconds per clip, and whether the output depends on torch's thread count.

Run ``python tests/bench/bench_logmel.py`` (``--minutes``, ``--threads``). For each preset (and
20 mels, where torch's sgemm projection used to depend on the thread count) it prints the seconds
``LogMel.compute`` takes on one clip of synthetic noise at one thread, and how many values differ
(and by how much, in dB) between one thread and each count in ``--threads``. Timings on a shared
machine vary with its load: the script prints the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from pipeline.features.extractors.logmel import LogMel, LogMelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="clip length")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 3, 5])
    args = parser.parse_args()
    wave = np.random.default_rng(0).normal(0, 0.3, int(args.minutes * 60 * 16000)).astype(np.float32)
    print(f"load average {os.getloadavg()[0]:.2f}; a {args.minutes:g}-minute clip at 16 kHz")
    for preset, n_mels in (("kim2023", None), ("jin2021", None), ("kim2023", 20)):
        extractor = LogMel(LogMelConfig(preset=preset, n_mels=n_mels))
        torch.set_num_threads(1)
        extractor.compute(wave[:16000])  # build the transform
        start = time.perf_counter()
        reference = extractor.compute(wave)
        seconds = time.perf_counter() - start
        diffs = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            out = extractor.compute(wave)
            diffs.append(f"{threads} threads: {int((out != reference).sum())} values differ, "
                         f"max {float(np.abs(out - reference).max()):.2g} dB")
        print(f"{preset} ({extractor.params.n_mels} mels): {seconds:.2f} s at 1 thread; " + "; ".join(diffs))


if __name__ == "__main__":
    main()
