"""The frames of one split as stage three sees them: every member's probabilities, labels, faces.

A *member* (:class:`Member`) is one output of one run directory. :func:`load_split` reads each
member's predictions file for the clips of a split into one :class:`SplitData` (clips
concatenated in manifest order), checking every clip as it goes: a missing clip, a wrong shape or
a negative or non-finite probability is an error naming the file and the clip, and so is a clip
the manifest split does not have. :func:`clip_data` does the same for a single clip, for applying
a fitted pipeline clip by clip.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.predictions import Predictions, prediction_path


@dataclass(frozen=True)
class Member:
    """One output of one run directory."""

    run_dir: Path  # the run directory
    output: str  # which of its outputs ("main", "fusion", "image", "audio", ...)

    @property
    def name(self) -> str:
        return f"{self.run_dir.name}/{self.output}"

    def path(self, split: str) -> Path:
        return prediction_path(self.run_dir, split, self.output)


@dataclass(eq=False)
class SplitData:
    """The frames of one split, clips concatenated: every member's probabilities, labels, faces."""

    clip_ids: tuple[str, ...]  # clip ids in manifest order
    groups: tuple[str, ...]  # video id of each clip (clips of one video share a fold)
    offsets: np.ndarray  # int64 [n_clips + 1]: clip c is frames offsets[c]:offsets[c + 1]
    probs: np.ndarray  # float32 [n_members, n_frames, 8]
    labels: np.ndarray | None  # int8 [n_frames], -1 = not annotated; None when unlabeled (test)
    face: np.ndarray  # bool [n_frames]: the frame has a face image

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    def frame_index(self, clip_indices: Sequence[int]) -> np.ndarray:
        """Positions of the frames of the given clips, in that order."""
        if len(clip_indices) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.offsets[c], self.offsets[c + 1])
                               for c in clip_indices])

    def subset(self, clip_indices: Sequence[int]) -> "SplitData":
        """A copy holding only the given clips (whole clips, in the given order)."""
        index = self.frame_index(clip_indices)
        lengths = np.diff(self.offsets)[list(clip_indices)]
        return SplitData(
            clip_ids=tuple(self.clip_ids[c] for c in clip_indices),
            groups=tuple(self.groups[c] for c in clip_indices),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            probs=self.probs[:, index],
            labels=None if self.labels is None else self.labels[index],
            face=self.face[index],
        )


_FRAME_NAME = re.compile(r"^(\d{5})\.jpg$")


def face_mask(clip: Clip) -> np.ndarray:
    """bool [n_frames]: frame i has a face iff its image exists (one directory listing per clip)."""
    mask = np.zeros(clip.n_frames, dtype=bool)
    if clip.frames_dir is None or not os.path.isdir(clip.frames_dir):
        return mask
    with os.scandir(clip.frames_dir) as entries:
        for entry in entries:
            match = _FRAME_NAME.match(entry.name)
            if match:
                index = int(match.group(1)) - 1
                if 0 <= index < clip.n_frames:
                    mask[index] = True
    return mask


def clip_probs(predictions: Predictions, clip: Clip, split: str) -> np.ndarray:
    """One clip's [n_frames, 8] probabilities, checked: present, right shape, finite, >= 0."""
    path = predictions.path
    try:
        array = predictions[clip.clip_id]
    except KeyError:
        raise PipelineError(f"{path}: no predictions for {split} clip {clip.clip_id}") from None
    if array.shape != (clip.n_frames, NUM_CLASSES):
        raise PipelineError(f"{path}: clip {clip.clip_id} has predictions of shape"
                            f" {list(array.shape)}, want [{clip.n_frames}, {NUM_CLASSES}]")
    if not np.isfinite(array).all() or (array < 0).any():
        raise PipelineError(f"{path}: clip {clip.clip_id} has negative or non-finite probabilities")
    return array


def check_clip_set(predictions: Predictions, clips: Sequence[Clip], split: str) -> None:
    """Reject a predictions file holding clips the manifest split does not have."""
    extra = sorted(set(predictions) - {c.clip_id for c in clips})
    if extra:
        raise PipelineError(f"{predictions.path}: clip {extra[0]} is not in the {split} manifest"
                            f" ({len(extra)} such clips; wrong --manifests or split?)")


def open_predictions(paths: Sequence[Path], clips: Sequence[Clip], split: str
                     ) -> list[Predictions]:
    """Open each member's predictions file for a split, rejecting clips the manifest lacks."""
    readers = []
    for path in paths:
        if not Path(path).exists():
            raise PipelineError(f"{path}: no such predictions file")
        readers.append(Predictions(path))
        check_clip_set(readers[-1], clips, split)
    return readers


def load_split(paths: Sequence[Path], clips: Sequence[Clip], split: str,
               progress: ProgressFn = silent) -> SplitData:
    """Read each member's predictions file for the given clips of one split, checking every clip."""
    offsets = np.concatenate([[0], np.cumsum([c.n_frames for c in clips])]).astype(np.int64)
    probs = np.empty((len(paths), int(offsets[-1]), NUM_CLASSES), dtype=np.float32)
    progress(ProgressEvent(f"read {split}", total=len(paths) * len(clips)))
    for m, predictions in enumerate(open_predictions(paths, clips, split)):
        for c, clip in enumerate(clips):
            probs[m, offsets[c]:offsets[c + 1]] = clip_probs(predictions, clip, split)
            progress(ProgressEvent(f"read {split}", advance=1))
    labels = None
    if clips and all(c.labels is not None for c in clips):
        labels = np.concatenate([c.labels for c in clips]).astype(np.int8)
    face = (np.concatenate([face_mask(c) for c in clips]) if clips
            else np.zeros(0, dtype=bool))
    return SplitData(tuple(c.clip_id for c in clips), tuple(c.video_id for c in clips),
                     offsets, probs, labels, face)


def clip_data(readers: Sequence[Predictions], clip: Clip, split: str) -> SplitData:
    """One clip as a :class:`SplitData` (for applying a fitted pipeline clip by clip)."""
    probs = np.stack([clip_probs(r, clip, split) for r in readers])
    labels = None if clip.labels is None else clip.labels.astype(np.int8)
    return SplitData((clip.clip_id,), (clip.video_id,), np.array([0, clip.n_frames]), probs,
                     labels, face_mask(clip))
