"""The plain torch loop ``finetune`` is measured against (issue 32): the same training frames and
the same seeded network, nothing of the project's data path: PIL reads each crop, resizes it to
``size`` (bilinear; a no-op at the crops' own size), scales to [0, 1], normalises with the model's
mean and std, and AdamW trains backbone + linear layer with cross-entropy on plain shuffled
batches (no class balancing, no clipping, no augmentation)."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from pipeline.features.extractors.seeding import seeded_build
from pipeline.features.extractors.timm_models import build_timm, timm_probe


def frames(clips):
    """(paths, labels) of every labelled frame with a face crop."""
    paths, labels = [], []
    for clip in clips:
        for i, label in enumerate(clip.labels):
            path = clip.frame_path(i)
            if label >= 0 and path.exists():
                paths.append(path)
                labels.append(int(label))
    return paths, np.array(labels, dtype=np.int64)


def tensors(paths, size, model):
    cfg = timm_probe(model).data_config
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    images = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            images.append(np.asarray(image, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return (x - mean) / std


def train(clips, model="test_resnet", size=None, epochs=5, lr=1e-3, weight_decay=0.05,
          batch_size=32, seed=0, eval_clips=()):
    """Per-epoch mean training loss (and seconds); the network: ``finetune``'s seeded random one."""
    torch.manual_seed(seed)
    paths, labels = frames(clips)
    if size is None:
        with Image.open(paths[0]) as image:
            size = max(image.size)
    x, y = tensors(paths, size, model), torch.from_numpy(labels)
    backbone = seeded_build(lambda: build_timm(model, None), "timm", seed)
    net = torch.nn.Sequential(backbone, torch.nn.Linear(timm_probe(model).num_features, 8))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        started = time.perf_counter()
        net.train()
        order = rng.permutation(len(y))
        losses = []
        for i in range(0, len(order), batch_size):
            rows = torch.from_numpy(order[i:i + batch_size])
            if len(rows) < 2:
                continue
            loss = torch.nn.functional.cross_entropy(net(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        history.append({"loss": float(np.mean(losses)), "s": time.perf_counter() - started})
    return net, history
