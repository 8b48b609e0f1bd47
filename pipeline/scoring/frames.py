"""The frames of one split as stage three sees them: every member's probabilities, labels, faces.

A *member* (:class:`Member`) is one output of one run directory. :func:`load_split` reads each
member's predictions file for the clips of a split into one :class:`SplitData` (clips
concatenated in manifest order), checking every clip as it goes: a missing clip, a wrong shape or
a negative or non-finite probability is an error naming the file and the clip, and so is a clip
the manifest split does not have. :func:`clip_data` does the same for a single clip, for applying
a fitted pipeline clip by clip.

Which frames have a face comes from the face masks stage two wrote beside the predictions
(``predictions/<split>/face_mask.npz`` of every run directory, :class:`FaceMasks`): stage three
never lists the dataset's frame folders, so it runs where only the run directories are. A run
without its face mask is an error naming the run; runs that disagree on a clip's faces (made from
different stores) are one too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.data.frames import clip_offsets
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.runs.predictions import Predictions, face_mask_path, prediction_path


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
            offsets=clip_offsets(lengths),
            probs=self.probs[:, index],
            labels=None if self.labels is None else self.labels[index],
            face=self.face[index],
        )


class FaceMasks:
    """The face masks of a split, read from every run directory and checked to agree."""

    def __init__(self, run_dirs: Sequence[Path], split: str) -> None:
        self.split = split
        self.readers = []
        for run_dir in dict.fromkeys(map(Path, run_dirs)):  # each run once, in order
            path = face_mask_path(run_dir, split)
            if not path.exists():
                raise PipelineError(f"{run_dir}: no {split} face mask ({path.relative_to(run_dir)}"
                                    " is missing; rerun `fer-pipeline fuse` to write it)")
            self.readers.append(Predictions(path))

    def __call__(self, clip: Clip) -> np.ndarray:
        """bool [n_frames]: the clip's frames with a face."""
        mask = None
        for reader in self.readers:
            try:
                own = np.asarray(reader[clip.clip_id])
            except KeyError:
                raise PipelineError(f"{reader.path}: no face mask for {self.split} clip"
                                    f" {clip.clip_id}") from None
            if own.shape != (clip.n_frames,) or own.dtype != bool:
                raise PipelineError(f"{reader.path}: clip {clip.clip_id} has a face mask of shape"
                                    f" {list(own.shape)} ({own.dtype}), want bool [{clip.n_frames}]")
            if mask is not None and not np.array_equal(mask, own):
                raise PipelineError(f"{reader.path}: clip {clip.clip_id}'s face frames differ from"
                                    f" {self.readers[0].path}'s (runs made from different stores?)")
            mask = own
        return np.zeros(clip.n_frames, dtype=bool) if mask is None else mask


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


def load_split(members: Sequence[Member], clips: Sequence[Clip], split: str,
               progress: ProgressFn = silent) -> SplitData:
    """Read each member's predictions file and its run's face mask for the given clips of one
    split, checking every clip."""
    faces = FaceMasks([m.run_dir for m in members], split)
    offsets = clip_offsets([c.n_frames for c in clips])
    probs = np.empty((len(members), int(offsets[-1]), NUM_CLASSES), dtype=np.float32)
    progress(ProgressEvent(f"read {split}", total=len(members) * len(clips)))
    paths = [m.path(split) for m in members]
    for m, predictions in enumerate(open_predictions(paths, clips, split)):
        for c, clip in enumerate(clips):
            probs[m, offsets[c]:offsets[c + 1]] = clip_probs(predictions, clip, split)
            progress(ProgressEvent(f"read {split}", advance=1))
    labels = None
    if clips and all(c.labels is not None for c in clips):
        # scoring_labels: frames the leakage guard excluded from this score read as unlabelled.
        labels = np.concatenate([c.scoring_labels("expr") for c in clips]).astype(np.int8)
    face = (np.concatenate([faces(c) for c in clips]) if clips
            else np.zeros(0, dtype=bool))
    return SplitData(tuple(c.clip_id for c in clips), tuple(c.video_id for c in clips),
                     offsets, probs, labels, face)


def clip_data(readers: Sequence[Predictions], faces: FaceMasks, clip: Clip, split: str
              ) -> SplitData:
    """One clip as a :class:`SplitData` (for applying a fitted pipeline clip by clip)."""
    probs = np.stack([clip_probs(r, clip, split) for r in readers])
    labels = None if clip.labels is None else clip.scoring_labels("expr").astype(np.int8)
    return SplitData((clip.clip_id,), (clip.video_id,), np.array([0, clip.n_frames]), probs,
                     labels, faces(clip))


def task_values(members: Sequence[Member], clips: Sequence[Clip], split: str, task: str,
                width: int, valid: Callable[[np.ndarray], bool], invalid: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """The clip offsets and float32 ``[n_members, frames, width]`` of every member's ``split``
    predictions of ``task`` (AU, VA) for ``clips``: each file present, each clip there with
    ``[n_frames, width]`` values that pass ``valid`` (else one line: the clip ``has {invalid}``)."""
    offsets = clip_offsets([c.n_frames for c in clips])
    values = np.empty((len(members), int(offsets[-1]), width), dtype=np.float32)
    for m, member in enumerate(members):
        path = member.path(split)
        if not path.exists():
            raise PipelineError(f"{path}: no such {task} predictions file")
        reader = Predictions(path)
        for c, clip in enumerate(clips):
            try:
                array = reader[clip.clip_id]
            except KeyError:
                raise PipelineError(f"{path}: no {task} predictions for {split} clip "
                                    f"{clip.clip_id}") from None
            if array.shape != (clip.n_frames, width):
                raise PipelineError(f"{path}: clip {clip.clip_id} has {task} predictions of shape "
                                    f"{list(array.shape)}, want [{clip.n_frames}, {width}]")
            if not valid(array):
                raise PipelineError(f"{path}: clip {clip.clip_id} has {invalid}")
            values[m, offsets[c]:offsets[c + 1]] = array
    return offsets, values
