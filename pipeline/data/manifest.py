"""Clip records and their JSON-lines manifests: the only thing later stages know about the dataset.

A manifest directory holds ``<split>.jsonl`` (one :class:`Clip` per line, for the splits
``train``, ``val`` and ``test``) and ``report.json`` (what the reader repaired or rejected).

Frame indexing everywhere: frame ``i`` (0-based) is image ``{i+1:05d}.jpg`` and annotation line
``i+1``; it covers the time span ``[i / fps, (i + 1) / fps)`` of the video's audio.

Labels are stored run-length encoded (``[[label, count], ...]``): Aff-Wild2 labels come in long
runs, so a 2.7-million-frame dataset stays a few hundred kilobytes of manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipeline.data.labels import CLASSES, NUM_CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Clip:
    """One annotated face track: a video, or one side (``_left``/``_right``) of a two-person video."""

    clip_id: str  # annotation file stem, e.g. "10-60-1280x720_left"; unique across splits
    split: str  # "train", "val" or "test"
    video_id: str  # the source video's stem (shared by _left/_right clips)
    n_frames: int  # frames in the clip = frames in the video (labels are repaired to this length)
    fps: float  # the video's frame rate, read from the video file
    frames_dir: str | None  # folder of {i+1:05d}.jpg face crops (missing files = no face)
    video_path: str | None  # the source video, if found
    audio_path: str | None  # file the audio track is decoded from (the video), None if no audio
    labels: np.ndarray | None  # int8 [n_frames], -1 = not annotated; None for test clips

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"clip {self.clip_id}: unknown split {self.split!r}")
        if self.labels is not None and len(self.labels) != self.n_frames:
            raise ValueError(
                f"clip {self.clip_id}: {len(self.labels)} labels for {self.n_frames} frames"
            )

    def frame_path(self, index: int) -> Path | None:
        """Path of frame ``index``'s face crop (it may not exist), or None without a frame folder."""
        return None if self.frames_dir is None else Path(self.frames_dir) / f"{index + 1:05d}.jpg"

    def to_json(self) -> dict:
        record = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "labels"}
        record["labels"] = None if self.labels is None else encode_runs(self.labels)
        return record

    @classmethod
    def from_json(cls, record: dict) -> "Clip":
        fields = dict(record)
        runs = fields.pop("labels")
        labels = None if runs is None else decode_runs(runs)
        return cls(labels=labels, **fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Clip):
            return NotImplemented
        return self.to_json() == other.to_json()


def encode_runs(labels: np.ndarray) -> list[list[int]]:
    """Run-length encode a label array: [[label, count], ...]."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    counts = np.diff(np.r_[starts, labels.size])
    return [[int(labels[s]), int(c)] for s, c in zip(starts, counts)]


def decode_runs(runs: list[list[int]]) -> np.ndarray:
    if not runs:
        return np.zeros(0, dtype=np.int8)
    values, counts = zip(*runs)
    return np.repeat(np.asarray(values, dtype=np.int8), counts)


def write_manifest(path: str | Path, clips: Iterable[Clip]) -> int:
    """Write clips as JSON lines (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for clip in clips:
            f.write(json.dumps(clip.to_json(), separators=(",", ":")) + "\n")
            count += 1
    tmp.replace(path)
    return count


def iter_manifest(path: str | Path) -> Iterator[Clip]:
    """Stream the clips of one manifest file."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Clip.from_json(json.loads(line))
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{path}:{line_no}: not a clip record ({e})") from None


def load_clips(manifests: str | Path, splits: Iterable[str] = SPLITS) -> list[Clip]:
    """All clips of the given splits from a manifest directory (splits without a file are empty)."""
    manifests = Path(manifests)
    if not manifests.is_dir():
        raise FileNotFoundError(f"{manifests}: no such manifest directory")
    clips: list[Clip] = []
    for split in splits:
        path = manifests / f"{split}.jsonl"
        if path.exists():
            clips.extend(iter_manifest(path))
    return clips


@dataclass(frozen=True)
class Issue:
    """One repair or rejection made while reading a dataset."""

    clip: str  # the clip id it concerns
    file: str  # the file that shows the problem (annotation, video, frame folder or test list)
    kind: str  # short stable name of the rule applied, e.g. "labels_padded" (see data_manifests/)
    reason: str  # one line for a human: what was found and what was done

    def to_json(self) -> dict:
        return {"clip": self.clip, "file": self.file, "kind": self.kind, "reason": self.reason}


@dataclass
class DatasetReading:
    """What a dataset reader produced: the clips of each split, and what it repaired or rejected."""

    root: str  # the dataset folder that was read
    test_list: str | None  # the file the test split's clip names came from, if any
    clips: dict[str, list[Clip]]  # split -> its clips sorted by id; every split in SPLITS is a key
    faces: dict[str, int]  # clip id -> frames with a face crop on disk (within the clip's frames)
    repairs: list[Issue]  # clips kept after a documented repair, one entry per repair
    rejections: list[Issue]  # clips left out, one entry each; no clip is left out without one

    def counts(self) -> dict[str, dict]:
        """Per split: clips, frames, frames with a face, labelled frames per class, unlabelled."""
        counts = {}
        for split in SPLITS:
            clips = self.clips.get(split, [])
            per_class = np.zeros(NUM_CLASSES, dtype=np.int64)
            unlabelled = 0
            for clip in clips:
                if clip.labels is None:
                    unlabelled += clip.n_frames
                    continue
                labelled = clip.labels[clip.labels >= 0]
                per_class += np.bincount(labelled, minlength=NUM_CLASSES)
                unlabelled += clip.n_frames - labelled.size
            counts[split] = {
                "clips": len(clips),
                "frames": sum(clip.n_frames for clip in clips),
                "faces": sum(self.faces.get(clip.clip_id, 0) for clip in clips),
                "labelled": {name: int(n) for name, n in zip(CLASSES, per_class)},
                "unlabelled": unlabelled,
            }
        return counts

    def report(self) -> dict:
        """The content of ``report.json``."""
        return {
            "root": self.root,
            "test_list": self.test_list,
            "counts": self.counts(),
            "repaired": dict(Counter(issue.kind for issue in self.repairs)),
            "rejected": dict(Counter(issue.kind for issue in self.rejections)),
            "repairs": [issue.to_json() for issue in self.repairs],
            "rejections": [issue.to_json() for issue in self.rejections],
        }


def write_manifests(reading: DatasetReading, out_dir: str | Path) -> Path:
    """Write ``<split>.jsonl`` for every split (empty ones too, replacing stale files) and
    ``report.json`` into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    for split in SPLITS:
        write_manifest(out_dir / f"{split}.jsonl", reading.clips.get(split, []))
    report = out_dir / "report.json"
    tmp = report.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(reading.report(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(report)
    return report
