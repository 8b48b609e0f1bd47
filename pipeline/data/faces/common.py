"""What every face detector shares: a detection (:class:`Face`), non-maximum suppression
(:func:`nms`, :func:`batched_nms`) and a file's SHA-256 (an ONNX detector's fingerprint).

Its own module so that the detectors (:mod:`~pipeline.data.faces.mtcnn`,
:mod:`~pipeline.data.faces.scrfd`, plug-ins) and the tracker import these without importing one
another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Face", "batched_nms", "file_sha256", "nms"]


@dataclass(frozen=True)
class Face:
    """One detection in image pixels."""

    box: np.ndarray  # float32 [4]: x1, y1, x2, y2
    score: float  # the detector's face probability (MTCNN: O-Net's)
    landmarks: np.ndarray  # float32 [5, 2]: (x, y) of left eye, right eye, nose, mouth left, right

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first.

    A box is dropped when its overlap with a kept, better box exceeds ``threshold``; overlap is
    intersection over union (``mode="union"``) or over the smaller area (``"min"``).
    """
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = w * h
        if mode == "min":
            overlap = inter / np.maximum(np.minimum(areas[best], areas[rest]), 1e-9)
        else:
            overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float,
                mode: str = "union") -> np.ndarray:
    """:func:`nms` within each group (image) separately, the groups' kept indices together."""
    keep = [np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], threshold, mode)]
            for g in np.unique(groups)]
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
