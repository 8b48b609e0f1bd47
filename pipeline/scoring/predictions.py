"""Per-frame class probabilities: what stage two writes and stage three reads.

(It lives in ``scoring`` because training also scores itself: ``fusion`` imports ``scoring``, and
``scoring`` imports only ``data``, so the wings form no cycle.)

A run directory holds ``predictions/<split>/<output>.npz``: one float32 ``[n_frames, 8]`` array per
clip, keyed by clip id, covering every frame of every evaluated clip (frames with no face
included). Most heads have one output, ``main``; the Modal Fusion Module writes ``fusion`` (Y_T),
``image`` (Y_I) and ``audio`` (Y_A). ``metrics.json`` lists a run's outputs and its primary one.

The writer streams: each clip's array goes into the zip archive as it is produced, so memory does
not grow with the number of clips. Readers are lazy (``np.load`` of an npz reads one clip on access).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from pipeline.data.labels import NUM_CLASSES


def prediction_path(run_dir: str | Path, split: str, output: str = "main") -> Path:
    return Path(run_dir) / "predictions" / split / f"{output}.npz"


class PredictionWriter:
    """Append clips' probabilities to an npz file; the file appears only when closed cleanly."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_suffix(".npz.tmp")
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED)
        self._ids: set[str] = set()

    def add(self, clip_id: str, probs: np.ndarray) -> None:
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
            raise ValueError(f"clip {clip_id}: probabilities of shape {probs.shape}, want [T, 8]")
        if clip_id in self._ids:
            raise ValueError(f"clip {clip_id}: written twice to {self.path}")
        self._ids.add(clip_id)
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, probs, allow_pickle=False)
        self._zip.writestr(f"{clip_id}.npy", buffer.getvalue())

    def close(self) -> None:
        self._zip.close()
        self._tmp.replace(self.path)

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # leave no half-written file behind
            self._zip.close()
            self._tmp.unlink(missing_ok=True)


class Predictions(Mapping[str, np.ndarray]):
    """Read-only, lazy mapping clip id -> float32 [T, 8] probabilities."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such predictions file")
        self._npz = np.load(self.path, allow_pickle=False)

    def __getitem__(self, clip_id: str) -> np.ndarray:
        return self._npz[clip_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._npz.files)

    def __len__(self) -> int:
        return len(self._npz.files)


# The rest of a run directory (written by pipeline.fusion.train, read by stage three):
#   config.toml     the full head/training config, enough to reproduce the run
#   checkpoint.pt   weights + optimizer + config + epoch (resume and inference)
#   metrics.json    {"method": str, "outputs": [str], "primary": str, "best_epoch": int,
#                    "val_macro_f1": {output: float}, "history": [{"epoch", "train_loss",
#                    "val_macro_f1", ...}], and for `proportional` "grid": {"m": [1..5],
#                    "n": [1..5], "macro_f1": 5x5 list, "best": [m, n]}}
#   curve.png       the training curve
#   predictions/<split>/<output>.npz
