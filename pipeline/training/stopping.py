"""Early stopping on a selection score, the one rule both training loops follow.

An epoch whose score beats the best so far becomes the best (its weights are the ones kept) and
resets the count of bad epochs; any other epoch counts as bad, but only once ``min_epochs`` have
passed (a slow start is not held against a run). The run stops when ``patience`` bad epochs have
accumulated. Stage two's heads (:class:`pipeline.fusion.training_run.TrainingRun`) and stage 0's
fine-tune (:mod:`pipeline.finetune.loop`) each hold one :class:`EarlyStopping` and keep its
three numbers in their checkpoints under their own keys (:meth:`EarlyStopping.state` and
:meth:`EarlyStopping.restore` take the names, so checkpoints written before it still resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """The best score, its epoch, and the bad epochs since (see the module docstring)."""

    patience: int
    min_epochs: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Take epoch ``epoch``'s ``score``; True when it is the new best."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        if epoch > self.min_epochs:  # patience counts only after min_epochs
            self.bad_epochs += 1
        return False

    @property
    def exhausted(self) -> bool:
        """``patience`` bad epochs have passed: stop."""
        return self.bad_epochs >= self.patience

    def state(self, bad_key: str = "bad_epochs") -> dict[str, float | int]:
        """The three numbers for a checkpoint (the bad-epoch count under ``bad_key``)."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                bad_key: self.bad_epochs}

    def restore(self, saved: dict, bad_key: str = "bad_epochs") -> None:
        self.best_score, self.best_epoch = saved["best_score"], saved["best_epoch"]
        self.bad_epochs = saved[bad_key]
