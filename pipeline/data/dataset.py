"""The Aff-Wild2 reader: a dataset folder in the ABAW EXPR layout -> clips, repairs and rejections.

What it looks for under the root (``data_manifests/README.md`` is the user-facing version of
every rule below, and each repair or rejection ``kind`` is listed there):

- annotations: ``<any>/EXPR_Recognition_Challenge/`` (ABAW6+) or ``EXPR_Classification_Challenge/``
  (ABAW3/5), also directly under the root, with ``Train_Set/`` (split "train") and
  ``Validation_Set/`` ("val") holding one ``<clip>.txt`` per clip;
- the test split: a text file of clip names (``--test-list``, or the one ``.txt`` file whose name
  has the word "test" in it, see :func:`read_test_list`);
- face crops: ``cropped_aligned/<clip>/00001.jpg`` or ``cropped_aligned_new_50_vids/<clip>/``;
- videos: ``<video>.mp4`` or ``.avi`` anywhere inside ``videos/``, ``raw_videos/``, ``batch1/``
  or ``batch2/``; clip ``<video>_left`` / ``<video>_right`` uses ``<video>``'s file.

The video is the clock: a clip has as many frames as its video and the video's fps, and labels are
repaired to that length. Folders are found by a walk that never enters a frame folder (a real root
holds millions of crops); a frame folder is listed, never its images opened.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.frames import frame_numbers
from pipeline.data.labels import UNLABELED, AnnotationError, read_annotation
from pipeline.data.manifest import SPLITS, Clip, DatasetReading, Issue
from pipeline.data.media import MediaError, VideoInfo, probe_video
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent

# Newer challenge first: where both folders hold the same clip, the first one found is kept.
ANNOTATION_DIRS = ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge")
SPLIT_DIRS = {"Train_Set": "train", "Validation_Set": "val"}
FRAME_DIRS = ("cropped_aligned", "cropped_aligned_new_50_vids")
VIDEO_DIRS = ("videos", "raw_videos", "batch1", "batch2")
VIDEO_SUFFIXES = (".mp4", ".avi")
SIDES = ("_left", "_right")
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
class _Layout:
    """The folders and files a walk of the root found."""

    annotation_dirs: list[Path] = field(default_factory=list)
    frame_roots: list[Path] = field(default_factory=list)
    video_roots: list[Path] = field(default_factory=list)
    test_lists: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    """A clip as named by the dataset, before any check: an annotation file or a test list line."""

    clip_id: str
    split: str
    file: Path  # the annotation file, or the test list
    line: int | None = None  # the test list line, None for an annotation file

    def where(self) -> str:
        """The file (and line, in a test list): names the other side of a duplicate."""
        return str(self.file) if self.line is None else f"{self.file} line {self.line}"

    def at(self) -> str:
        """A reason's prefix pointing at the test list line, empty for an annotation file."""
        return "" if self.line is None else f"line {self.line}: "


def _video_ids(clip_id: str) -> list[str]:
    """Names the clip's video may have: the clip's own, then (for a two-person video's side) the
    name without ``_left``/``_right``."""
    if clip_id.endswith(SIDES):
        return [clip_id, clip_id.rsplit("_", 1)[0]]
    return [clip_id]


def _subdirs(folder: Path) -> list[Path]:
    """Visible subfolders, sorted so that every rule that keeps "the first" is deterministic."""
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
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


