"""Per-frame class probabilities: what stage two writes and stage three reads.

A run directory holds ``predictions/<split>/<output>.npz``: one float32 ``[n_frames, 8]`` array per
clip, keyed by clip id, covering every frame of every evaluated clip (frames with no face
included), and ``predictions/<split>/face_mask.npz``: one bool ``[n_frames]`` array per clip, the
frames that had a face image (the store's ``valid`` flags, :mod:`pipeline.data.frames`'s rule), so
that stage three needs nothing but the run directory to apply the nearest-face fill. Most heads have one output, ``main``; the Modal Fusion Module writes ``fusion`` (Y_T),
``image`` (Y_I) and ``audio`` (Y_A). ``metrics.json`` lists a run's outputs and its primary one.

The writer streams: each clip's array goes into the zip archive as it is produced, so memory does
not grow with the number of clips. Readers are lazy (``np.load`` of an npz reads one clip on access).

A probabilities file also holds ``__classes__``: the class names of its columns (a unicode array,
``np.load(path)["__classes__"]``), so that other tools need not know the ABAW order. It is not a
clip: :class:`Predictions` leaves it out of its keys and offers it as ``classes``. A full disk
while writing is one line naming the directory (:func:`pipeline.io.no_space`).
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from pipeline import io as atomic
from pipeline.data.labels import CLASSES, NUM_AUS, NUM_CLASSES, VA_NAMES
from pipeline.runs.layout import face_mask_path, prediction_path  # noqa: F401 (the writers' paths)


CLASSES_KEY = "__classes__"  # the entry of a probabilities file naming its columns (not a clip)
# The action-unit output of a multi-task run: float32 [T, 12] AU probabilities per clip, listed in
# metrics.json's "au_outputs" (not in "outputs", which are expression outputs).
AU_OUTPUT = "au"
# The valence-arousal output of a multi-task run: float32 [T, 2] (valence, arousal) in [-1, 1] per
# clip, listed in metrics.json's "va_outputs".
VA_OUTPUT = "va"


class PredictionWriter:
    """Append clips' probabilities to an npz file; the file appears only when closed cleanly."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = atomic.temporary_path(self.path)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED)
        self._ids: set[str] = set()

    def _check(self, clip_id: str, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != NUM_CLASSES:
            raise ValueError(f"clip {clip_id}: probabilities of shape {array.shape}, want [T, 8]")
        return array

    names: tuple[str, ...] | None = CLASSES  # written as __classes__ (None: no column names)

    def add(self, clip_id: str, array: np.ndarray) -> None:
        array = self._check(clip_id, array)
        if clip_id in self._ids or clip_id == CLASSES_KEY:
            raise ValueError(f"clip {clip_id}: written twice to {self.path}")
        self._ids.add(clip_id)
        self._write(clip_id, array)

    def _write(self, key: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        try:
            # dated pipeline.io.ZIP_TIME: the same probabilities give the same bytes on every run
            self._zip.writestr(atomic.zip_member(f"{key}.npy", zipfile.ZIP_DEFLATED),
                               buffer.getvalue())
        except OSError as e:
            raise atomic.no_space(self.path, e) or e

    def close(self) -> None:
        try:
            if self.names is not None:
                self._write(CLASSES_KEY, np.asarray(self.names))
            self._zip.close()
        except OSError as e:
            self._discard()
            raise atomic.no_space(self.path, e) or e
        os.replace(self._tmp, self.path)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # (a full disk may refuse the closing write too)
            self._zip.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # leave no half-written file behind
            self._discard()


class FaceMaskWriter(PredictionWriter):
    """Append clips' face masks (bool [T]) to ``face_mask.npz``, like :class:`PredictionWriter`."""

    names = None  # a mask has no class columns

    def _check(self, clip_id: str, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim != 1 or array.dtype != bool:
            raise ValueError(f"clip {clip_id}: face mask of shape {array.shape} and dtype"
                             f" {array.dtype}, want bool [T]")
        return array


class AUPredictionWriter(PredictionWriter):
    """Append clips' AU probabilities (float32 [T, 12]) to ``au.npz``, as the writer above."""

    def _check(self, clip_id: str, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != NUM_AUS:
            raise ValueError(f"clip {clip_id}: AU probabilities of shape {array.shape}, "
                             f"want [T, {NUM_AUS}]")
        return array


class VAPredictionWriter(PredictionWriter):
    """Append clips' valence and arousal (float32 [T, 2] in [-1, 1]) to ``va.npz``."""

    names = VA_NAMES

    def _check(self, clip_id: str, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != len(VA_NAMES):
            raise ValueError(f"clip {clip_id}: valence-arousal of shape {array.shape}, want [T, 2]")
        if not (np.abs(array) <= 1).all():  # NaN fails too
            raise ValueError(f"clip {clip_id}: valence-arousal outside [-1, 1]")
        return array


class Predictions(Mapping[str, np.ndarray]):
    """Read-only, lazy mapping clip id -> float32 [T, 8] probabilities (or bool [T] face masks)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such predictions file")
        self._npz = np.load(self.path, allow_pickle=False)
        self._clips = [key for key in self._npz.files if key != CLASSES_KEY]

    @property
    def classes(self) -> tuple[str, ...]:
        """The column names (files written before they were recorded: the ABAW order)."""
        if CLASSES_KEY in self._npz.files:
            return tuple(str(name) for name in self._npz[CLASSES_KEY])
        return CLASSES

    def __getitem__(self, clip_id: str) -> np.ndarray:
        if clip_id == CLASSES_KEY:
            raise KeyError(clip_id)
        return self._npz[clip_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._clips)

    def __len__(self) -> int:
        return len(self._clips)

