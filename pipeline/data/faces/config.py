"""Settings of ``fer-pipeline faces`` (``--config`` TOML, ``--set key=value``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import from_dict
from pipeline.data.faces.detectors import DETECTORS
from pipeline.errors import PipelineError
from pipeline.suggest import did_you_mean


@dataclass
class FacesConfig:
    """Face detection, tracking, five-point alignment and cropping of ``fer-pipeline faces``."""

    # "mtcnn" (weights below), "scrfd" (the ONNX file `onnx` names) or a plug-in's (docs/plugins.md)
    detector: str = "mtcnn"
    # the detector's own options (its Config: a table in TOML, --set options.KEY=VALUE), for a
    # detector that has a Config (the built-in ones read the fields here instead)
    options: Any = None
    onnx: str = ""  # an SCRFD detector with keypoints (insightface's det_10g.onnx and the like)
    onnx_size: int = 640  # input side for an ONNX file whose input size is free
    onnx_threshold: float = 0.5  # SCRFD score threshold (insightface's default)
    # The MTCNN weights: facenet-pytorch's wheel or a folder of pnet.pt/rnet.pt/onet.pt; empty:
    # $FER_FACE_WEIGHTS, else the wheel `make faces-weights` put in the checkout's .cache/faces/.
    weights: str = ""
    min_face: float = 20.0  # smallest face side searched, in video pixels (MTCNN's minsize)
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])  # P/R/O-Net scores
    factor: float = 0.709  # pyramid step between scales (MTCNN's default)
    size: int = 112  # side of the square crops (Aff-Wild2's cropped_aligned: 112)
    # Margin: 1.0 puts the landmarks on ArcFace's 112x112 template; 1.2 shows 1.2x more around.
    scale: float = 1.0
    # Crop pixels outside the frame (a face at the edge): "replicate" the border, "reflect" it,
    # or "black" (Aff-Wild2's released crops, and this stage before). Replicate: a black wedge is
    # a hard edge the backbone reads as content; a mirror copies an eye or a mouth corner into
    # the corner (pipeline.data.faces.align). Crops wholly inside the frame are the same in all.
    pad: str = "replicate"
    iou_min: float = 0.3  # a detection continues a track when its box overlaps the last this much
    max_gap: int = 5  # frames a track may miss and still be continued
    min_frames: int = 3  # shorter tracks are dropped as false detections
    # A frame whose colour histogram is this far from the previous frame's starts a new shot; no
    # track continues across it (pipeline.data.faces.shots: pans and zooms stay below 0.1).
    cut_threshold: float = 0.35
    # A frame this far or more from the previous one, and 3x farther than its neighbours are from
    # theirs, starts a shot too: a hard cut between similar-looking shots (real footage: 0.27).
    # 1.0 turns this rule off (the threshold alone, as before it existed).
    cut_spike: float = 0.2
    # A detection continues a track only if its face's colour histogram is within this distance
    # of the track's (0..1): another face where the last one was starts a new track.
    appearance_max: float = 0.5
    # Every track of min_frames or more becomes its own clip <video>_t<k> (k = 1, 2, ... by first
    # frame): groups, interviews, TV footage. Off: one person per video (two in two_person).
    all_faces: bool = False
    # Videos (file stems) that show two people: their clips are <video>_left and <video>_right.
    two_person: list[str] = field(default_factory=list)
    batch: int = 8  # frames per detector call
    jpeg_quality: int = 95  # quality (1-100) of the JPEG crops written
    scheduler: str = "inprocess"  # as `extract --scheduler`: one task per video

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS.names():  # read from the sources: imports none
            raise PipelineError(f"detector {self.detector!r}: choose from {DETECTORS.choices()}"
                                f"{did_you_mean(self.detector, DETECTORS.names())}")
        detector = DETECTORS.get(self.detector)
        if detector.Config is None:
            if self.options:
                raise PipelineError(f"options {self.options}: detector {self.detector} has none")
            self.options = None
        elif self.options is None or isinstance(self.options, dict):  # from TOML or --set
            try:
                self.options = from_dict(detector.Config, self.options or {},
                                         f"options (detector {self.detector})")
            except (TypeError, ValueError) as e:
                raise PipelineError(" ".join(str(e).split())) from None
        elif not isinstance(self.options, detector.Config):
            raise PipelineError(f"options {type(self.options).__name__}: not the options of "
                                f"detector {self.detector} ({detector.Config.__name__})")
        detector.check(self)
        if self.onnx_size < 32 or not 0.0 < self.onnx_threshold <= 1.0:
            raise PipelineError(f"onnx_size {self.onnx_size} / onnx_threshold {self.onnx_threshold}: "
                                "need a size >= 32 and a threshold in (0, 1]")
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
        if self.pad not in ("replicate", "reflect", "black"):
            raise PipelineError(f"pad {self.pad!r}: choose replicate, reflect or black")
        if not (0.0 < self.cut_threshold <= 1.0 and 0.0 < self.cut_spike <= 1.0
                and 0.0 < self.appearance_max <= 1.0):
            raise PipelineError(f"cut_threshold {self.cut_threshold} / cut_spike {self.cut_spike} / "
                                f"appearance_max {self.appearance_max}: need histogram distances "
                                "in (0, 1]")
        if self.batch < 1 or not 1 <= self.jpeg_quality <= 100:
            raise PipelineError(f"batch {self.batch} / jpeg_quality {self.jpeg_quality}: out of range")

    def output_key(self) -> dict:
        """What decides the crops (a finished video is redone when any of it changes)."""
        detector = DETECTORS.get(self.detector).key_fields
        key = {k: getattr(self, k) for k in ("detector", *detector, "size", "scale", "iou_min",
                                             "max_gap", "min_frames", "cut_threshold", "cut_spike",
                                             "appearance_max", "jpeg_quality", "pad")}
        if self.options is not None:  # only then: the built-in detectors' keys stay as they were
            key["options"] = dataclasses.asdict(self.options)
        return key
