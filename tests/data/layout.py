"""Tiny Aff-Wild2 dataset folders with real files, for the reader's tests.

:func:`write_layout` writes the Aff-Wild2 layout the reader reads (``data_manifests/README.md``):
32x32 JPEG crops with gaps, short mp4s with a sine audio track, annotation files in the published
format and a test list.
Tests then break one thing in it and check that the reader repairs or rejects exactly that.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.media import write_video

# The published header, written out rather than built from CLASSES: the reader must match the
# file format, not this project's constant.
HEADER_LINE = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU_HEADER_LINE = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
SAMPLE_RATE = 16000


def annotation_text(labels, header: str | None = HEADER_LINE, newline: str = "\n") -> str:
    """An EXPR annotation file: the header, then line i+1 = frame i's label, -1 = not annotated."""
    lines = ([header] if header is not None else []) + [str(int(v)) for v in labels]
    return newline.join(lines) + newline


def write_annotation(path: Path, labels, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(annotation_text(labels, **kwargs).encode("utf-8"))
    return path


def au_text(rows, header: str | None = AU_HEADER_LINE, newline: str = "\n") -> str:
    """An AU annotation file: the header, then per frame its 12 values comma-separated."""
    lines = ([header] if header is not None else []) + [",".join(map(str, r)) for r in rows]
    return newline.join(lines) + newline


def write_au_annotation(path: Path, rows, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(au_text(np.asarray(rows).tolist(), **kwargs).encode("utf-8"))
    return path


def au_labels_for(n_frames: int, seed: int) -> np.ndarray:
    """int8 [n, 12]: runs of random 0/1 rows and a run of -1 rows, like real AU annotations."""
    rng = np.random.default_rng(100 + seed)
    rows = np.repeat(rng.integers(0, 2, (n_frames, 12)), 3, axis=0)[:n_frames].astype(np.int8)
    rows[2:4] = -1
    return rows


def write_frames(folder: Path, n_frames: int, missing=(), size: int = 32) -> Path:
    """``{i+1:05d}.jpg`` for every frame i not in ``missing`` (missing = no face detected)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n_frames)
    for i in range(n_frames):
        if i not in missing:
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i + 1:05d}.jpg", quality=80)
    return folder


def write_clip_video(path: Path, n_frames: int, fps: float, audio: bool = True) -> Path:
    """A 32x32 video of ``n_frames`` frames, with a 440 Hz sine track as long as the video."""
    frames = np.random.default_rng(0).integers(0, 256, (n_frames, 32, 32, 3), dtype=np.uint8)
    sound = None
    if audio:
        t = np.arange(int(round(n_frames / fps * SAMPLE_RATE))) / SAMPLE_RATE
        sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_video(path, frames, fps, sound, SAMPLE_RATE)
    return path


def labels_for(n_frames: int, seed: int) -> np.ndarray:
    """Runs of labels 0..7 with a -1 run, like real annotations."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 8, n_frames), 4)[:n_frames].astype(np.int8)
    labels[n_frames // 2: n_frames // 2 + 3] = -1
    return labels


@dataclass
class Layout:
    """Where write_layout put things, and what the reader should find there."""

    root: Path
    challenge: str  # the annotation folder's name: EXPR_Recognition_Challenge or _Classification_
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # clip id -> written labels
    n_frames: dict[str, int] = field(default_factory=dict)  # clip id -> frames of its video
    fps: dict[str, float] = field(default_factory=dict)  # clip id -> its video's fps
    faces: dict[str, int] = field(default_factory=dict)  # clip id -> crops written
    split: dict[str, str] = field(default_factory=dict)  # clip id -> its split

    @property
    def annotations(self) -> Path:
        return self.root / "annotations" / self.challenge

    @property
    def test_list(self) -> Path:
        return self.root / "test_set.txt"

    def copy_to(self, root: Path) -> "Layout":
        """The same dataset copied to ``root`` (copying is 50x faster than writing videos)."""
        shutil.copytree(self.root, root)
        return replace(self, root=root)

    @property
    def au(self) -> Path:
        return self.root / "annotations" / "AU_Detection_Challenge"

    def au_train(self, clip_id: str) -> Path:
        return self.au / "Train_Set" / f"{clip_id}.txt"

    def au_val(self, clip_id: str) -> Path:
        return self.au / "Validation_Set" / f"{clip_id}.txt"

    def train(self, clip_id: str) -> Path:
        return self.annotations / "Train_Set" / f"{clip_id}.txt"

    def val(self, clip_id: str) -> Path:
        return self.annotations / "Validation_Set" / f"{clip_id}.txt"

    def frames(self, clip_id: str) -> Path:
        folder = "cropped_aligned_new_50_vids" if clip_id == "vid3" else "cropped_aligned"
        return self.root / folder / clip_id

    def video(self, video_id: str) -> Path:
        folder = {"vid3": "batch1", "vid4": "raw_videos"}.get(video_id, "videos")
        return self.root / folder / f"{video_id}.mp4"


def write_layout(root: Path, challenge: str = "EXPR_Recognition_Challenge") -> Layout:
    """A clean dataset: train vid1 and the two-person vid2_left/_right, val vid3, test vid4.

    Videos sit in ``videos/``, ``batch1/`` and ``raw_videos/``; vid3's crops in
    ``cropped_aligned_new_50_vids/``; every clip misses a few crops. Reading it repairs nothing.
    """
    layout = Layout(root, challenge)
    videos = {"vid1": (20, 10.0), "vid2": (24, 12.5), "vid3": (16, 15.0), "vid4": (12, 10.0)}
    clips = {  # clip id -> split, video, missing crops
        "vid1": ("train", "vid1", (3, 4)),
        "vid2_left": ("train", "vid2", (0,)),
        "vid2_right": ("train", "vid2", (5, 6, 7)),
        "vid3": ("val", "vid3", (15,)),
        "vid4": ("test", "vid4", (2,)),
    }
    for video_id, (n_frames, fps) in videos.items():
        write_clip_video(layout.video(video_id), n_frames, fps)
    for seed, (clip_id, (split, video_id, missing)) in enumerate(clips.items()):
        n_frames, fps = videos[video_id]
        write_frames(layout.frames(clip_id), n_frames, missing)
        layout.n_frames[clip_id], layout.fps[clip_id] = n_frames, fps
        layout.faces[clip_id] = n_frames - len(missing)
        layout.split[clip_id] = split
        if split != "test":
            labels = labels_for(n_frames, seed)
            path = layout.train(clip_id) if split == "train" else layout.val(clip_id)
            write_annotation(path, labels)
            layout.labels[clip_id] = labels
    layout.test_list.write_text("vid4\n", encoding="utf-8")
    return layout


# AU annotations of write_au_layout: clip id -> AU split. vid1 is in both tasks' training splits;
# vid2_left (expression train) and vid3 (expression val) cross over, the leaks the guard finds;
# vid5 and vid6 have AU labels only.
AU_SPLITS = {"vid1": "train", "vid3": "train", "vid5": "train", "vid2_left": "val", "vid6": "val"}
AU_ONLY_VIDEOS = {"vid5": (18, 10.0), "vid6": (14, 12.5)}


def write_au_layout(layout: Layout) -> dict[str, np.ndarray]:
    """Add AU annotations (and the videos and crops of the AU-only clips) to a written layout;
    returns clip id -> the AU labels written."""
    for video_id, (n_frames, fps) in AU_ONLY_VIDEOS.items():
        write_clip_video(layout.video(video_id), n_frames, fps)
        write_frames(layout.frames(video_id), n_frames, missing=(1,))
    written = {}
    for seed, (clip_id, split) in enumerate(AU_SPLITS.items()):
        n_frames = layout.n_frames.get(clip_id) or AU_ONLY_VIDEOS[clip_id][0]
        written[clip_id] = au_labels_for(n_frames, seed)
        path = layout.au_train(clip_id) if split == "train" else layout.au_val(clip_id)
        write_au_annotation(path, written[clip_id])
    return written


# Fixtures for the test modules that import them: the layout is written once per module and each
# test gets its own copy to break.
@pytest.fixture(scope="module")
def clean_layout(tmp_path_factory) -> Layout:
    return write_layout(tmp_path_factory.mktemp("layout") / "root")


@pytest.fixture
def layout(clean_layout: Layout, tmp_path: Path) -> Layout:
    return clean_layout.copy_to(tmp_path / "root")
