"""Where things are in an Aff-Wild2-style dataset root: the walk that finds the annotation, frame
and video folders and the test lists, and the listings of those folders.

The walk never enters a frame folder (a real root holds millions of crops); a frame folder is
listed, never its images opened. Every listing is sorted, so every rule that keeps "the first"
of two copies is deterministic. :mod:`pipeline.data.dataset` turns what is found into clips.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data import frames
from pipeline.errors import PipelineError

# Newer challenge first: where both folders hold the same clip, the first one found is kept.
ANNOTATION_DIRS = ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge")
AU_ANNOTATION_DIRS = ("AU_Detection_Challenge",)  # the ABAW AU track's annotation folder
VA_ANNOTATION_DIRS = ("VA_Estimation_Challenge",)  # the ABAW VA track's annotation folder
SPLIT_DIRS = {"Train_Set": "train", "Validation_Set": "val"}
FRAME_DIRS = ("cropped_aligned", "cropped_aligned_new_50_vids")
VIDEO_DIRS = ("videos", "raw_videos", "batch1", "batch2")
# Every video suffix the project reads (faces, manifest, test lists): FFmpeg (PyAV) decodes them
# all. The order is the preference between two files of one name (mp4's frame count is the most
# reliable, avi's headers the least of the first two).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
SEARCH_DEPTH = 4  # folder levels below the root searched for the folders above
_TEST_WORD = re.compile(r"(?<![a-z])test")  # "Test_Set.txt", "expr_test_set.txt"; not "latest"
# A test list's first line is a header if it is one of these words (or holds a comma or a space).
_TEST_HEADERS = {
    f"{word}{plural}"
    for word in ("name", "video", "clip", "file", "video_name", "clip_name", "video_id", "clip_id")
    for plural in ("", "s")
}


class DatasetError(PipelineError):
    """A dataset folder that cannot be read at all (as opposed to a clip that is rejected)."""


@dataclass
class Layout:
    """The folders and files a walk of the root found."""

    annotation_dirs: list[Path] = field(default_factory=list)  # EXPR annotation folders
    au_annotation_dirs: list[Path] = field(default_factory=list)  # AU annotation folders
    va_annotation_dirs: list[Path] = field(default_factory=list)  # VA annotation folders
    frame_roots: list[Path] = field(default_factory=list)
    video_roots: list[Path] = field(default_factory=list)
    test_lists: list[Path] = field(default_factory=list)


def subdirs(folder: Path) -> list[Path]:
    """Visible subfolders, sorted so that every rule that keeps "the first" is deterministic."""
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Visible files with one of ``suffixes`` (any case), sorted. Hidden files are skipped: macOS
    archives carry ``._<name>`` resource-fork twins of every file."""
    try:
        with os.scandir(folder) as it:
            return sorted(
                Path(e.path)
                for e in it
                if e.is_file() and not e.name.startswith(".")
                and e.name.lower().endswith(suffixes)
            )
    except OSError:
        return []


def walk(root: Path) -> Layout:
    """Find the annotation, frame and video folders and the test lists, SEARCH_DEPTH levels deep,
    in a deterministic order (the order decides which of two copies is used)."""
    layout = Layout()
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        name = folder.name
        if name in FRAME_DIRS:
            layout.frame_roots.append(folder)
            continue  # never enter: it holds a folder per clip with thousands of crops each
        if name in VIDEO_DIRS:
            layout.video_roots.append(folder)
            continue  # searched by find_videos
        if name in SPLIT_DIRS:
            continue  # read through its annotation folder
        if name in ANNOTATION_DIRS and any((folder / s).is_dir() for s in SPLIT_DIRS):
            layout.annotation_dirs.append(folder)
        if name in AU_ANNOTATION_DIRS and any((folder / s).is_dir() for s in SPLIT_DIRS):
            layout.au_annotation_dirs.append(folder)
        if name in VA_ANNOTATION_DIRS and any((folder / s).is_dir() for s in SPLIT_DIRS):
            layout.va_annotation_dirs.append(folder)
        layout.test_lists.extend(
            p for p in list_files(folder, (".txt",)) if _TEST_WORD.search(p.name.lower())
        )
        if depth < SEARCH_DEPTH:
            pending.extend((sub, depth + 1) for sub in subdirs(folder))
    layout.annotation_dirs.sort(key=lambda p: (ANNOTATION_DIRS.index(p.name), str(p)))
    layout.au_annotation_dirs.sort(key=str)
    layout.va_annotation_dirs.sort(key=str)
    layout.frame_roots.sort(key=lambda p: (FRAME_DIRS.index(p.name), str(p)))
    layout.video_roots.sort(key=lambda p: (VIDEO_DIRS.index(p.name), str(p)))
    layout.test_lists.sort()
    return layout


