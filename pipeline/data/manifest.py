"""Clip records and their JSON-lines manifests: the only thing later stages know about the dataset.

A manifest directory holds ``<split>.jsonl`` (one :class:`Clip` per line, for the splits
``train``, ``val`` and ``test`` of the expression task), ``au_only.jsonl`` (clips that have AU
labels but no expression annotation) and ``report.json`` (what the reader repaired or rejected).
Keeping the AU-only clips apart means that adding AU annotations to a dataset changes nothing an
expression-only run reads: its splits, dev slices and scores stay the same.

Frame indexing everywhere: frame ``i`` (0-based) is image ``{i+1:05d}.jpg`` and annotation line
``i+1``; it covers the time span ``[i / fps, (i + 1) / fps)`` of the video's audio.

Labels are stored run-length encoded, AU labels packed into one code per frame first
(:mod:`pipeline.data.label_runs`). The AU fields are left out of a record that has none, so a
manifest written before AU labels existed and one written now for the same data are the same.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipeline.data.clip_ids import check_name
from pipeline.data.label_runs import (decode_runs, encode_runs, encode_value_runs, pack_au,
                                       unpack_au)
from pipeline.data.manifest_check import check_record
from pipeline.data.labels import (AU_NAMES, CLASSES, NUM_AUS, NUM_CLASSES, UNLABELED, VA_INVALID,
                                  VA_NAMES)

SPLITS: tuple[str, ...] = ("train", "val", "test")
AU_SPLITS: tuple[str, ...] = ("train", "val")  # the AU annotation folders; no AU test list is read
AU_ONLY = "au_only"  # manifest file stem of the clips with AU labels and no expression annotation
TASKS: tuple[str, ...] = ("expr", "au")  # the tasks fusion heads train
LABEL_TASKS: tuple[str, ...] = ("expr", "au", "va")  # the label kinds a clip may carry
# Scores the leakage guard can exclude a clip from: "<task>_val".
EXCLUDABLE: tuple[str, ...] = tuple(f"{task}_val" for task in LABEL_TASKS)
# The optional fields, in record order; absent from a record when they hold their default.
_AU_FIELDS = ("au_labels", "au_split", "exclude_from", "va_labels", "va_split")
VA_SPLITS: tuple[str, ...] = ("train", "val")  # the VA annotation folders


@dataclass(frozen=True, eq=False)
class Clip:
    """One annotated face track: a video, or one side (``_left``/``_right``) of a two-person video."""

    clip_id: str  # annotation file stem, e.g. "10-60-1280x720_left"; unique across splits
    split: str  # "train", "val" or "test": the expression split (an AU-only clip: its AU split)
    video_id: str  # the source video's stem (shared by _left/_right clips)
    n_frames: int  # frames in the clip = frames in the video (labels are repaired to this length)
    fps: float  # the video's frame rate, read from the video file
    frames_dir: str | None  # folder of {i+1:05d}.jpg face crops (missing files = no face)
    video_path: str | None  # the source video, if found
    audio_path: str | None  # file the audio track is decoded from (the video), None if no audio
    labels: np.ndarray | None  # int8 [n_frames], -1 = not annotated; None for test clips and
    #                            clips with AU labels only (those live in au_only.jsonl)
    au_labels: np.ndarray | None = None  # int8 [n_frames, 12] in AU_NAMES order, rows of -1 = not
    #                                      annotated; None: no AU annotation file
    au_split: str | None = None  # "train" or "val": the AU folder the AU labels came from
    exclude_from: tuple[str, ...] = ()  # scores the leakage guard leaves this clip out of:
    #                                     "expr_val", "au_val", "va_val" (pipeline.data.leakage)
    va_labels: np.ndarray | None = None  # float32 [n_frames, 2] (valence, arousal), rows of -5 =
    #                                      invalid; None: no VA annotation file
    va_split: str | None = None  # "train" or "val": the VA folder the VA labels came from

    def __post_init__(self) -> None:
        check_name(self.clip_id)  # it names folders and files: one safe path component
        if self.split not in SPLITS:
            raise ValueError(f"clip {self.clip_id}: unknown split {self.split!r}")
        if self.labels is not None and len(self.labels) != self.n_frames:
            raise ValueError(
                f"clip {self.clip_id}: {len(self.labels)} labels for {self.n_frames} frames"
            )
        if (self.au_labels is None) != (self.au_split is None):
            raise ValueError(f"clip {self.clip_id}: AU labels and AU split come together")
        if self.au_split is not None and self.au_split not in AU_SPLITS:
            raise ValueError(f"clip {self.clip_id}: unknown AU split {self.au_split!r}")
        if self.au_labels is not None and self.au_labels.shape != (self.n_frames, NUM_AUS):
            raise ValueError(f"clip {self.clip_id}: AU labels of shape {self.au_labels.shape} "
                             f"for {self.n_frames} frames, want ({self.n_frames}, {NUM_AUS})")
        if (self.va_labels is None) != (self.va_split is None):
            raise ValueError(f"clip {self.clip_id}: VA labels and VA split come together")
        if self.va_split is not None and self.va_split not in VA_SPLITS:
            raise ValueError(f"clip {self.clip_id}: unknown VA split {self.va_split!r}")
        if self.va_labels is not None and self.va_labels.shape != (self.n_frames, len(VA_NAMES)):
            raise ValueError(f"clip {self.clip_id}: VA labels of shape {self.va_labels.shape} "
                             f"for {self.n_frames} frames, want ({self.n_frames}, 2)")
        unknown = set(self.exclude_from) - set(EXCLUDABLE)
        if unknown:
            raise ValueError(f"clip {self.clip_id}: exclude_from {sorted(unknown)} is not one of "
                             f"{list(EXCLUDABLE)}")

    @property
    def expr_split(self) -> str | None:
        """The clip's split in the expression task: None for a clip with AU labels only."""
        return None if self.labels is None and self.split != "test" else self.split

    def task_split(self, task: str) -> str | None:
        """The clip's split for ``task`` ("expr", "au" or "va"), None where it is not in that
        task."""
        if task == "expr":
            return self.expr_split
        if task == "au":
            return self.au_split
        if task == "va":
            return self.va_split
        raise ValueError(f"unknown task {task!r}, want one of {list(LABEL_TASKS)}")

    @property
    def label_tasks(self) -> tuple[str, ...]:
        """The tasks this clip carries labels of: any subset of "expr", "au", "va"."""
        return tuple(t for t, labels in (("expr", self.labels), ("au", self.au_labels),
                                          ("va", self.va_labels)) if labels is not None)

    def scored_in(self, task: str, split: str = "val") -> bool:
        """Whether this clip's frames count in ``task``'s ``split`` scores: it is in that split
        and the leakage guard did not exclude it (only validation scores are ever excluded)."""
        return self.task_split(task) == split and f"{task}_{split}" not in self.exclude_from

    def scoring_labels(self, task: str) -> np.ndarray | None:
        """The clip's labels of ``task`` (int8 ``[T]`` for "expr", ``[T, 12]`` for "au") as scores
        should see them: all ``-1`` where the leakage guard excluded the clip from that task's
        validation score, so every metric skips its frames; None where it has no such labels."""
        labels = {"expr": self.labels, "au": self.au_labels, "va": self.va_labels}.get(task)
        if labels is None:
            self.task_split(task)  # raises on an unknown task
            return None
        if f"{task}_val" in self.exclude_from:
            return np.full_like(labels, VA_INVALID if task == "va" else UNLABELED)
        return labels

    def frame_path(self, index: int) -> Path | None:
        """Path of frame ``index``'s face crop (it may not exist), or None without a frame folder."""
        return None if self.frames_dir is None else Path(self.frames_dir) / f"{index + 1:05d}.jpg"

    def to_json(self) -> dict:
        record = {k: getattr(self, k) for k in self.__dataclass_fields__
                  if k != "labels" and k not in _AU_FIELDS}
        record["labels"] = None if self.labels is None else encode_runs(self.labels)
        if self.au_labels is not None:
            record["au_labels"] = encode_runs(pack_au(self.au_labels))
            record["au_split"] = self.au_split
        if self.exclude_from:
            record["exclude_from"] = list(self.exclude_from)
        if self.va_labels is not None:  # absent without VA: manifests without VA stay as before
            record["va_labels"] = [encode_value_runs(self.va_labels[:, k]) for k in range(2)]
            record["va_split"] = self.va_split
        return record

    @classmethod
    def from_json(cls, record: dict) -> "Clip":
        fields = dict(record)
        runs = fields.pop("labels")
        labels = None if runs is None else decode_runs(runs)
        au_runs = fields.pop("au_labels", None)
        au_labels = None if au_runs is None else unpack_au(decode_runs(au_runs, np.int16))
        fields["exclude_from"] = tuple(fields.get("exclude_from", ()))
        va_runs = fields.pop("va_labels", None)
        va_labels = None if va_runs is None else np.stack(
            [decode_runs(runs, np.float32) for runs in va_runs], axis=1)
        return cls(labels=labels, au_labels=au_labels, va_labels=va_labels, **fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Clip):
            return NotImplemented
        return self.to_json() == other.to_json()


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
    """Stream the clips of one manifest file; a bad line is a ValueError naming the file, the
    line and the field (:func:`~pipeline.data.manifest_check.check_record`)."""
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                record = json.loads(line)
                check_record(record)
                clip = Clip.from_json(record)
            except (ValueError, TypeError, KeyError, RecursionError) as e:
                reason = " ".join(str(e).split())[:200]
                raise ValueError(f"{path}:{line_no}: not a clip record ({reason})") from None
            yield clip


