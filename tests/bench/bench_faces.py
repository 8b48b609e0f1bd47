"""Benchmark of face detection and alignment (prints figures, asserts nothing).

Run: ``PYTHONPATH=. .venv/bin/python tests/bench/bench_faces.py [--frames 24] [--threads 1]``.
Frames/s of MTCNN (factor 0.709, min_face 20; and 40, which skips the finest pyramid levels) on
the moving real face (:mod:`pipeline.data.faces.synthetic`) at 320x240 and 640x480 (its frames
upscaled), in batches of 8 frames, then of the five-point alignment to 112x112 crops alone, on the CPU with the given
torch threads. Best of 3, wall and CPU time (``_timing.best_of``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from _timing import best_of
from pipeline.data.faces.align import align
from pipeline.data.faces.mtcnn import MTCNN
from pipeline.data.faces.synthetic import moving_face
from pipeline.data.faces.weights import load_state_dicts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state = load_state_dicts()
    small = moving_face(n_frames=args.frames).frames
    print(f"CPU, torch threads {args.threads}, {args.frames} frames, batches of 8")
    large = np.stack([np.asarray(Image.fromarray(f).resize((640, 480))) for f in small])
    for name, frames, min_face in (("320x240", small, 20), ("640x480", large, 20),
                                   ("640x480", large, 40)):
        detector = MTCNN(state, min_face=min_face)
        name = f"{name} min_face {min_face}"
        def detect():
            return [faces for i in range(0, len(frames), 8) for faces in detector.detect(frames[i:i + 8])]

        wall, cpu, found = best_of(detect)
        faces = [f[0] for f in found if f]
        print(f"detect {name}: {len(frames) / wall:6.1f} frames/s wall, {len(frames) / cpu:6.1f} "
              f"frames/s CPU ({len(faces)}/{len(frames)} frames with a face)")
        pairs = [(frames[i], f[0].landmarks) for i, f in enumerate(found) if f]
        wall, cpu, _ = best_of(lambda: [align(frame, marks) for frame, marks in pairs])
        print(f"align  {name}: {len(pairs) / wall:6.1f} crops/s wall, {len(pairs) / cpu:6.1f} crops/s CPU")


if __name__ == "__main__":
    main()
