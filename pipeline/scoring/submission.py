"""ABAW submission files of the expression and AU tracks: writers and a checker that names every
problem.

Expression format (one file for the whole test set)::

    image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other
    <clip_id>/00001.jpg,<label>
    <clip_id>/00002.jpg,<label>
    ...

one row per frame of every test clip, frames with no face included (the challenge scores every
frame of the video), frames of a clip in increasing order, a label an integer class index 0..7.

AU format: the same rows, with the header ``image_location,AU1,AU2,...,AU26`` and 12 values 0/1
per row (:func:`write_au_submission`, :func:`check_au_submission`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pipeline import io as atomic
from pipeline.data.frames import FRAME_NAME, frame_name
from pipeline.data.labels import AU_HEADER, AU_NAMES, HEADER, NUM_CLASSES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError

SUBMISSION_HEADER = f"image_location,{HEADER}"
AU_SUBMISSION_HEADER = f"image_location,{AU_HEADER}"
_LOCATION = re.compile(r"^(?P<clip>[^/]+)/(?P<name>.*)$")  # the name: a FRAME_NAME
_INTEGER = re.compile(r"^[+-]?\d+$")


def image_location(clip_id: str, index: int) -> str:
    """The row key of frame ``index`` (0-based) of a clip: ``<clip_id>/00001.jpg`` for index 0."""
    return f"{clip_id}/{frame_name(index)}"


@dataclass(frozen=True)
class _Format:
    """What a track's rows hold after the image location."""

    header: str
    names: tuple[str, ...]  # one per value column; the expression file has one ("label")
    high: int  # values are integers 0..high

    @property
    def columns(self) -> int:
        return 1 + len(self.names)

    def bad_value(self, name: str, value: int) -> str:
        if len(self.names) == 1:
            return f"label {value} is not a class index 0..{self.high}"
        return f"{name} value {value} is not 0 or 1"


_EXPR = _Format(SUBMISSION_HEADER, ("label",), NUM_CLASSES - 1)
_AU = _Format(AU_SUBMISSION_HEADER, AU_NAMES, 1)


def write_submission(path: str | Path, rows: Iterable[tuple[Clip, np.ndarray]]) -> int:
    """Write every frame of each (clip, labels ``[n_frames]``) pair, streamed, atomically;
    returns the rows written."""
    return _write(path, rows, _EXPR)


def write_au_submission(path: str | Path, rows: Iterable[tuple[Clip, np.ndarray]]) -> int:
    """Write every frame of each (clip, AU decisions 0/1 ``[n_frames, 12]``) pair, streamed,
    atomically; returns the rows written."""
    return _write(path, rows, _AU)


def _write(path: str | Path, rows: Iterable[tuple[Clip, np.ndarray]], form: _Format) -> int:
    path = Path(path)
    one = len(form.names) == 1  # the expression file: one label per row
    width = () if one else (len(form.names),)
    count = 0
    with atomic.atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        f.write(form.header + "\n")
        for clip, labels in rows:
            values = np.asarray(labels)
            if not np.issubdtype(values.dtype, np.integer):
                raise PipelineError(f"{path}: clip {clip.clip_id} has {values.dtype} labels,"
                                    " want integers")
            if values.shape != (clip.n_frames, *width):
                raise PipelineError(f"{path}: clip {clip.clip_id} has {values.shape} labels"
                                    f" for {clip.n_frames} frames")
            if values.size and (values.min() < 0 or values.max() > form.high):
                raise PipelineError(f"{path}: clip {clip.clip_id} has labels outside"
                                    f" 0..{form.high}")
            cells = (values.tolist() if one
                     else [",".join(row) for row in values.astype(str).tolist()])
            f.writelines(f"{image_location(clip.clip_id, i)},{v}\n" for i, v in enumerate(cells))
            count += clip.n_frames
    return count


def check_submission(path: str | Path, clips: Sequence[Clip]) -> list[str]:
    """Every problem of an expression submission file for these clips, one line each, in file
    order.

    Row problems name their line: bad header, wrong column count, malformed image location,
    unknown clip (once per clip, with its row count), frame beyond the clip, duplicate row, frame
    out of order, non-integer label, label out of range. Clip problems follow: missing frames
    (count and first missing), clips with no rows.
    """
    return _check(path, clips, _EXPR)