def find_videos(video_roots: list[Path]) -> dict[str, list[Path]]:
    """Video stem -> its files, in the order searched (the first one is used): folders in the
    order of VIDEO_DIRS, a folder's files before its subfolders', suffixes in the order of
    VIDEO_SUFFIXES (.mp4 before .avi: avi headers are the less reliable about the frame count)."""
    videos: dict[str, list[Path]] = {}
    for video_root in video_roots:
        pending = [(video_root, 0)]
        while pending:
            folder, depth = pending.pop(0)
            files = list_files(folder, VIDEO_SUFFIXES)
            files.sort(key=lambda p: (p.stem, VIDEO_SUFFIXES.index(p.suffix.lower())))
            for path in files:
                videos.setdefault(path.stem, []).append(path)
            if depth < SEARCH_DEPTH:  # e.g. videos/batch1/, videos/new_vids/
                pending.extend((sub, depth + 1) for sub in subdirs(folder))
    return videos


def find_frame_dirs(frame_roots: list[Path]) -> dict[str, list[Path]]:
    """Clip id -> its face-crop folders; ``cropped_aligned`` before ``..._new_50_vids``."""
    frame_dirs: dict[str, list[Path]] = {}
    pending = list(frame_roots)
    while pending:
        frame_root = pending.pop(0)
        for folder in subdirs(frame_root):
            if folder.name in FRAME_DIRS:  # cropped_aligned/cropped_aligned/, as unzipped
                pending.append(folder)
            else:
                frame_dirs.setdefault(folder.name, []).append(folder)
    return frame_dirs


def frame_numbers(folder: Path) -> list[int]:
    """1-based numbers of the ``NNNNN.jpg`` crops in a frame folder (other files are ignored)."""
    try:
        with os.scandir(folder) as it:
            return frames.frame_numbers([e.name for e in it])
    except OSError:
        return []


def read_test_list(path: str | Path) -> list[tuple[int, str]]:
    """Clip names of a test list, with their line numbers.

    One name per line. Accepted: a UTF-8 BOM, CRLF, surrounding whitespace, blank lines, ``#``
    comment lines, a first line that is a header (it holds a comma or a space, or is one of
    ``name``, ``video``, ``clip``, ``file``, ``video_name``, ``clip_name``, ``video_id``,
    ``clip_id`` or their plurals), and names written as a file (``batch1/10-60-1280x720.mp4``:
    the folder and a video suffix (VIDEO_SUFFIXES) or .txt are dropped).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: unreadable test list ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line}: test list is not UTF-8 text") from None
    names: list[tuple[int, str]] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not names and ("," in line or " " in line or line.lower() in _TEST_HEADERS):
            continue  # a header
        name = line.replace("\\", "/").rsplit("/", 1)[-1]
        if name.lower().endswith(VIDEO_SUFFIXES + (".txt",)):
            name = name.rsplit(".", 1)[0]
        names.append((line_no, name))
    return names


def choose_test_list(candidates: list[Path]) -> Path | None:
    if len(candidates) > 1:  # e.g. the ABAW release's lists for the VA, EXPR and AU challenges
        candidates = [p for p in candidates if "expr" in p.name.lower()] or candidates
    if len(candidates) > 1:
        names = ", ".join(str(p) for p in candidates)
        raise DatasetError(f"several test lists found ({names}): choose one with --test-list")
    return candidates[0] if candidates else None