def _walk(root: Path) -> _Layout:
    """Find the annotation, frame and video folders and the test lists, SEARCH_DEPTH levels deep,
    in a deterministic order (the order decides which of two copies is used)."""
    layout = _Layout()
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        name = folder.name
        if name in FRAME_DIRS:
            layout.frame_roots.append(folder)
            continue  # never enter: it holds a folder per clip with thousands of crops each
        if name in VIDEO_DIRS:
            layout.video_roots.append(folder)
            continue  # searched by _find_videos
        if name in SPLIT_DIRS:
            continue  # read through its annotation folder
        if name in ANNOTATION_DIRS and any((folder / s).is_dir() for s in SPLIT_DIRS):
            layout.annotation_dirs.append(folder)
        layout.test_lists.extend(
            p for p in _files(folder, (".txt",)) if _TEST_WORD.search(p.name.lower())
        )
        if depth < SEARCH_DEPTH:
            pending.extend((sub, depth + 1) for sub in _subdirs(folder))
    layout.annotation_dirs.sort(key=lambda p: (ANNOTATION_DIRS.index(p.name), str(p)))
    layout.frame_roots.sort(key=lambda p: (FRAME_DIRS.index(p.name), str(p)))
    layout.video_roots.sort(key=lambda p: (VIDEO_DIRS.index(p.name), str(p)))
    layout.test_lists.sort()
    return layout


def _find_videos(video_roots: list[Path]) -> dict[str, list[Path]]:
    """Video stem -> its files, in the order searched (the first one is used): folders in the
    order of VIDEO_DIRS, a folder's files before its subfolders', .mp4 before .avi (avi headers
    are the less reliable about the frame count)."""
    videos: dict[str, list[Path]] = {}
    for video_root in video_roots:
        pending = [(video_root, 0)]
        while pending:
            folder, depth = pending.pop(0)
            files = _files(folder, VIDEO_SUFFIXES)
            files.sort(key=lambda p: (p.stem, VIDEO_SUFFIXES.index(p.suffix.lower())))
            for path in files:
                videos.setdefault(path.stem, []).append(path)
            if depth < SEARCH_DEPTH:  # e.g. videos/batch1/, videos/new_vids/
                pending.extend((sub, depth + 1) for sub in _subdirs(folder))
    return videos


def _find_frame_dirs(frame_roots: list[Path]) -> dict[str, list[Path]]:
    """Clip id -> its face-crop folders; ``cropped_aligned`` before ``..._new_50_vids``."""
    frame_dirs: dict[str, list[Path]] = {}
    pending = list(frame_roots)
    while pending:
        frame_root = pending.pop(0)
        for folder in _subdirs(frame_root):
            if folder.name in FRAME_DIRS:  # cropped_aligned/cropped_aligned/, as unzipped
                pending.append(folder)
            else:
                frame_dirs.setdefault(folder.name, []).append(folder)
    return frame_dirs


def _frame_numbers(folder: Path) -> list[int]:
    """1-based numbers of the ``NNNNN.jpg`` crops in a frame folder (other files are ignored)."""
    try:
        with os.scandir(folder) as it:
            return frame_numbers([e.name for e in it])
    except OSError:
        return []