def check_au_submission(path: str | Path, clips: Sequence[Clip]) -> list[str]:
    """Every problem of an AU submission file for these clips (the rules of
    :func:`check_submission`, with 12 values 0/1 per row)."""
    return _check(path, clips, _AU)


def _check(path: str | Path, clips: Sequence[Clip], form: _Format) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such submission file") from None
    except UnicodeDecodeError as e:
        return [f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"]
    lines = text.splitlines()
    problems: list[tuple[float, str]] = []
    if not lines:
        return [f"{path}: empty file (want the header {form.header})"]
    if lines[0] != form.header:
        problems.append((1, f"line 1: header {lines[0][:120]!r}, want {form.header!r}"))

    by_id = {clip.clip_id: clip for clip in clips}
    first_line = {clip.clip_id: np.zeros(clip.n_frames, dtype=np.int64) for clip in clips}
    last_frame = {clip.clip_id: 0 for clip in clips}
    unknown: dict[str, list[int]] = {}  # clip -> [first line, row count]
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            problems.append((number, f"line {number}: empty line"))
            continue
        fields = line.split(",")
        if len(fields) != form.columns:
            what = "label" if len(form.names) == 1 else ",".join(form.names)
            problems.append((number, f"line {number}: {len(fields)} columns, want"
                                     f" {form.columns} (image_location,{what})"))
            continue
        location = fields[0].strip()
        match = _LOCATION.match(location)
        frame_match = FRAME_NAME.fullmatch(match.group("name")) if match else None
        if frame_match is None:
            problems.append((number, f"line {number}: image location {location[:120]!r} is not"
                                     " <clip_id>/<5-digit frame>.jpg"))
        else:
            clip_id, frame = match.group("clip"), int(frame_match.group(1))
            clip = by_id.get(clip_id)
            if clip is None:
                unknown.setdefault(clip_id, [number, 0])[1] += 1
            elif not 1 <= frame <= clip.n_frames:
                problems.append((number, f"line {number}: {location}: frame {frame} is outside"
                                         f" clip {clip_id}'s frames 1..{clip.n_frames}"))
            elif first_line[clip_id][frame - 1]:
                problems.append((number, f"line {number}: duplicate row for {location} (first on"
                                         f" line {first_line[clip_id][frame - 1]})"))
            else:
                first_line[clip_id][frame - 1] = number
                if frame < last_frame[clip_id]:
                    problems.append((number, f"line {number}: {location} comes after frame"
                                             f" {last_frame[clip_id]:05d} of its clip (frames of a"
                                             " clip must be in increasing order)"))
                last_frame[clip_id] = max(last_frame[clip_id], frame)
        for name, value in zip(form.names, fields[1:]):
            value = value.strip()
            if not _INTEGER.match(value):
                problems.append((number, f"line {number}: {name} {value[:40]!r} is not an"
                                         " integer"))
                break
            if not 0 <= int(value) <= form.high:
                problems.append((number, f"line {number}: {form.bad_value(name, int(value))}"))
                break
    for clip_id, (number, count) in unknown.items():
        problems.append((number, f"line {number}: unknown clip {clip_id!r} ({count} row(s);"
                                 " not a clip of the given manifest split)"))

    end = float("inf")  # clip-level problems come after every line problem
    for clip in clips:
        missing = np.flatnonzero(first_line[clip.clip_id] == 0)
        if len(missing) == clip.n_frames and clip.n_frames:
            problems.append((end, f"clip {clip.clip_id}: no rows ({clip.n_frames} frames)"))
        elif len(missing):
            first = image_location(clip.clip_id, missing[0])
            problems.append((end, f"clip {clip.clip_id}: {len(missing)} of {clip.n_frames}"
                                  f" frames missing (first {first})"))
    problems.sort(key=lambda item: item[0])  # stable: same-line problems keep their order
    return [message for _, message in problems]
