"""The videos ``fer-pipeline faces`` crops, and their records: which files are videos, which
show two people, and whether a video is done already (its record's key matches)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.discover import VIDEO_SUFFIXES
from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.detectors import weights_id
from pipeline.data.raw import QUALITY
from pipeline.errors import PipelineError

__all__ = ["find_videos", "is_complete", "two_person_videos", "video_key"]


def find_videos(paths: list[str | Path]) -> list[Path]:
    """Video files named, or found (recursively) in the folders named; stems must be unique."""
    videos: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():  # hidden folders (a faces root's .faces-partial) are not searched
            videos += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES
                             and p.is_file()
                             and not any(part.startswith(".") for part in p.relative_to(path).parts[:-1]))
        elif path.is_file():
            videos.append(path)
        else:
            raise PipelineError(f"{path}: no such video file or folder")
    stems: dict[str, Path] = {}
    for video in videos:  # a stem that is no clip id is skipped by process_video, in one line
        if video.stem in stems:
            raise PipelineError(f"{video}: same name as {stems[video.stem]} (clips are named by "
                                "the video's file name)")
        stems[video.stem] = video
    if not videos:
        raise PipelineError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return videos


def two_person_videos(annotations: str | Path, videos: list[str | Path]) -> set[str]:
    """Stems of ``videos`` that have a ``<stem>_left.txt`` or ``<stem>_right.txt`` anywhere
    under ``annotations`` (how Aff-Wild2 names the two sides of a two-person video)."""
    annotations = Path(annotations)
    if not annotations.is_dir():
        raise PipelineError(f"{annotations}: no such annotation folder")
    sides = {p.stem.rsplit("_", 1)[0] for p in annotations.rglob("*.txt")
             if p.stem.endswith(("_left", "_right"))}
    return sides & {v.stem for v in find_videos(videos)}


def video_key(video: Path, config: FacesConfig) -> dict:
    """What a video's record must hold for the video to count as done: the settings, the
    detector's weights, the file's size and mtime."""
    stat = video.stat()
    key = {"settings": config.output_key(), "weights": weights_id(config),
           "video": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
           "two_person": video.stem in config.two_person}
    if config.all_faces:  # only then: records written before the option stay complete
        key["all_faces"] = True
    return key


def is_complete(out: Path, video: Path, config: FacesConfig) -> bool:
    """Whether ``out`` holds a record of ``video`` made with the same key (skip the video)."""
    record = out / QUALITY / f"{video.stem}.json"
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("key") == video_key(video, config)
    except (OSError, ValueError):
        return False