def read_test_list(path: str | Path) -> list[tuple[int, str]]:
    """Clip names of a test list, with their line numbers.

    One name per line. Accepted: a UTF-8 BOM, CRLF, surrounding whitespace, blank lines, ``#``
    comment lines, a first line that is a header (it holds a comma or a space, or is one of
    ``name``, ``video``, ``clip``, ``file``, ``video_name``, ``clip_name``, ``video_id``,
    ``clip_id`` or their plurals), and names written as a file (``batch1/10-60-1280x720.mp4``:
    the folder and the .mp4/.avi/.txt suffix are dropped).
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


def _choose_test_list(candidates: list[Path]) -> Path | None:
    if len(candidates) > 1:  # e.g. the ABAW release's lists for the VA, EXPR and AU challenges
        candidates = [p for p in candidates if "expr" in p.name.lower()] or candidates
    if len(candidates) > 1:
        names = ", ".join(str(p) for p in candidates)
        raise DatasetError(f"several test lists found ({names}): choose one with --test-list")
    return candidates[0] if candidates else None


def _entries(layout: _Layout, test_list: Path | None) -> list[_Entry]:
    entries = [
        _Entry(path.stem, split, path)
        for annotation_dir in layout.annotation_dirs
        for split_dir, split in SPLIT_DIRS.items()
        for path in _files(annotation_dir / split_dir, (".txt",))
    ]
    if test_list is not None:
        entries += [_Entry(name, "test", test_list, n) for n, name in read_test_list(test_list)]
    return entries


class _Reader:
    """Turns entries into clips, keeping the report; one instance per :func:`read_dataset` call."""

    def __init__(self, layout: _Layout) -> None:
        # Where a missing frame folder was expected, for the report.
        self.frame_root = layout.frame_roots[0] if layout.frame_roots else Path(FRAME_DIRS[0])
        self.videos = _find_videos(layout.video_roots)
        self.frame_dirs = _find_frame_dirs(layout.frame_roots)
        self.probed: dict[Path, VideoInfo | MediaError] = {}  # _left and _right share one probe
        self.repairs: list[Issue] = []
        self.rejections: list[Issue] = []
        self.faces: dict[str, int] = {}

    def repair(self, entry: _Entry, file: Path | str, kind: str, reason: str) -> None:
        self.repairs.append(Issue(entry.clip_id, str(file), kind, reason))

    def reject(self, entry: _Entry, file: Path | str, kind: str, reason: str) -> None:
        self.rejections.append(Issue(entry.clip_id, str(file), kind, reason))

    def _video(self, entry: _Entry) -> tuple[str, Path] | None:
        """The clip's video id and file: its own name first, else its name without _left/_right."""
        for video_id in _video_ids(entry.clip_id):
            if video_id in self.videos:
                paths = self.videos[video_id]
                if len(paths) > 1:
                    others = ", ".join(str(p) for p in paths[1:])
                    self.repair(entry, paths[0], "video_duplicate",
                                f"video {video_id} also found as {others}; using this one")
                return video_id, paths[0]
        return None

    def _probe(self, path: Path) -> VideoInfo | MediaError:
        if path not in self.probed:
            try:
                self.probed[path] = probe_video(path)
            except MediaError as e:
                self.probed[path] = e
        return self.probed[path]

    def _frames(self, entry: _Entry, n_frames: int) -> tuple[Path | None, int]:
        """The clip's face-crop folder (None if there is none) and how many crops it has."""
        folders = self.frame_dirs.get(entry.clip_id, [])
        if not folders:
            return None, 0
        folder = folders[0]
        if len(folders) > 1:
            others = ", ".join(str(p) for p in folders[1:])
            self.repair(entry, folder, "frames_duplicate",
                        f"face crops also found in {others}; using this folder")
        numbers = _frame_numbers(folder)
        past_end = sum(1 for n in numbers if n > n_frames)
        if past_end:
            self.repair(entry, folder, "frames_past_end", f"{past_end} face crops numbered "
                        f"past the video's {n_frames} frames are ignored")
        return folder, len(numbers) - past_end

    def clip(self, entry: _Entry) -> Clip | None:
        """The clip of one entry, or None after recording why it was rejected."""
        labels = None
        if entry.split != "test":
            try:
                labels = read_annotation(entry.file)
            except AnnotationError as e:
                self.reject(entry, entry.file, "bad_annotation", e.reason)
                return None
        found = self._video(entry)
        if found is None:
            names = " or ".join(_video_ids(entry.clip_id))
            self.reject(entry, entry.file, "no_video",
                        f"{entry.at()}no video {names} (.mp4/.avi) in {'/, '.join(VIDEO_DIRS)}/: "
                        "the video gives the frame count, fps and audio")
            return None
        video_id, video_path = found
        info = self._probe(video_path)
        if isinstance(info, MediaError):
            reason = str(info).removeprefix(f"{video_path}: ")
            self.reject(entry, video_path, "unreadable_video", reason)
            return None
        if info.n_frames <= 0:
            self.reject(entry, video_path, "unreadable_video", "the video has no frames")
            return None
        frames_dir, faces = self._frames(entry, info.n_frames)
        if not faces:
            where = frames_dir or self.frame_root / entry.clip_id
            what = ("no face-crop folder" if frames_dir is None
                    else "no NNNNN.jpg face crops in the folder")
            if not info.has_audio:
                self.reject(entry, where, "no_media", f"{what}, and the video has no audio track")
                return None
            self.repair(entry, where, "no_faces",
                        f"{what}: kept for its audio, every frame counts as faceless")
        if not info.has_audio:
            self.repair(entry, video_path, "no_audio",
                        "the video has no audio track: kept for its face crops, audio_path is None")
        if labels is not None and len(labels) != info.n_frames:
            labels = self._fit(entry, labels, info.n_frames)
        self.faces[entry.clip_id] = faces
        return Clip(
            clip_id=entry.clip_id,
            split=entry.split,
            video_id=video_id,
            n_frames=info.n_frames,
            fps=info.fps,
            frames_dir=None if frames_dir is None else str(frames_dir),
            video_path=str(video_path),
            audio_path=str(video_path) if info.has_audio else None,
            labels=labels,
        )

    def _fit(self, entry: _Entry, labels: np.ndarray, n_frames: int) -> np.ndarray:
        """Labels cut or padded to the video's length (Aff-Wild2's files are often a few off)."""
        n = len(labels)
        if n > n_frames:
            self.repair(entry, entry.file, "labels_truncated",
                        f"{n} labels for {n_frames} video frames: the last {n - n_frames} dropped")
            return labels[:n_frames]
        self.repair(entry, entry.file, "labels_padded",
                    f"{n} labels for {n_frames} video frames: {n_frames - n} frames added as -1")
        return np.concatenate([labels, np.full(n_frames - n, UNLABELED, dtype=np.int8)])


