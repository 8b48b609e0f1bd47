"""Raw videos without annotations: the clips of a ``fer-pipeline faces`` output root.

``faces VIDEOS --out ROOT`` writes, per video, ``ROOT/faces/<video>.json`` (its record, written
last), ``ROOT/faces/<clip>.npz`` and ``ROOT/cropped_aligned/<clip>/``. A root with such records
and no annotation folder is read here: every clip of every record becomes an unlabelled clip of
the ``test`` split (the split without labels, the one ``predict`` and ``ensemble`` score), its
video referenced where it lies (the record's absolute path: nothing is copied), its frame count
the frames that *decoded* (the record's ``frames``, not the container's declared count, which
real files often miss by a few), its fps and audio from the video itself.

A record that cannot be read, or whose video is gone or unreadable, rejects its clips with one
line each; the others are kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.data.manifest import SPLITS, Clip, DatasetReading, Issue
from pipeline.data.media import MediaError, probe_video, variable_rate

CROPS, QUALITY, PARTIAL = "cropped_aligned", "faces", ".faces-partial"  # a faces root's folders
RAW_SPLIT = "test"  # unlabelled clips: the split that has no labels


def face_records(root: str | Path) -> list[Path]:
    """The per-video records (``faces/<video>.json``) of a faces output root, sorted."""
    folder = Path(root) / QUALITY
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_file() and e.name.endswith(".json")
                          and not e.name.startswith("."))
    except OSError:
        return []


def read_record(path: Path) -> dict:
    """A video's record, checked: ``video`` (a path), ``clips`` (names), ``frames`` (decoded, > 0).
    Raises ValueError with the reason."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"unreadable faces record ({' '.join(str(e).split())})") from None
    if not isinstance(record, dict):
        raise ValueError("not a faces record (a JSON object)")
    video, clips, frames = record.get("video"), record.get("clips"), record.get("frames")
    if not isinstance(video, str) or not video:
        raise ValueError("faces record without its video's path")
    if not isinstance(clips, list) or not all(isinstance(c, str) and c for c in clips):
        raise ValueError("faces record without a list of clip names")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"faces record with frames {frames!r}: need a positive count")
    return record


def read_faces_root(root: str | Path) -> DatasetReading:
    """The clips of every record under ``root`` (see the module docstring)."""
    root = Path(os.path.abspath(root))
    clips: list[Clip] = []
    faces: dict[str, int] = {}
    repairs: list[Issue] = []
    rejections: list[Issue] = []
    for path in face_records(root):
        try:
            record = read_record(path)
        except ValueError as e:
            rejections.append(Issue(path.stem, str(path), "bad_faces_record", str(e)))
            continue
        video = Path(record["video"])
        if not video.is_absolute():  # written before records held absolute paths
            video = root / video
        try:
            info = probe_video(video, timed=True)
        except MediaError as e:
            for name in record["clips"]:
                rejections.append(Issue(name, str(video), "unreadable_video",
                                        str(e).removeprefix(f"{video}: ")))
            continue
        n = record["frames"]
        if info.n_frames != n:
            repairs.append(Issue(path.stem, str(video), "frames_decoded",
                                 f"the container declares {info.n_frames} frames, {n} decoded: "
                                 f"the clips have {n}"))
        if info.drift > 1 / info.fps:  # beyond a frame: the clip's audio is off by as much
            repairs.append(Issue(path.stem, str(video), "variable_frame_rate",
                                 variable_rate(video, info).removeprefix(f"{video}: ")))
        if not record["clips"]:  # `faces --all-faces` found no face track: said, not dropped unseen
            repairs.append(Issue(path.stem, str(video), "no_faces",
                                 f"no face track in its {n} frames: no clip from this video"))
        for name in record["clips"]:
            folder = root / CROPS / name
            count = record.get("faces", {}).get(name, 0) if isinstance(record.get("faces"), dict) else 0
            faces[name] = int(count) if isinstance(count, int) else 0
            if not faces[name]:
                repairs.append(Issue(name, str(video), "no_faces",
                                     f"no face in any of its {n} frames: kept, every frame faceless"))
            if not info.has_audio:
                repairs.append(Issue(name, str(video), "no_audio",
                                     "the video has no audio track: kept for its face crops"
                                     if faces[name] else "the video has no audio track either: "
                                     "kept, with no features to extract (a row per frame in predict)"))
            clips.append(Clip(clip_id=name, split=RAW_SPLIT, video_id=video.stem, n_frames=n,
                              fps=info.fps, frames_dir=str(folder) if folder.is_dir() else None,
                              video_path=str(video),
                              audio_path=str(video) if info.has_audio else None, labels=None))
    seen: set[str] = set()
    kept = []
    for clip in sorted(clips, key=lambda c: c.clip_id):
        if clip.clip_id in seen:
            rejections.append(Issue(clip.clip_id, str(clip.video_path), "duplicate",
                                    f"clip {clip.clip_id} is named by two faces records"))
            continue
        seen.add(clip.clip_id)
        kept.append(clip)
    split_clips = {split: [] for split in SPLITS}
    split_clips[RAW_SPLIT] = kept
    return DatasetReading(root=str(root), test_list=None, clips=split_clips, faces=faces,
                          repairs=repairs, rejections=rejections)