def load_clips(manifests: str | Path, splits: Iterable[str] = SPLITS, au_only: bool = False
               ) -> list[Clip]:
    """All clips of the given expression splits from a manifest directory (splits without a file
    are empty), and with ``au_only`` the clips that have AU labels only (``au_only.jsonl``; a
    manifest directory written before AU labels has none)."""
    manifests = Path(manifests)
    if not manifests.is_dir():
        raise FileNotFoundError(f"{manifests}: no such manifest directory")
    clips: list[Clip] = []
    for stem in [*splits, *([AU_ONLY] if au_only else [])]:
        path = manifests / f"{stem}.jsonl"
        if path.exists():
            clips.extend(iter_manifest(path))
    return clips


def clip_digest(clip: Clip) -> str:
    """sha256 of what a clip's record means to later stages: its id, length and labels
    (expression, AU and VA). Paths, fps and the leakage guard's marks are left out: moving the
    dataset or re-running the guard does not make it another manifest."""
    record = {"clip_id": clip.clip_id, "n_frames": clip.n_frames,
              "labels": None if clip.labels is None else encode_runs(clip.labels),
              "au_labels": None if clip.au_labels is None else encode_runs(pack_au(clip.au_labels))}
    if clip.va_labels is not None:  # absent without VA: digests of runs before VA stay the same
        record["va_labels"] = [encode_value_runs(clip.va_labels[:, k]) for k in range(2)]
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def feature_digest(clip: Clip) -> str:
    """sha256 of what a clip's *features* depend on: its id, frame count, fps and which media it
    has (the frame folder's and the video's file names, whether it has audio). Labels are left
    out: a manifest that corrects labels or adds AU annotations reads the same features, so a
    store extracted before stays valid (:func:`clip_digest`, with labels, is what runs record).
    Folders above the media are left out too: moving the dataset changes no feature."""
    media = {"frames": None if clip.frames_dir is None else Path(clip.frames_dir).name,
             "video": None if clip.video_path is None else Path(clip.video_path).name,
             "audio": None if clip.audio_path is None else Path(clip.audio_path).name}
    record = {"clip_id": clip.clip_id, "n_frames": clip.n_frames, "fps": float(clip.fps),
              "media": media}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def fingerprint(clips: Iterable[Clip]) -> str:
    """sha256 of a set of clips (order-free): their splits and :func:`clip_digest` s. Two runs
    with equal fingerprints read the same clips with the same lengths and labels."""
    lines = sorted(f"{c.split} {c.clip_id} {clip_digest(c)}" for c in clips)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def task_clips(clips: Iterable[Clip], task: str, split: str) -> list[Clip]:
    """The clips in ``task``'s ``split`` (for "au" load with ``au_only=True`` to get them all)."""
    return [clip for clip in clips if clip.task_split(task) == split]


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
    rejections: list[Issue]  # clips (or a clip's AU labels) left out, one entry each; no clip is
    #                          left out without one
    au_only: list[Clip] = field(default_factory=list)  # clips with AU labels only, sorted by id
    leakage: dict = field(default_factory=dict)  # the leakage guard's findings (Leakage.to_json)

    def all_clips(self) -> list[Clip]:
        """Every clip: the expression splits in order, then the AU-only clips."""
        return [c for split in SPLITS for c in self.clips.get(split, [])] + list(self.au_only)

    def counts(self) -> dict[str, dict]:
        """Per split: clips, frames, frames with a face, labelled frames per class, unlabelled;
        and under ``au`` the split's AU clips (its AU folder), their labelled and unlabelled frames
        and the frames each AU is active in; under ``va`` (only when some clip has VA labels) the
        split's VA clips and their valid and invalid frames."""
        counts = {}
        everything = self.all_clips()
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
                "au": _au_counts([c for c in everything if c.au_split == split]),
            }
            va = [c.va_labels for c in everything if c.va_split == split]
            if any(c.va_labels is not None for c in everything):  # absent without VA: as before
                valid = sum(int((v[:, 0] != VA_INVALID).sum()) for v in va)
                counts[split]["va"] = {"clips": len(va), "valid": valid,
                                       "invalid": sum(len(v) for v in va) - valid}
        return counts

    def report(self) -> dict:
        """The content of ``report.json``."""
        return {
            "root": self.root,
            "test_list": self.test_list,
            "counts": self.counts(),
            "au_only_clips": len(self.au_only),
            "leakage": self.leakage,
            "repaired": dict(Counter(issue.kind for issue in self.repairs)),
            "rejected": dict(Counter(issue.kind for issue in self.rejections)),
            "repairs": [issue.to_json() for issue in self.repairs],
            "rejections": [issue.to_json() for issue in self.rejections],
        }


