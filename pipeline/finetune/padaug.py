"""Padding-aware augmentation of face crops for the fine-tune (``--set augment.pad_prob=P``).

A face near the frame's edge gets a crop whose outer part lies outside the frame; ``faces`` fills
it by replicating the frame's border (``FacesConfig.pad``, :mod:`pipeline.data.faces.align`). The
2026 challenge leader trains with a padding-aware augmentation (PadAug) so that the backbone learns
to ignore such padding; its abstract and introduction, all we could read, name it without a
recipe. What this module does is therefore ours: with probability ``prob``, a training crop is
made to look like the crop of a face at an edge. One side of the crop is chosen, a boundary line
is drawn parallel to it, ``uniform(0.05, max_shift)`` of the crop's side in from it and tilted by
up to ``max_angle`` degrees (crops are rotated relative to the frame, so the frame's edge runs
obliquely through them), and every pixel beyond the line is replaced by the padding ``mode``
gives: ``replicate`` (the line's pixel along the line's normal: what ``faces`` writes),
``reflect`` (mirrored about the line) or ``black``.

Every draw comes from Python's ``random``, which the fine-tune seeds per sample (the same sample
and seed give the same crop, as timm's own transforms do).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

MODES = ("replicate", "reflect", "black")


@dataclass
class PadAugment:
    prob: float = 0.0  # chance that a crop is padded (0: off)
    max_shift: float = 0.3  # deepest padding, as a fraction of the crop side
    max_angle: float = 15.0  # tilt of the frame's edge in the crop, degrees either way
    mode: str = "replicate"  # replicate, reflect or black: as FacesConfig.pad

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0 or not 0.05 < self.max_shift < 1.0 or self.mode not in MODES:
            raise ValueError(f"pad augmentation: prob {self.prob} in [0, 1], max_shift "
                             f"{self.max_shift} in (0.05, 1), mode {self.mode!r} in {MODES}")

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.prob <= 0.0 or random.random() >= self.prob:
            return image
        pixels = np.asarray(image.convert("RGB"))
        h, w = pixels.shape[:2]
        side = random.randrange(4)  # 0 left, 1 right, 2 top, 3 bottom: where the frame ended
        depth = random.uniform(0.05, self.max_shift) * (w if side < 2 else h)
        tilt = math.radians(random.uniform(-self.max_angle, self.max_angle))
        # inward normal of the chosen side, turned by the tilt; the line passes `depth` in from
        # the side's midpoint
        normal = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]][side])
        c, s = math.cos(tilt), math.sin(tilt)
        normal = np.array([c * normal[0] - s * normal[1], s * normal[0] + c * normal[1]])
        start = np.array([[0.0, h / 2], [w, h / 2], [w / 2, 0.0], [w / 2, h]][side])
        point = start + depth * normal
        yy, xx = np.mgrid[:h, :w]
        centres = np.stack([xx + 0.5, yy + 0.5], -1)
        outside = (centres - point) @ normal  # < 0: beyond the line (outside the frame)
        beyond = outside < 0
        out = pixels.copy()
        if self.mode == "black":
            out[beyond] = 0
            return Image.fromarray(out)
        # replicate: back onto the line along its normal; reflect: as far again inside
        steps = -outside[beyond] * (1.0 if self.mode == "replicate" else 2.0)
        source = centres[beyond] + steps[:, None] * normal
        sx = np.clip(np.floor(source[:, 0]).astype(int), 0, w - 1)
        sy = np.clip(np.floor(source[:, 1]).astype(int), 0, h - 1)
        out[beyond] = pixels[sy, sx]
        return Image.fromarray(out)
