"""VA labels for the dataset reader: ``VA_Estimation_Challenge/{Train_Set,Validation_Set}/<clip>.txt``
files attached to the clips the EXPR and AU folders gave, or read as clips of their own.

The rules are the AU ones (``data_manifests/README.md``): the video is the clock, so VA rows are cut
or padded (with -5, invalid) to the video's frame count, with a repair naming the file; a bad file
is one rejection naming the file and the reason, and the clip keeps its other labels; a clip whose
expression entry was rejected loses its VA labels too; a second VA file for one clip is rejected.
A clip with VA labels and neither expression nor AU labels is a clip of its own, kept with the
AU-only clips (``au_only.jsonl``: the clips without expression labels), its ``split`` its VA
folder's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.data.labels import VA_INVALID, AnnotationError, read_va_annotation
from pipeline.data.manifest import Clip
from pipeline.progress import ProgressEvent, ProgressFn


def fit_va(reader: Any, entry: Any, values: np.ndarray, n_frames: int) -> np.ndarray:
    """VA rows cut or padded (-5) to the video's length, with a repair saying so."""
    n = len(values)
    if n == n_frames:
        return values
    if n > n_frames:
        reader.repair(entry, entry.file, "va_labels_truncated",
                      f"{n} VA rows for {n_frames} video frames: the last {n - n_frames} dropped")
        return values[:n_frames]
    reader.repair(entry, entry.file, "va_labels_padded",
                  f"{n} VA rows for {n_frames} video frames: {n_frames - n} frames added as -5")
    pad = np.full((n_frames - n, 2), VA_INVALID, dtype=np.float32)
    return np.concatenate([values, pad])


def attach_va(reader: Any, entries: list, clips: dict[str, Clip | None], others: list[Clip],
              progress: ProgressFn) -> list[Clip]:
    """Attach VA labels in place to ``clips`` (clip id -> expression clip, None if rejected) and
    to ``others`` (the AU-only clips); returns ``others`` with the clips that gained VA labels
    replaced and the VA-only clips added, sorted by id. ``reader`` is the dataset reader
    (``repair``, ``reject``, ``bad_id``, ``media``, ``new_clip``)."""
    other = {c.clip_id: c for c in others}
    first: dict[str, Any] = {}
    for entry in entries:
        progress(ProgressEvent("clips", advance=1))
        if entry.clip_id in first:
            reader.reject(entry, entry.file, "va_duplicate",
                          f"clip {entry.clip_id}'s VA labels are also in {first[entry.clip_id].file}"
                          f" ({first[entry.clip_id].split})")
            continue
        first[entry.clip_id] = entry
        if entry.clip_id in clips and clips[entry.clip_id] is None:
            reader.reject(entry, entry.file, "va_clip_rejected",
                          "the clip's expression entry was rejected (its line above): its VA "
                          "labels are left out too")
            continue
        try:
            values = read_va_annotation(entry.file)
        except AnnotationError as e:
            reader.reject(entry, entry.file, "bad_va_annotation", e.reason)
            continue
        clip = clips.get(entry.clip_id) or other.get(entry.clip_id)
        if clip is None:
            if reader.bad_id(entry):
                continue
            media = reader.media(entry)
            if media is None:
                continue
            clip = reader.new_clip(entry.clip_id, entry.split, media, None)
        clip = replace(clip, va_labels=fit_va(reader, entry, values, clip.n_frames),
                       va_split=entry.split)
        if entry.clip_id in clips:
            clips[entry.clip_id] = clip
        else:
            other[entry.clip_id] = clip
    return sorted(other.values(), key=lambda c: c.clip_id)
