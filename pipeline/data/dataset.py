"""The Aff-Wild2 reader: a dataset folder in the ABAW EXPR and AU layout -> clips and a report.

What it looks for under the root (``data_manifests/README.md`` is the user-facing version of
every rule below, and each repair or rejection ``kind`` is listed there; the walk that finds the
folders is :mod:`pipeline.data.discover`):

- expression annotations: ``<any>/EXPR_Recognition_Challenge/`` (ABAW6+) or
  ``EXPR_Classification_Challenge/`` (ABAW3/5), also directly under the root, with ``Train_Set/``
  (split "train") and ``Validation_Set/`` ("val") holding one ``<clip>.txt`` per clip;
- AU annotations: ``<any>/AU_Detection_Challenge/`` with the same two folders. A clip with an AU
  file gets ``au_labels`` and ``au_split``; a clip with an AU file only (no expression file, not in
  the test list) is an AU-only clip, kept apart in ``DatasetReading.au_only``;
- VA annotations: ``<any>/VA_Estimation_Challenge/``, the same way (:mod:`pipeline.data.va_reading`);
  a clip with VA labels only joins the AU-only clips (the clips without expression labels);
- the test split: a text file of clip names (``--test-list``, or the one ``.txt`` file whose name
  has the word "test" in it, see :func:`read_test_list`);
- face crops: ``cropped_aligned/<clip>/00001.jpg`` or ``cropped_aligned_new_50_vids/<clip>/``;
- videos: ``<video>.mp4`` (or any of ``VIDEO_SUFFIXES``) anywhere inside ``videos/``, ``raw_videos/``, ``batch1/``
  or ``batch2/``; clip ``<video>_left`` / ``<video>_right`` uses ``<video>``'s file.

A root without annotation folders that holds the records of ``fer-pipeline faces`` is read by
:mod:`pipeline.data.raw` instead: its clips are unlabelled (the test split).

The video is the clock: a clip has as many frames as its video and the video's fps, and labels of
both tasks are repaired to that length. Then the leakage guard (:mod:`pipeline.data.leakage`)
marks validation clips of one task that are in the other task's training split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.data.clip_ids import name_problem
from pipeline.data.discover import (  # noqa: F401 (read_test_list: public API)
    ANNOTATION_DIRS,
    AU_ANNOTATION_DIRS,
    FRAME_DIRS,
    VA_ANNOTATION_DIRS,
    SEARCH_DEPTH,
    SPLIT_DIRS,
    VIDEO_DIRS,
    VIDEO_SUFFIXES,
    DatasetError,
    Layout,
    choose_test_list,
    find_frame_dirs,
    find_videos,
    frame_numbers,
    list_files,
    read_test_list,
    walk,
)
from pipeline.data.labels import (
    UNLABELED,
    AnnotationError,
    read_annotation,
    read_au_annotation,
)
from pipeline.data.leakage import DEFAULT_GUARD, guard_leakage
from pipeline.data.manifest import SPLITS, Clip, DatasetReading, Issue
from pipeline.data.media import MediaError, VideoInfo, probe_video
from pipeline.data.raw import face_records, read_faces_root
from pipeline.data.va_reading import attach_va
from pipeline.progress import ProgressEvent, ProgressFn, silent

SIDES = ("_left", "_right")


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


@dataclass(frozen=True)
class _Media:
    """What a clip's video and frame folder gave: everything of a Clip but its labels."""

    video_id: str
    video_path: Path
    info: VideoInfo
    frames_dir: Path | None
    faces: int


def _video_ids(clip_id: str) -> list[str]:
    """Names the clip's video may have: the clip's own, then (for a two-person video's side) the
    name without ``_left``/``_right``."""
    if clip_id.endswith(SIDES):
        return [clip_id, clip_id.rsplit("_", 1)[0]]
    return [clip_id]


def _annotation_entries(folders: list[Path]) -> list[_Entry]:
    return [
        _Entry(path.stem, split, path)
        for annotation_dir in folders
        for split_dir, split in SPLIT_DIRS.items()
        for path in list_files(annotation_dir / split_dir, (".txt",))
    ]


def _entries(layout: Layout, test_list: Path | None) -> list[_Entry]:
    entries = _annotation_entries(layout.annotation_dirs)
    if test_list is not None:
        entries += [_Entry(name, "test", test_list, n) for n, name in read_test_list(test_list)]
    return entries


