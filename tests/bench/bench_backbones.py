"""Frames/s of every backbone on this CPU: real-size architectures with seeded random weights.

Run ``python tests/bench/bench_backbones.py`` (``--help``). Random weights cost the same as
published ones (same architecture, same arithmetic). Image backbones run the bare model on
preprocessed batches of ``--batch`` crops (fp32, channels_last, as ``extract`` runs them). Audio
backbones run what ``extract`` runs per clip: ``compute_frontend`` once over ``--seconds`` of
audio, then ``embed`` on the windows of every video frame at 25 fps for each of the three window
lengths (32/48/64 frames); frames/s is video frames of that clip per second of work. The ONNX row
is an IResNet-50 exported with ``torch.onnx.export`` and run by onnxruntime.

Timings are best of ``--repeat`` and use ``torch.set_num_threads(--threads)``; the CPU seconds are
steadier than wall time on a shared machine, so frames/s is computed from both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _timing import best_of  # noqa: E402

from pipeline.features.audio_windows import frame_windows  # noqa: E402
from pipeline.features.extractors import create, registry  # noqa: E402

FPS = 25.0
IMAGE_BACKBONES = [  # (label, extractor, config overrides)
    ("timm resnet18 (+map)", "timm", dict(model="resnet18", map=True)),
    ("timm resnet50 (+map)", "timm", dict(model="resnet50", map=True)),
    ("timm efficientnet_b0", "timm", dict(model="efficientnet_b0")),
    ("timm convnext_tiny", "timm", dict(model="convnext_tiny")),
    ("timm vit_small_patch14_dinov2 (518 px)", "timm", dict(model="vit_small_patch14_dinov2")),
    ("swin (swin_tiny, 224 px)", "swin", {}),
    ("iresnet-100 (torch, 112 px)", "iresnet", dict(depth=100)),
]
AUDIO_BACKBONES = [
    ("hf_audio (wav2vec2-base size)", "hf_audio", {}),
    ("ecapa (ECAPA-TDNN 1024 ch)", "ecapa", {}),
    ("xvector (SpeechBrain)", "xvector", {}),
    ("egemaps (opensmile)", "egemaps", {}),
    ("tdnn (ours, log-mel)", "tdnn", {}),
]


def build(name: str, overrides: dict, **kwargs) -> object:
    config = registry()[name].Config(**overrides)
    extractor = create(name, config=config, **kwargs)
    extractor.load()
    return extractor


def image_row(label: str, extractor, batch: int, repeat: int) -> tuple[str, float, float]:
    from PIL import Image

    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(batch)]
    x = torch.stack([extractor.preprocess(p) for p in pics])
    extractor.forward(x)  # warm-up
    wall, cpu, _ = best_of(lambda: extractor.forward(x), repeat)
    return label, batch / wall, batch / cpu


def audio_row(label: str, extractor, seconds: float, repeat: int) -> tuple[str, float, float]:
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, int(seconds * extractor.frontend_sample_rate)).astype(np.float32)
    n_frames = int(seconds * FPS)

    def clip() -> None:
        rows = extractor.compute_frontend(wave)
        rate = extractor.frontend_frame_rate
        for w in extractor.windows:
            for start in range(0, n_frames, 64):  # batches of 64 frames, as the stage does
                frames = np.arange(start, min(start + 64, n_frames))
                extractor.embed(torch.from_numpy(frame_windows(rows, rate, n_frames, FPS, w, frames)))

    wall, cpu, _ = best_of(clip, repeat)
    return label, n_frames / wall, n_frames / cpu


def onnx_row(batch: int, repeat: int) -> tuple[str, float, float]:
    from pipeline.features.extractors.iresnet import LAYERS, IResNet

    folder = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    model = IResNet(LAYERS[50]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 112, 112),), str(folder / "r50.onnx"),
                          dynamo=False, input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "b"}, "embedding": {0: "b"}})
    return image_row("onnx (IResNet-50 export, 112 px)", build("onnx", {}, weights=folder / "r50.onnx"),
                     batch, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="crops per image batch")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio clip length")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="labels containing these words")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wanted = (lambda label: args.only is None or any(w in label for w in args.only))
    rows = []
    for label, name, overrides in IMAGE_BACKBONES:
        if wanted(label):
            rows.append(image_row(label, build(name, overrides), args.batch, args.repeat))
    if wanted("onnx"):
        rows.append(onnx_row(args.batch, args.repeat))
    for label, name, overrides in AUDIO_BACKBONES:
        if wanted(label):
            rows.append(audio_row(label, build(name, overrides), args.seconds, args.repeat))
    print(f"threads={args.threads} batch={args.batch} audio={args.seconds:g}s at {FPS:g} fps; "
          "random weights, real-size architectures, fp32")
    print(f"{'backbone':42s} {'frames/s (wall)':>16s} {'frames/s (CPU)':>15s}")
    for label, wall_rate, cpu_rate in rows:
        print(f"{label:42s} {wall_rate:16.1f} {cpu_rate:15.1f}")


if __name__ == "__main__":
    main()
