"""Fine-tuning throughput: training frames/s of face backbones (forward + backward + optimiser step)
and of the data path that feeds them (JPEG decode + timm's training transform), on CPU here and on
CUDA where a GPU is present.

Run ``python tests/bench/bench_finetune.py`` (``--help``). The model rows train the bare backbone
and a linear classifier on a batch of random crops at the model's input size, as
:mod:`pipeline.finetune.loop` does (AdamW; ``--precision bf16`` for autocast). The data rows decode
``--batch`` JPEG face crops of the demo's size (112 px) and apply the training transform (random
resized crop, flip, colour jitter) in one process; a GPU stays busy when the data path, times the
number of DataLoader workers (``workers``), delivers at least the model's frames/s. Timings are
best of ``--repeat``; CPU seconds are steadier than wall on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _timing import best_of  # noqa: E402

from pipeline.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()

import timm  # noqa: E402
import timm.data  # noqa: E402


def model_rate(name: str, batch: int, repeat: int, device: str, precision: str) -> tuple[float, float]:
    torch.manual_seed(0)
    backbone = timm.create_model(name, pretrained=False, num_classes=0).to(device)
    head = torch.nn.Linear(backbone.num_features, 8).to(device)
    params = list(backbone.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=1e-4)
    size = timm.data.resolve_model_data_config(backbone)["input_size"]
    x = torch.randn(batch, *size, device=device)
    y = torch.randint(0, 8, (batch,), device=device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def step() -> None:
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=precision != "fp32"):
            logits = head(backbone(x))
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    wall, cpu, _ = best_of(step, repeat)
    return batch / wall, batch / max(cpu, 1e-9)


def data_rate(name: str, batch: int, repeat: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    config = timm.data.resolve_model_data_config(timm.create_model(name, pretrained=False))
    transform = timm.data.create_transform(
        input_size=config["input_size"], is_training=True, scale=(0.6, 1.0), hflip=0.5,
        color_jitter=0.2, auto_augment=None, re_prob=0.0, mean=config["mean"], std=config["std"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(batch):
            path = Path(tmp) / f"{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(path, quality=90)
            paths.append(path)

        def load() -> None:
            for path in paths:
                with Image.open(path) as image:
                    transform(image.convert("RGB"))

        wall, cpu, _ = best_of(load, repeat)
    return batch / wall, batch / max(cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Swin-Tiny, DINOv2, ConvNeXt ...: name them with --models (a few minutes each on 2 cores).
    parser.add_argument("--models", nargs="+", default=["test_resnet", "resnet10t", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} thread(s), {args.precision}, batch {args.batch}")
    print(f"{'model':32s} {'train frames/s (wall)':>22s} {'(cpu)':>8s} {'data frames/s/worker':>22s}")
    for name in args.models:
        train_wall, train_cpu = model_rate(name, args.batch, args.repeat, args.device, args.precision)
        data_wall, _ = data_rate(name, args.batch, args.repeat)
        print(f"{name:32s} {train_wall:22.1f} {train_cpu:8.1f} {data_wall:22.1f}")


if __name__ == "__main__":
    main()
