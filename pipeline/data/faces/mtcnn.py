"""MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks"): faces with a box, a score and five landmarks.

Three networks run as a cascade on each image:

1. **P-Net**, fully convolutional, over an image pyramid (scales ``12 / min_face * factor**k``
   while the short side stays >= 12 pixels): every 12x12 cell (stride 2) whose face probability
   is >= ``thresholds[0]`` is a candidate box, moved by its regression. NMS (IoU 0.5) per scale,
   then NMS (IoU 0.7) over all scales; boxes are made square.
2. **R-Net** re-scores 24x24 crops of the candidates (>= ``thresholds[1]``), NMS 0.7, regression,
   squares again.
3. **O-Net** re-scores 48x48 crops (>= ``thresholds[2]``) and gives five landmarks (left eye,
   right eye, nose, left and right mouth corner, as seen in the image), regression, then NMS 0.7
   on intersection over the *smaller* box (removes a box inside another).

Pixels enter as ``(rgb - 127.5) / 128``. Crops reaching past the image are padded with black, as
the original implementation does (facenet-pytorch clips them to the image instead). Coordinates
are 0-based and continuous: a box ``(x1, y1, x2, y2)`` covers ``x1 <= x < x2``. The layer names
are the ones of facenet-pytorch's state dicts, whose R-/O-Net dense layers read the last conv
map in (width, height, channel) order (the weights come from Caffe's transposed images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.faces import weights as face_weights
from pipeline.data.faces.common import Face, batched_nms, nms
from pipeline.data.faces.detectors import Detector, register

MEAN, SCALE = 127.5, 1.0 / 128.0
CELL, STRIDE = 12, 2  # P-Net's window and step, in pyramid pixels


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3, H, W] -> (regression [N, 4, h, w], face probability [N, h, w])."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3, 24, 24] -> (regression [N, 4], face probability [N])."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))  # (W, H, C) order
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # landmarks: 5 x, then 5 y, as fractions of the box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[N, 3, 48, 48] -> (regression [N, 4], landmarks [N, 10], face probability [N])."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box's edges by ``offsets`` (fractions of its width and height)."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def _square(boxes: np.ndarray) -> np.ndarray:
    """Squares of side max(width, height) on the same centres."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _crops(images: torch.Tensor, groups: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """``[N, 3, size, size]`` crops of whole-pixel boxes (black past the image), area-resized."""
    _, _, height, width = images.shape
    out = torch.empty(len(boxes), 3, size, size, dtype=images.dtype)
    for k, (g, box) in enumerate(zip(groups, np.round(boxes).astype(np.int64))):
        x1, y1, x2, y2 = box
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = images.new_zeros(3, y2 - y1, x2 - x1)  # zeros: black (normalised below)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[:, sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = images[g, :, sy1:sy2, sx1:sx2]
        out[k] = F.interpolate(patch[None], size=(size, size), mode="area")[0]
    return (out - MEAN) * SCALE


@register
class MTCNN(Detector):
    """MTCNN (Zhang et al. 2016): the P-/R-/O-Net cascade with facenet-pytorch's weights;
    :meth:`detect` takes a batch of same-size RGB frames."""

    name = "mtcnn"
    settings = ("weights", "min_face", "thresholds", "factor")
    key_fields = ("min_face", "thresholds", "factor")

    @classmethod
    def from_config(cls, config: Any) -> "MTCNN":
        return cls(face_weights.load_state_dicts(config.weights or None), config.min_face,
                   tuple(config.thresholds), config.factor)

    @classmethod
    def weights_id(cls, config: Any) -> str:
        return face_weights.fingerprint()  # the weights found now (see pipeline.data.faces.weights)

    def __init__(self, state_dicts: dict[str, dict], min_face: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709
                 ) -> None:
        if min_face < CELL:
            raise ValueError(f"min_face {min_face}: MTCNN finds faces of {CELL} pixels or more")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor {factor}: need a pyramid step in (0, 1)")
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            net.load_state_dict(state_dicts[name])
            net.eval()
        self.min_face, self.thresholds, self.factor = float(min_face), tuple(thresholds), factor

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid: the first maps ``min_face`` pixels onto P-Net's 12-pixel cell."""
        scale, side, scales = CELL / self.min_face, min(height, width) * CELL / self.min_face, []
        while side >= CELL:
            scales.append(scale)
            scale, side = scale * self.factor, side * self.factor
        return scales

    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """uint8 RGB ``[B, H, W, 3]`` (or one ``[H, W, 3]`` frame) -> faces per frame, best first."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        images = torch.from_numpy(np.require(frames, requirements=["C", "W"])).permute(0, 3, 1, 2).float()
        n, _, height, width = images.shape
        boxes, scores, groups = self._stage1(images)
        boxes, scores, groups, _ = self._refine(images, boxes, groups, self.rnet, 24, self.thresholds[1])
        result: list[list[Face]] = [[] for _ in range(n)]
        if len(boxes) == 0:
            return result
        boxes, scores, groups, landmarks = self._refine(images, boxes, groups, self.onet, 48,
                                                        self.thresholds[2])
        for k in np.argsort(-scores, kind="stable"):
            result[groups[k]].append(Face(boxes[k].astype(np.float32), float(scores[k]),
                                          landmarks[k].astype(np.float32)))
        return result

    def _stage1(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, _, height, width = images.shape
        all_boxes, all_offsets, all_scores, all_groups = [], [], [], []
        for scale in self.scales(height, width):
            size = (int(height * scale + 1), int(width * scale + 1))
            pyramid = (F.interpolate(images, size=size, mode="area") - MEAN) * SCALE
            # channels-last: torch's CPU pooling and convolutions run faster (1.4x the cascade)
            regression, probability = self.pnet(pyramid.contiguous(memory_format=torch.channels_last))
            group, row, col = np.nonzero(probability.numpy() >= self.thresholds[0])
            if group.size == 0:
                continue
            # The cell's window in pyramid pixels, mapped back by the scale actually used per axis.
            sy, sx = size[0] / height, size[1] / width
            boxes = np.stack([STRIDE * col / sx, STRIDE * row / sy,
                              (STRIDE * col + CELL) / sx, (STRIDE * row + CELL) / sy], axis=1)
            scores = probability.numpy()[group, row, col]
            offsets = regression.numpy()[group, :, row, col]
            keep = batched_nms(boxes, scores, group, 0.5)
            all_boxes.append(boxes[keep])
            all_offsets.append(offsets[keep])
            all_scores.append(scores[keep])
            all_groups.append(group[keep])
        if not all_boxes:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
        boxes, offsets, scores, groups = (np.concatenate(a) for a in
                                          (all_boxes, all_offsets, all_scores, all_groups))
        keep = batched_nms(boxes, scores, groups, 0.7)  # on the cells, then regression (as MTCNN)
        return _square(_regress(boxes[keep], offsets[keep])), scores[keep], groups[keep]

    def _refine(self, images: torch.Tensor, boxes: np.ndarray, groups: np.ndarray, net: nn.Module,
                size: int, threshold: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """R-Net (no landmarks) or O-Net: re-score crops, regress, suppress duplicates."""
        if len(boxes) == 0:
            return boxes, np.zeros(0), groups, None
        boxes = np.round(boxes)  # the crops are whole pixels: the regression starts from them
        crops = _crops(images, groups, boxes, size).contiguous(memory_format=torch.channels_last)
        outputs = [o.numpy() for o in net(crops)]
        offsets, scores = outputs[0], outputs[-1]
        passed = scores >= threshold
        boxes, offsets, scores, groups = boxes[passed], offsets[passed], scores[passed], groups[passed]
        if len(outputs) == 2:  # R-Net: suppress, then regress and square (as MTCNN)
            keep = batched_nms(boxes, scores, groups, 0.7)
            return _square(_regress(boxes[keep], offsets[keep])), scores[keep], groups[keep], None
        # O-Net: landmarks are fractions of the box it saw; regress, then suppress boxes that lie
        # mostly inside a better one (overlap over the smaller area).
        marks = outputs[1][passed]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        landmarks = np.stack([boxes[:, :1] + w[:, None] * marks[:, :5],
                              boxes[:, 1:2] + h[:, None] * marks[:, 5:]], axis=2)
        boxes = _regress(boxes, offsets)
        keep = batched_nms(boxes, scores, groups, 0.7, "min")
        return boxes[keep], scores[keep], groups[keep], landmarks[keep]
