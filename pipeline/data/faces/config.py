"""Settings of ``fer-pipeline faces`` (``--config`` TOML, ``--set key=value``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import PipelineError


@dataclass
class FacesConfig:
    # The MTCNN weights: facenet-pytorch's wheel or a folder of pnet.pt/rnet.pt/onet.pt; empty:
    # $FER_FACE_WEIGHTS, else the wheel `make faces-weights` put in the checkout's .cache/faces/.
    weights: str = ""
    min_face: float = 20.0  # smallest face side searched, in video pixels (MTCNN's minsize)
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])  # P/R/O-Net scores
    factor: float = 0.709  # pyramid step between scales (MTCNN's default)
    size: int = 112  # side of the square crops (Aff-Wild2's cropped_aligned: 112)
    # Margin: 1.0 puts the landmarks on ArcFace's 112x112 template; 1.2 shows 1.2x more around.
    scale: float = 1.0
    iou_min: float = 0.3  # a detection continues a track when its box overlaps the last this much
    max_gap: int = 5  # frames a track may miss and still be continued
    min_frames: int = 3  # shorter tracks are dropped as false detections
    # Videos (file stems) that show two people: their clips are <video>_left and <video>_right.
    two_person: list[str] = field(default_factory=list)
    batch: int = 8  # frames per detector call
    jpeg_quality: int = 95
    scheduler: str = "inprocess"  # as `extract --scheduler`: one task per video

    def __post_init__(self) -> None:
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise PipelineError(f"thresholds {self.thresholds}: need three scores in [0, 1]")
        if self.min_face < 12:
            raise PipelineError(f"min_face {self.min_face}: MTCNN finds faces of 12 pixels or more")
        if not 0.0 < self.factor < 1.0:
            raise PipelineError(f"factor {self.factor}: need a pyramid step in (0, 1)")
        if self.size < 16 or self.scale <= 0:
            raise PipelineError(f"size {self.size} / scale {self.scale}: need size >= 16, scale > 0")
        if not 0.0 < self.iou_min <= 1.0 or self.max_gap < 0 or self.min_frames < 1:
            raise PipelineError("iou_min in (0, 1], max_gap >= 0 and min_frames >= 1 please")
        if self.batch < 1 or not 1 <= self.jpeg_quality <= 100:
            raise PipelineError(f"batch {self.batch} / jpeg_quality {self.jpeg_quality}: out of range")

    def output_key(self) -> dict:
        """What decides the crops (a finished video is redone when any of it changes)."""
        return {k: getattr(self, k) for k in ("min_face", "thresholds", "factor", "size", "scale",
                                              "iou_min", "max_gap", "min_frames", "jpeg_quality")}
