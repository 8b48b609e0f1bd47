"""The run directory's layout: the one list of what stage two writes into a run and where.

::

    RUN/config.toml            the full FuseConfig (enough to reproduce the run), written with
                               every checkpoint: it always matches checkpoint.pt
    RUN/checkpoint.pt          last epoch: model, optimizer, RNG states, epoch, best score and
                               weights, history, config
    RUN/best.pt                the best epoch's weights, config and feature sizes (for inference)
    RUN/metrics.json           the run's record (:mod:`pipeline.runs.record`), written last: the
                               run is complete when it exists
    RUN/curve.png              training loss and validation macro-F1 per epoch
    RUN/attention.npz          attention heads only (``dan``): :mod:`pipeline.runs.attention`
    RUN/predictions/<split>/<output>.npz   float32 [T, 8] per clip, every frame, val and test
                                           (:mod:`pipeline.runs.predictions`)
    RUN/predictions/<split>/face_mask.npz  bool [T] per clip: the frames with a face image
    RUN/epochs.jsonl, RUN/epochs.csv   one row per epoch to plot (:mod:`pipeline.epoch_log`)
    RUN/owner.lock             the owner lock (:mod:`pipeline.locks`): who is writing the run

A bag (``bag.k > 1``) is a run directory of the same layout whose members are run directories
``RUN/members/<i>`` (:mod:`pipeline.fusion.bagging`). Every file is written atomically
(:mod:`pipeline.io`). Stage two writes through :class:`RunPaths` and stage three reads through it;
no other module spells a run file's name.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.epoch_log import LOG_FILES

FACE_MASK = "face_mask"  # the file name (no suffix) of a split's face mask; not an output name
ATTENTION_FILE = "attention.npz"  # attention heads' maps (pipeline.runs.attention)
OWNER = "owner"  # the owner lock's name for :func:`pipeline.locks.owner_lock` (file owner.lock)
# The files a run writes beside predictions/ (what clearing a run removes; owner.lock stays: it
# is held while clearing).
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.json", "curve.png", "config.toml",
             ATTENTION_FILE, *LOG_FILES)


class RunPaths:
    """The paths of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def curve(self) -> Path:
        return self.path / "curve.png"

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def attention(self) -> Path:
        return self.path / ATTENTION_FILE

    @property
    def owner(self) -> Path:
        """The owner lock's name (:func:`pipeline.locks.owner_lock` adds ``.lock``)."""
        return self.path / OWNER

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def prediction(self, split: str, output: str = "main") -> Path:
        return self.predictions_dir / split / f"{output}.npz"

    def face_mask(self, split: str) -> Path:
        return self.prediction(split, FACE_MASK)


def prediction_path(run_dir: str | Path, split: str, output: str = "main") -> Path:
    return RunPaths(run_dir).prediction(split, output)


def face_mask_path(run_dir: str | Path, split: str) -> Path:
    return RunPaths(run_dir).face_mask(split)
