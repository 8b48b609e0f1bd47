"""The frame axis, defined once: frame names, the face rule, concatenated clips, centred windows.

* **Frame names.** Frame ``i`` (0-based) of a clip is the face crop ``{i+1:05d}.jpg``
  (:func:`frame_name`); :data:`FRAME_NAME` is the one pattern that recognises such a name.
* **The face rule.** A frame has a face iff its crop is in the clip's frame folder
  (:func:`face_mask`, one directory listing per clip). Stage one stores this mask (``valid``),
  stage two writes it beside its predictions, stage three reads it from there.
* **The nearest-face rule.** A frame without a face takes the output of the nearest frame of the
  same clip that has one, the earlier on a tie (:func:`nearest_face`); a clip without any face
  frame keeps its own outputs.
* **Clips concatenated.** A split's frames are its clips one after the other; clip ``c`` is frames
  ``offsets[c]:offsets[c + 1]`` (:func:`clip_offsets`).
* **Centred windows.** The ``L``-frame window of frame ``t`` covers ``t - L//2 .. t - L//2 + L - 1``,
  clipped to its clip (:func:`window_bounds`).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

FRAME_NAME = re.compile(r"([0-9]{5})\.jpg")  # match with fullmatch; group 1: the 1-based number


def frame_name(index: int) -> str:
    """The file name of frame ``index`` (0-based): ``00001.jpg`` for 0."""
    return f"{index + 1:05d}.jpg"


def frame_numbers(names: Sequence[str]) -> list[int]:
    """1-based numbers of the names that are frame names (other names are ignored)."""
    return [int(m.group(1)) for name in names if (m := FRAME_NAME.fullmatch(name))]


def face_mask(frames_dir: str | os.PathLike | None, n_frames: int) -> np.ndarray:
    """bool [n_frames]: frame i has a face iff ``frame_name(i)`` is in ``frames_dir``.

    No folder (None, or missing) gives no face frame at all.
    """
    mask = np.zeros(n_frames, dtype=bool)
    if frames_dir is None or not os.path.isdir(frames_dir):
        return mask
    with os.scandir(frames_dir) as entries:
        numbers = np.array(frame_numbers([e.name for e in entries]), dtype=np.int64) - 1
    mask[numbers[(numbers >= 0) & (numbers < n_frames)]] = True
    return mask


def clip_offsets(lengths: Sequence[int]) -> np.ndarray:
    """int64 [n_clips + 1]: where each clip starts in the concatenation, then the total."""
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)


def clips_frames(offsets: np.ndarray, clip_indices: Sequence[int]) -> np.ndarray:
    """int64: the concatenation's frame indices of the clips ``clip_indices``, in that order."""
    if len(clip_indices) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in clip_indices])


def clip_bounds(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First frame and one-past-last frame of each frame's clip (both [N])."""
    lengths = np.diff(offsets)
    return np.repeat(offsets[:-1], lengths), np.repeat(offsets[1:], lengths)


def window_bounds(n_frames: int, length: int, offsets: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last frame of the ``length``-frame window centred on each frame.

    Clipped to the frame's clip: to ``0..n_frames`` for one clip, or, with ``offsets``, to the
    clip's own range in a concatenation of clips.
    """
    if length < 1:
        raise ValueError(f"window length {length}: need at least 1 frame")
    t = np.arange(n_frames)
    if offsets is None:
        start, end = np.zeros(n_frames, np.int64), np.full(n_frames, n_frames, np.int64)
    else:
        start, end = clip_bounds(offsets)
    return np.maximum(t - length // 2, start), np.minimum(t - length // 2 + length, end)


def nearest_face(face: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """int64 [N]: the frame whose output each frame takes under the nearest-face rule.

    Face frames map to themselves; so does every frame of a clip without a face frame. With
    ``offsets``, ``face`` covers concatenated clips and no frame looks outside its own clip.
    """
    face = np.asarray(face, dtype=bool)
    n = face.size
    if offsets is None:
        offsets = np.array([0, n], dtype=np.int64)
    start, end = clip_bounds(offsets)
    index = np.arange(n)
    previous = np.maximum.accumulate(np.where(face, index, -1)) if n else index
    following = np.minimum.accumulate(np.where(face, index, n)[::-1])[::-1] if n else index
    has_previous = previous >= start
    has_following = following < end
    use_following = has_following & (~has_previous | (following - index < index - previous))
    return np.where(use_following, following, np.where(has_previous, previous, index))