class _Reader:
    """Turns entries into clips, keeping the report; one instance per :func:`read_dataset` call."""

    def __init__(self, layout: Layout) -> None:
        # Where a missing frame folder was expected, for the report.
        self.frame_root = layout.frame_roots[0] if layout.frame_roots else Path(FRAME_DIRS[0])
        self.videos = find_videos(layout.video_roots)
        self.frame_dirs = find_frame_dirs(layout.frame_roots)
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
        numbers = frame_numbers(folder)
        past_end = sum(1 for n in numbers if n > n_frames)
        if past_end:
            self.repair(entry, folder, "frames_past_end", f"{past_end} face crops numbered "
                        f"past the video's {n_frames} frames are ignored")
        return folder, len(numbers) - past_end

    def bad_id(self, entry: _Entry) -> bool:
        """Reject (and say so) an entry whose clip id could not name a store folder."""
        problem = name_problem(entry.clip_id)
        if problem is not None:
            self.reject(entry, entry.file, "bad_clip_id", f"clip id {entry.clip_id[:80]!r} {problem}")
        return problem is not None

    def clip(self, entry: _Entry) -> Clip | None:
        """The clip of one expression entry, or None after recording why it was rejected."""
        if self.bad_id(entry):
            return None
        labels = None
        if entry.split != "test":
            try:
                labels = read_annotation(entry.file)
            except AnnotationError as e:
                self.reject(entry, entry.file, "bad_annotation", e.reason)
                return None
        media = self.media(entry)
        if media is None:
            return None
        if labels is not None and len(labels) != media.info.n_frames:
            labels = self._fit(entry, labels, media.info.n_frames, "labels")
        return self.new_clip(entry.clip_id, entry.split, media, labels)

    def au_clip(self, entry: _Entry, clip: Clip | None) -> Clip | None:
        """``clip`` with the AU labels of an AU entry, or (``clip`` None) an AU-only clip; None
        after recording why the AU labels were rejected (``clip`` itself is then kept as it is)."""
        try:
            au_labels = read_au_annotation(entry.file)
        except AnnotationError as e:
            self.reject(entry, entry.file, "bad_au_annotation", e.reason)
            return None
        if clip is None:
            if self.bad_id(entry):
                return None
            media = self.media(entry)
            if media is None:
                return None
            clip = self.new_clip(entry.clip_id, entry.split, media, None)
        if len(au_labels) != clip.n_frames:
            au_labels = self._fit(entry, au_labels, clip.n_frames, "au_labels")
        return replace(clip, au_labels=au_labels, au_split=entry.split)

    def new_clip(self, clip_id: str, split: str, media: _Media, labels: np.ndarray | None) -> Clip:
        self.faces[clip_id] = media.faces
        return Clip(
            clip_id=clip_id,
            split=split,
            video_id=media.video_id,
            n_frames=media.info.n_frames,
            fps=media.info.fps,
            frames_dir=None if media.frames_dir is None else str(media.frames_dir),
            video_path=str(media.video_path),
            audio_path=str(media.video_path) if media.info.has_audio else None,
            labels=labels,
        )

    def media(self, entry: _Entry) -> _Media | None:
        """The clip's video, its probe and its face crops, or None after recording a rejection."""
        found = self._video(entry)
        if found is None:
            names = " or ".join(_video_ids(entry.clip_id))
            self.reject(entry, entry.file, "no_video",
                        f"{entry.at()}no video {names} ({'/'.join(VIDEO_SUFFIXES)}) in {'/, '.join(VIDEO_DIRS)}/: "
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
        return _Media(video_id, video_path, info, frames_dir, faces)

    def _fit(self, entry: _Entry, labels: np.ndarray, n_frames: int, kind: str) -> np.ndarray:
        """Labels (``kind`` "labels", or "au_labels": rows of 12) cut or padded to the video's
        length (Aff-Wild2's files are often a few off)."""
        n = len(labels)
        if n > n_frames:
            self.repair(entry, entry.file, f"{kind}_truncated",
                        f"{n} labels for {n_frames} video frames: the last {n - n_frames} dropped")
            return labels[:n_frames]
        self.repair(entry, entry.file, f"{kind}_padded",
                    f"{n} labels for {n_frames} video frames: {n_frames - n} frames added as -1")
        pad = np.full((n_frames - n, *labels.shape[1:]), UNLABELED, dtype=np.int8)
        return np.concatenate([labels, pad])


def _read_au(reader: _Reader, entries: list[_Entry], clips: dict[str, Clip | None],
             progress: ProgressFn) -> tuple[dict[str, Clip], list[Clip]]:
    """Attach AU labels: clip id -> the expression clips that gained them, and the AU-only clips.

    ``clips`` maps every clip id the expression entries named to its clip, None if rejected.
    """
    gained: dict[str, Clip] = {}
    au_only: list[Clip] = []
    first: dict[str, tuple[_Entry, bool]] = {}
    for entry in entries:
        if entry.clip_id in first:
            seen, kept = first[entry.clip_id]
            outcome = "whose AU labels are kept" if kept else "which is rejected too"
            reader.reject(entry, entry.file, "au_duplicate",
                          f"clip {entry.clip_id}'s AU labels are also in {seen.where()} "
                          f"({seen.split}), {outcome}")
        elif entry.clip_id in clips and clips[entry.clip_id] is None:
            first[entry.clip_id] = (entry, False)
            reader.reject(entry, entry.file, "au_clip_rejected",
                          f"the clip's expression entry was rejected (its line above): its AU "
                          f"labels are left out too")
        else:
            clip = reader.au_clip(entry, clips.get(entry.clip_id))
            first[entry.clip_id] = (entry, clip is not None)
            if clip is not None and entry.clip_id in clips:
                gained[entry.clip_id] = clip
            elif clip is not None:
                au_only.append(clip)
        progress(ProgressEvent("clips", advance=1))
    return gained, sorted(au_only, key=lambda c: c.clip_id)


def read_dataset(
    root: str | Path, test_list: str | Path | None = None, progress: ProgressFn = silent,
    leakage_guard: str = DEFAULT_GUARD,
) -> DatasetReading:
    """Read an Aff-Wild2-style dataset folder into clips per split, with a report.

    ``test_list`` names the test split's clip list; without it the root is searched for one.
    ``leakage_guard`` is the mode of :func:`pipeline.data.leakage.guard_leakage`.
    Raises :class:`DatasetError` only when nothing can be read (no root, no annotation folder,
    an unreadable or ambiguous test list); a bad clip is rejected and reported instead.
    """
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    layout = walk(root)
    labelled = layout.annotation_dirs or layout.au_annotation_dirs or layout.va_annotation_dirs
    if not labelled and face_records(root):
        return read_faces_root(root)  # raw videos through `faces`: unlabelled clips
    if not labelled:
        raise DatasetError(
            f"{root}: no annotation folder "
            f"({' or '.join(ANNOTATION_DIRS + AU_ANNOTATION_DIRS + VA_ANNOTATION_DIRS)} "
            f"with {' or '.join(SPLIT_DIRS)}/) within {SEARCH_DEPTH} levels, and no faces/*.json "
            "records of `fer-pipeline faces VIDEOS --out ROOT`"
        )
    if test_list is not None:
        test_list = Path(os.path.abspath(test_list))
        if not test_list.is_file():
            raise DatasetError(f"{test_list}: no such test list")
    else:
        test_list = choose_test_list(layout.test_lists)
    entries = _entries(layout, test_list)
    au_entries = _annotation_entries(layout.au_annotation_dirs)
    va_entries = _annotation_entries(layout.va_annotation_dirs)
    reader = _Reader(layout)
    read: dict[str, Clip | None] = {}  # clip id -> its clip, None if rejected
    first: dict[str, tuple[_Entry, bool]] = {}  # clip id -> its first entry, and if it was kept
    progress(ProgressEvent("clips", total=len(entries) + len(au_entries) + len(va_entries)))
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
            read[entry.clip_id] = reader.clip(entry)
            first[entry.clip_id] = (entry, read[entry.clip_id] is not None)
        progress(ProgressEvent("clips", advance=1))
    gained, au_only = _read_au(reader, au_entries, read, progress)
    read.update(gained)
    au_only = attach_va(reader, va_entries, read, au_only, progress)
    guarded, leakage = guard_leakage([c for c in read.values() if c is not None] + au_only,
                                     leakage_guard)
    clips: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    for clip in guarded[: len(guarded) - len(au_only)]:
        clips[clip.split].append(clip)
    for split_clips in clips.values():
        split_clips.sort(key=lambda c: c.clip_id)
    return DatasetReading(
        root=str(root),
        test_list=None if test_list is None else str(test_list),
        clips=clips,
        faces=reader.faces,
        repairs=reader.repairs,
        rejections=reader.rejections,
        au_only=guarded[len(guarded) - len(au_only):],
        leakage=leakage.to_json(),
    )
