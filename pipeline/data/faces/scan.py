"""One decoding pass of a video for ``fer-pipeline faces``: the faces of every frame (the
configured detector, :func:`~pipeline.data.faces.detectors.detector_for`), the shot cuts and each
face's colour signature (:mod:`~pipeline.data.faces.shots`); and the arrays of a clip's quality
file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.data.faces.common import Face
from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.detectors import detector_for
from pipeline.data.faces.shots import cuts as shot_cuts
from pipeline.data.faces.shots import face_signature, histogram
from pipeline.data.faces.video import frame_batches

__all__ = ["Scan", "detect_video", "quality_arrays", "scan_video"]


def detect_video(video: Path, config: FacesConfig) -> tuple[list[list[Face]], int]:
    """Detections per frame and the number of frames."""
    scan = scan_video(video, config)
    return scan.detections, scan.frames


@dataclass
class Scan:
    """One decoding pass of a video: detections, shot cuts and face signatures per frame."""

    detections: list[list[Face]]
    frames: int  # frames decoded
    cuts: list[int]  # frames that start a shot
    signatures: list[list[np.ndarray]]  # each detection's colour histogram


def scan_video(video: Path, config: FacesConfig,
               on_frames: Callable[[int], None] | None = None) -> Scan:
    """Detect faces and measure shots and appearance in one pass; ``on_frames(frames decoded)``
    after each batch (progress)."""
    detector = detector_for(config)
    detections: list[list[Face]] = []
    signatures: list[list[np.ndarray]] = []
    histograms: list[np.ndarray] = []
    for batch in frame_batches(video, config.batch):
        found = detector.detect(batch)
        for frame, faces in zip(batch, found):
            histograms.append(histogram(frame))
            signatures.append([face_signature(frame, f.box) for f in faces])
        detections += found
        if on_frames is not None:
            on_frames(len(detections))
    return Scan(detections, len(detections), shot_cuts(histograms, config.cut_threshold, config.cut_spike), signatures)


def quality_arrays(person: dict[int, Face], transforms: dict[int, np.ndarray], n: int, fps: float) -> dict:
    """The arrays of a clip's quality file (``ROOT/faces/<clip>.npz``) from its chosen face per
    frame and each one's crop transform; NaN (and ``face`` False) where the clip has none."""
    face = np.zeros(n, bool)
    score = np.full(n, np.nan, np.float32)
    box = np.full((n, 4), np.nan, np.float32)
    landmarks = np.full((n, 5, 2), np.nan, np.float32)
    transform = np.full((n, 2, 3), np.nan, np.float32)
    for i, f in person.items():
        face[i], score[i], box[i], landmarks[i], transform[i] = True, f.score, f.box, f.landmarks, transforms[i]
    return {"face": face, "score": score, "box": box, "landmarks": landmarks,
            "transform": transform, "fps": np.float64(fps)}
