"""SCRFD face detectors from an ONNX file the user names (insightface's ``det_10g.onnx``,
``det_2.5g.onnx``, ``det_500m.onnx`` and other exports with keypoints), through onnxruntime.

What the file must be (the layout insightface's own ``SCRFD`` class reads): one image input
``[1, 3, H, W]``, RGB as ``(pixel - 127.5) / 128``; 9 outputs (strides 8, 16, 32 with 2 anchors
per cell) or 15 (strides 8..128, 1 anchor): first the scores of each stride ``[K, 1]``, then the
box distances ``[K, 4]``, then the keypoint offsets ``[K, 10]`` (a leading batch axis of 1 is
accepted). ``K`` runs over the stride's cells row by row, and within a cell over its anchors, all
centred on ``(x, y) * stride``; a box is ``centre -/+ distance * stride`` (left, top, right,
bottom), a keypoint ``centre + offset * stride``. A file without keypoints (6 or 10 outputs) is
refused: alignment needs them.

The frame is scaled to fit the input (aspect kept, bilinear), placed at the top-left of a black
canvas; detections over ``threshold`` are scaled back, then NMS at IoU ``nms`` (insightface: 0.4).
Files with a free input size run at ``size`` x ``size`` (insightface's default 640).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.data.faces.common import Face, file_sha256, nms
from pipeline.data.faces.detectors import Detector, onnx_sha256, register
from pipeline.data.faces.weights import WeightsError
from pipeline.errors import PipelineError

LAYOUTS = {9: ((8, 16, 32), 2), 15: ((8, 16, 32, 64, 128), 1)}  # outputs -> (strides, anchors)


@register
class SCRFD(Detector):
    """An SCRFD ONNX file with keypoints (insightface's det_10g.onnx and the like), through onnxruntime."""

    name = "scrfd"
    settings = ("onnx", "onnx_size", "onnx_threshold")
    key_fields = ("onnx_size", "onnx_threshold")

    @classmethod
    def check(cls, config: Any) -> None:
        if not config.onnx:
            raise PipelineError("detector scrfd: name its ONNX file (--onnx PATH or onnx=PATH)")

    @classmethod
    def from_config(cls, config: Any) -> "SCRFD":
        return cls(config.onnx, config.onnx_size, config.onnx_threshold)

    @classmethod
    def weights_id(cls, config: Any) -> str:
        return "scrfd:" + onnx_sha256(config.onnx)

    def __init__(self, path: str | Path, size: int = 640, threshold: float = 0.5, nms_iou: float = 0.4
                 ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: no such ONNX detector file")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own types for a bad file)
            raise WeightsError(f"{path}: not a loadable ONNX model ({' '.join(str(e).split())[:200]})") from None
        outputs = self.session.get_outputs()
        if len(outputs) not in LAYOUTS:
            raise WeightsError(f"{path}: {len(outputs)} outputs; an SCRFD detector with keypoints has "
                               "9 or 15 (scores, boxes, keypoints per stride)")
        self.strides, self.anchors = LAYOUTS[len(outputs)]
        shape = self.session.get_inputs()[0].shape
        fixed = all(isinstance(d, int) for d in shape[2:4])
        self.input_hw = (int(shape[2]), int(shape[3])) if fixed else (size, size)
        self.input_name = self.session.get_inputs()[0].name
        self.threshold, self.nms_iou = threshold, nms_iou
        self.sha256 = file_sha256(path)

    def _centres(self, stride: int) -> np.ndarray:
        rows, cols = self.input_hw[0] // stride, self.input_hw[1] // stride
        y, x = np.mgrid[:rows, :cols]
        centres = np.stack([x, y], axis=-1).reshape(-1, 2).astype(np.float64) * stride
        return np.repeat(centres, self.anchors, axis=0)  # each cell's anchors, one after the other

    def detect_one(self, frame: np.ndarray) -> list[Face]:
        height, width = frame.shape[:2]
        in_h, in_w = self.input_hw
        scale = min(in_h / height, in_w / width)
        new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
        canvas = np.zeros((in_h, in_w, 3), np.float32)
        canvas[:new_h, :new_w] = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR))
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})
        n = len(self.strides)
        boxes, scores, points = [], [], []
        for k, stride in enumerate(self.strides):
            score = np.asarray(outputs[k]).reshape(-1)
            distance = np.asarray(outputs[k + n]).reshape(-1, 4) * stride
            offsets = np.asarray(outputs[k + 2 * n]).reshape(-1, 10) * stride
            centres = self._centres(stride)
            if not len(score) == len(distance) == len(offsets) == len(centres):
                raise WeightsError(f"SCRFD stride {stride}: {len(score)} scores for {len(centres)} "
                                   "anchors: not the layout this reader knows")
            keep = score >= self.threshold
            c = centres[keep]
            boxes.append(np.concatenate([c - distance[keep, :2], c + distance[keep, 2:]], axis=1))
            points.append(np.tile(c, 5).reshape(-1, 5, 2) + offsets[keep].reshape(-1, 5, 2))
            scores.append(score[keep])
        box, score, point = (np.concatenate(a) / d for a, d in ((boxes, scale), (scores, 1.0), (points, scale)))
        order = nms(box, score, self.nms_iou)
        return [Face(box[i].astype(np.float32), float(score[i]), point[i].astype(np.float32))
                for i in order]

    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """uint8 RGB ``[B, H, W, 3]`` (or one frame) -> faces per frame, best first."""
        frames = np.asarray(frames)
        return [self.detect_one(f) for f in (frames[None] if frames.ndim == 3 else frames)]
