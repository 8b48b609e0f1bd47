"""The schema of one manifest record, checked before a :class:`~pipeline.data.manifest.Clip` is
built from it: every field's type and range, so that a damaged or hand-edited manifest line gives
one error naming the field (the reader adds the file and line) instead of a raw numpy or
``MemoryError`` later, or a clip with a text ``fps`` accepted silently.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.data.clip_ids import check_name
from pipeline.data.labels import NUM_AUS, NUM_CLASSES, UNLABELED

MAX_FRAMES = 10_000_000  # frames of one clip: 46 hours at 60 fps; beyond it a record is damaged
TEXT = ("split", "video_id")
PATHS = ("frames_dir", "video_path", "audio_path")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _runs(field: str, runs: Any, n_frames: int, low: int, high: int) -> None:
    """``runs`` is ``[[value, count], ...]`` with values in ``low..high`` and counts summing to
    ``n_frames``."""
    if not isinstance(runs, list):
        raise ValueError(f"{field} is not a list of [value, count] runs")
    total = 0
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and all(map(_is_int, run))):
            raise ValueError(f"{field}: run {str(run)[:40]} is not [value, count]")
        value, count = run
        if not low <= value <= high or count < 0:
            raise ValueError(f"{field}: run {run} has a value outside {low}..{high} or a "
                             "negative count")
        total += count
    if total != n_frames:
        raise ValueError(f"{field}: runs cover {total} frames, the clip has {n_frames}")


def _va_runs(va: Any, n_frames: int) -> None:
    """``va`` is two run lists (valence, arousal) of values in [-1, 1] or -5."""
    if not (isinstance(va, list) and len(va) == 2):
        raise ValueError("va_labels is not two run lists (valence, arousal)")
    for name, runs in zip(("valence", "arousal"), va):
        if not isinstance(runs, list):
            raise ValueError(f"va_labels {name} is not a list of [value, count] runs")
        total = 0
        for run in runs:
            if not (isinstance(run, list) and len(run) == 2 and _is_int(run[1])
                    and (_is_int(run[0]) or isinstance(run[0], float))):
                raise ValueError(f"va_labels {name}: run {str(run)[:40]} is not [value, count]")
            if not (run[0] == -5 or -1 <= run[0] <= 1) or run[1] < 0:
                raise ValueError(f"va_labels {name}: run {run} has a value outside [-1, 1] "
                                 "(and not -5) or a negative count")
            total += run[1]
        if total != n_frames:
            raise ValueError(f"va_labels {name}: runs cover {total} frames, the clip has "
                             f"{n_frames}")


def check_record(record: Any) -> None:
    """Raise ValueError naming the first field of ``record`` that no clip could have."""
    if not isinstance(record, dict):
        raise ValueError(f"a {type(record).__name__}, not a JSON object")
    check_name(record.get("clip_id"))
    for field in TEXT:
        if not isinstance(record.get(field), str):
            raise ValueError(f"{field} is not text")
    for field in PATHS:
        if record.get(field) is not None and not isinstance(record[field], str):
            raise ValueError(f"{field} is neither text nor null")
    n_frames, fps = record.get("n_frames"), record.get("fps")
    if not _is_int(n_frames) or not 0 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"n_frames {str(n_frames)[:40]} is not a whole number in 0..{MAX_FRAMES}")
    if not (_is_int(fps) or isinstance(fps, float)) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps {str(fps)[:40]} is not a positive number")
    if record.get("labels") is not None:
        _runs("labels", record["labels"], n_frames, UNLABELED, NUM_CLASSES - 1)
    if record.get("au_labels") is not None:
        _runs("au_labels", record["au_labels"], n_frames, UNLABELED, 2 ** NUM_AUS - 1)
    if record.get("va_labels") is not None:
        _va_runs(record["va_labels"], n_frames)
    if not isinstance(record.get("exclude_from", []), list):
        raise ValueError("exclude_from is not a list")