def read_dataset(
    root: str | Path, test_list: str | Path | None = None, progress: ProgressFn = silent
) -> DatasetReading:
    """Read an Aff-Wild2-style dataset folder into clips per split, with a report.

    ``test_list`` names the test split's clip list; without it the root is searched for one.
    Raises :class:`DatasetError` only when nothing can be read (no root, no annotation folder,
    an unreadable or ambiguous test list); a bad clip is rejected and reported instead.
    """
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    layout = _walk(root)
    if not layout.annotation_dirs:
        raise DatasetError(
            f"{root}: no annotation folder ({' or '.join(ANNOTATION_DIRS)} with "
            f"{' or '.join(SPLIT_DIRS)}/) within {SEARCH_DEPTH} levels"
        )
    if test_list is not None:
        test_list = Path(os.path.abspath(test_list))
        if not test_list.is_file():
            raise DatasetError(f"{test_list}: no such test list")
    else:
        test_list = _choose_test_list(layout.test_lists)
    entries = _entries(layout, test_list)
    reader = _Reader(layout)
    clips: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    first: dict[str, tuple[_Entry, bool]] = {}  # clip id -> its first entry, and if it was kept
    progress(ProgressEvent("clips", total=len(entries)))
    for entry in entries:
        if entry.clip_id in first:
            seen, kept = first[entry.clip_id]
            if seen.file == entry.file:  # a test list naming a clip twice
                reader.repair(entry, entry.file, "duplicate_entry",
                              f"{entry.at()}listed again (first at line {seen.line}): kept once")
            else:
                outcome = "which is kept" if kept else "which is rejected too"
                reader.reject(entry, entry.file, "duplicate",
                              f"{entry.at()}clip {entry.clip_id} is also in {seen.where()} "
                              f"({seen.split}), {outcome}")
        else:
            clip = reader.clip(entry)
            first[entry.clip_id] = (entry, clip is not None)
            if clip is not None:
                clips[entry.split].append(clip)
        progress(ProgressEvent("clips", advance=1))
    for split_clips in clips.values():
        split_clips.sort(key=lambda c: c.clip_id)
    return DatasetReading(
        root=str(root),
        test_list=None if test_list is None else str(test_list),
        clips=clips,
        faces=reader.faces,
        repairs=reader.repairs,
        rejections=reader.rejections,
    )