def _au_counts(clips: list[Clip]) -> dict:
    """AU clips, labelled and unlabelled frames, and active frames per AU, of some clips."""
    active = np.zeros(NUM_AUS, dtype=np.int64)
    labelled = 0
    for clip in clips:
        rows = clip.au_labels[clip.au_labels[:, 0] != UNLABELED]
        active += rows.sum(axis=0, dtype=np.int64)
        labelled += len(rows)
    return {
        "clips": len(clips),
        "labelled": labelled,
        "unlabelled": sum(clip.n_frames for clip in clips) - labelled,
        "active": {name: int(n) for name, n in zip(AU_NAMES, active)},
    }


def write_manifests(reading: DatasetReading, out_dir: str | Path, manifests: bool = True) -> Path:
    """Write ``<split>.jsonl`` for every split and ``au_only.jsonl`` (empty ones too, replacing
    stale files) and ``report.json`` into ``out_dir``; returns the report's path. With
    ``manifests=False`` only the report is written (the reading was refused)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS if manifests else ():
        write_manifest(out_dir / f"{split}.jsonl", reading.clips.get(split, []))
    if manifests:
        write_manifest(out_dir / f"{AU_ONLY}.jsonl", reading.au_only)
    report = out_dir / "report.json"
    tmp = report.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(reading.report(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(report)
    return report
