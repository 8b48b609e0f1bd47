"""``iresnet``: insightface's IResNet face embeddings, 512-d per frame (the backbone of paper 003).

Paper 003 (Jin et al. 2021) uses insightface's IResNet-100 trained with the CosFace loss on
Glint360K, then fine-tuned on Aff-Wild2 with AU and expression heads (multi-task). What we take:
the architecture, the 112x112 input and the 512-d output; the weights are whatever file you give
(insightface publishes IResNet-100 backbones trained with CosFace on Glint360K, as the paper's
was, and with ArcFace on MS1MV3, all with the state-dict names below), and the network stays
frozen here; ``fer-pipeline finetune --backbone iresnet`` trains it on the expression labels and
writes a folder this extractor loads (its record must name the same depth).

The architecture of insightface's ``recognition/arcface_torch/backbones/iresnet.py`` with the same
module and parameter names, so that a published ``backbone.pth`` (e.g. ``ms1mv3_arcface_r100``)
loads with ``load_state_dict(strict=True)``:

    conv1 (3x3, 64), bn1, prelu,
    layer1..layer4 of IBasicBlock (64, 128, 256, 512 channels, each layer strided by 2):
        bn1, conv1 (3x3), bn2, prelu, conv2 (3x3, strided), bn3, + downsample (1x1 conv, BN)
    bn2, dropout, fc (512*7*7 -> 512), features (BatchNorm1d, 512)

Blocks per layer: [3, 4, 14, 3] for IResNet-50, [3, 13, 30, 3] for IResNet-100. Input is a
112x112 RGB crop scaled to [-1, 1] as ``(x / 255 - 0.5) / 0.5``, as insightface does.

Without a weights file the network keeps PyTorch's default initialisation (its constructor's),
seeded per extractor (:mod:`~pipeline.features.extractors.seeding`):
insightface's N(0, 0.1) convolution init relies on training-mode batch statistics and overflows
through 100 layers in eval mode, which would make the random features useless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from pipeline.errors import PipelineError
from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register
from pipeline.features.extractors.checkpoints import block_counts, read_state_dict
from pipeline.features.weights_record import WeightsRecord, check_family

# Blocks per layer for each depth, as insightface defines them.
LAYERS = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6),
}
INPUT_SIZE = 112  # the fc layer is sized for a 7x7 map: 112 / 2**4
EMBEDDING_DIM = 512


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN, conv, BN, PReLU, strided conv, BN (+ shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.conv1 = _conv3x3(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = _conv3x3(c_out, c_out, stride)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers: tuple[int, int, int, int], num_features: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        c_in = 64
        for i, (c_out, n_blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = [IBasicBlock(c_in, c_out, stride=2)]
            blocks += [IBasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            c_in = c_out
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)  # kept for the published structure; a no-op when frozen
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def preprocess(image: Any) -> torch.Tensor:
    """A PIL face crop -> ``[3, 112, 112]`` in [-1, 1] (bilinear resize; insightface's scaling).
    ``fer-pipeline finetune --backbone iresnet`` selects its epoch on this same function."""
    if image.size != (INPUT_SIZE, INPUT_SIZE):
        image = image.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))
    return ((pixels / 255.0 - MEAN) / STD).permute(2, 0, 1).contiguous()


# What `preprocess` applies, in timm's data-config names (the weights record carries it).
MEAN = STD = 0.5
DATA_CONFIG = {"input_size": (3, INPUT_SIZE, INPUT_SIZE), "mean": (MEAN,) * 3, "std": (STD,) * 3,
               "crop_pct": 1.0, "interpolation": "bilinear"}


def check_record(record: WeightsRecord | None, depth: int, weights: Any) -> None:
    """Refuse a fine-tuned folder of another family or depth, or trained on another input."""
    check_family(record, "iresnet", f"iresnet{depth}", weights)
    if record is None:
        return
    for key in ("input_size", "mean", "std"):
        if tuple(record.preprocessing.get(key, DATA_CONFIG[key])) != DATA_CONFIG[key]:
            raise PipelineError(f"{weights}: trained on {key} {record.preprocessing[key]}, but "
                                f"iresnet feeds {DATA_CONFIG[key]}")


@dataclass
class IResNetConfig:
    depth: int = 100  # 50 or 100 (paper 003: IResNet-100); 18, 34 and 200 also exist in insightface


@register
class IResNetExtractor(ImageExtractor):
    name = "iresnet"
    Config = IResNetConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.depth not in LAYERS:
            raise PipelineError(
                f"iresnet: no depth {self.config.depth}; choose from {', '.join(map(str, LAYERS))}")
        check_record(self.weights_record, self.config.depth, self.weights)

    def outputs(self) -> dict[str, ArraySpec]:
        return {self.name: ArraySpec((EMBEDDING_DIM,))}

    def load(self) -> None:
        if self._model is None:
            model = self.build(lambda: IResNet(LAYERS[self.config.depth]))
            if self.weights is not None:
                self._check_depth()
                self.load_weights_file(model)
            self._model = self.freeze(model, channels_last=True)

    def _check_depth(self) -> None:
        """Name the fix when the file is an IResNet of another depth (read off its block counts)."""
        counts = block_counts(read_state_dict(self.weights))
        depth = next((d for d, layers in LAYERS.items() if layers == counts), None)
        if depth is not None and depth != self.config.depth:
            raise PipelineError(
                f"{self.weights}: this is an IResNet-{depth}, not {self.config.depth} (unexpected "
                f"block counts {counts}): add --set configs.iresnet.depth={depth}")

    def preprocess(self, image: Any) -> torch.Tensor:
        return preprocess(image)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.load()
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            return {self.name: self._model(x).float().cpu()}
