"""Training logs people plot: one row per epoch in ``epochs.jsonl`` and ``epochs.csv``, progress
inside an epoch, and (``--set log.tensorboard=true``) the same scalars for TensorBoard.

Both training loops (``fuse``'s :class:`pipeline.fusion.training_run.TrainingRun` and
``finetune``'s :mod:`pipeline.finetune.loop`) hold one :class:`EpochLog`. A row is the loop's own
history entry (loss, dev scores, seconds; nested tables flattened as ``dev_macro_f1.fusion``)
with ``epoch``, ``step`` (optimiser steps since the run began, counted by an optimiser hook),
``lr`` (the first parameter group's at the epoch's last optimiser step, read from the optimiser
by the same hook, so a scheduler stepped after it does not show the next epoch's;
``lr_min``/``lr_max`` too when the groups differ) and ``frames_per_s`` (frames trained per second
of the training pass).

**Exactly one row per epoch after a kill.** The rows live in the loop's checkpoint, and both
files are rewritten whole and atomically (:mod:`pipeline.io`) from those rows after each epoch
and when a run resumes. A run killed between writing the files and its checkpoint resumes from
the checkpoint's rows, so the row of the epoch it repeats is replaced, not doubled.

**Progress.** :meth:`EpochLog.start_epoch` and :meth:`EpochLog.advance` send the caller's
progress callback a task per epoch (units done, frames/s; at most every
:data:`PROGRESS_SECONDS`): the CLI shows it as a bar with an ETA on a terminal and as throttled
heartbeat lines in a batch log (:mod:`cli._common`). Nothing here prints.

**Options** (:class:`LogConfig`) are not part of a run's config: they change no number, so
``config.toml``, checkpoints' identities and weights records stay as they were. The CLI takes
them from ``--set log.KEY=VALUE`` (:func:`split_sets`) and sets them for the command
(:func:`use`).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io as text_io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn

__all__ = ["JSONL", "CSV", "LOG_FILES", "LogConfig", "EpochLog", "split_sets", "use",
           "learning_rates", "flatten"]

JSONL = "epochs.jsonl"
CSV = "epochs.csv"
LOG_FILES = (JSONL, CSV)
TENSORBOARD_DIR = "tensorboard"
PROGRESS_SECONDS = 0.5  # at most one in-epoch progress event this often (the CLI throttles again)


@dataclass(frozen=True)
class LogConfig:
    """Options of the training logs (``--set log.KEY=VALUE``)."""

    # also write every epoch's scalars through torch.utils.tensorboard into RUN/tensorboard/
    # (needs the tensorboard package: pip install tensorboard)
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.tensorboard:
            try:
                import tensorboard  # noqa: F401  (only whether it imports)
            except ImportError:
                raise PipelineError("log.tensorboard = true needs the tensorboard package, which "
                                    "is not installed: pip install tensorboard") from None


_CURRENT: contextvars.ContextVar[LogConfig] = contextvars.ContextVar("epoch_log",
                                                                   default=LogConfig())


@contextlib.contextmanager
def use(config: LogConfig) -> Iterator[None]:
    """The log options of every :class:`EpochLog` made inside the block (one command's)."""
    token = _CURRENT.set(config)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def split_sets(sets: Sequence[str]) -> tuple[LogConfig, list[str]]:
    """(the ``log.*`` overrides as a :class:`LogConfig`, the other overrides) of ``--set``."""
    from pipeline import config as config_io

    mine = [s[len("log."):] for s in sets if s.strip().startswith("log.")]
    rest = [s for s in sets if not s.strip().startswith("log.")]
    try:
        return config_io.build(LogConfig, sets=[s.strip() for s in mine]), rest
    except PipelineError as e:  # name the option as the user typed it
        message = str(e).replace("LogConfig: ", "log: ").replace(" for LogConfig", "")
        raise PipelineError(message) from None


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A row with nested tables as dotted keys (``{"f1": {"a": 1}}`` -> ``{"f1.a": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):  # (a per-class list: one column each)
            out.update(flatten({str(i): v for i, v in enumerate(value)}, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def learning_rates(optimizer: Any) -> dict[str, float]:
    """``lr`` of the optimiser's first parameter group; ``lr_min``/``lr_max`` over all groups when
    they differ (a head's own lr, a fine-tune's head_lr or layer decay)."""
    rates = [float(group["lr"]) for group in optimizer.param_groups]
    out = {"lr": rates[0]}
    if len(set(rates)) > 1:
        out.update(lr_min=min(rates), lr_max=max(rates))
    return out


class EpochLog:
    """The per-epoch log of one training run in ``folder`` (see the module doc)."""

    def __init__(self, folder: str | Path, progress: ProgressFn, task: str = "batches",
                 write: bool = True) -> None:
        self.folder, self.progress, self.task, self.write = Path(folder), progress, task, write
        self.config = _CURRENT.get()
        self.rows: list[dict[str, Any]] = []
        self.steps = 0  # optimiser steps since the run began
        self._lrs: dict[str, float] | None = None  # at the last step of this epoch (None: no step)
        self._board: Any = None
        self._started = self._sent_at = 0.0
        self._total: int | None = None
        self._units = self._frames = self._unsent = 0
        self._train_seconds = 0.0

    def attach(self, optimizer: Any) -> None:
        """Count ``optimizer``'s steps and note their learning rates (a hook: the loop needs no
        counter of its own)."""
        optimizer.register_step_post_hook(lambda opt, *_: self._step(opt))

    def _step(self, optimizer: Any) -> None:
        self.steps += 1
        self._lrs = learning_rates(optimizer)

    def restore(self, rows: list[dict[str, Any]] | None) -> None:
        """The rows a checkpoint holds (none: one written before this log existed), and the files
        rewritten from them: a row written after that checkpoint is dropped."""
        self.rows = [dict(r) for r in rows or []]
        self.steps = int(self.rows[-1].get("step", 0)) if self.rows else 0
        self._write_files()

    # -- inside an epoch

    def start_epoch(self, total: int | None) -> None:
        """A new epoch of ``total`` units (batches, clips) begins."""
        self._started = self._sent_at = time.perf_counter()
        self._total = total
        self._units = self._frames = self._unsent = 0
        self._train_seconds = 0.0
        self._lrs = None
        self.progress(ProgressEvent(self.task, total=total))

    def advance(self, units: int, frames: int) -> None:
        """``units`` more done, ``frames`` more trained (examples, samples)."""
        now = time.perf_counter()
        self._units += units
        self._unsent += units
        self._frames += frames
        self._train_seconds = now - self._started
        done = self._total is not None and self._units >= self._total  # (before the dev pass)
        if done or now - self._sent_at >= PROGRESS_SECONDS:
            self._send(now)

    def _send(self, now: float) -> None:
        self._sent_at = now
        advance, self._unsent = self._unsent, 0
        fps = self.frames_per_second()  # (whole above 100: the CLI prints 3 significant digits)
        self.progress(ProgressEvent(self.task, advance=advance,
                                    info={"frames/s": fps if fps < 100 else round(fps)}))

    def frames_per_second(self) -> float:
        return self._frames / self._train_seconds if self._train_seconds > 0 else 0.0

    # -- after an epoch

    def end_epoch(self, entry: dict[str, Any], optimizer: Any) -> dict[str, Any]:
        """Add the row of the epoch whose history entry is ``entry`` (it holds ``epoch``) and
        rewrite the files; returns the row. Call it before the epoch's checkpoint, which holds
        :attr:`rows`."""
        if self._unsent:
            self._send(time.perf_counter())
        flat = flatten(entry)
        lrs = self._lrs if self._lrs is not None else learning_rates(optimizer)
        row = {"epoch": flat.pop("epoch"), "step": self.steps, **lrs,
               **flat, "frames_per_s": self.frames_per_second()}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self._write_files()
        self._tensorboard(row)
        return row

    def _write_files(self) -> None:
        if not self.write:
            return
        lines = "".join(json.dumps(_finite(r)) + "\n" for r in self.rows)
        columns: dict[str, None] = {}
        for row in self.rows:
            columns.update(dict.fromkeys(row))
        out = text_io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(columns), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        for name, text in ((JSONL, lines), (CSV, out.getvalue())):
            _write_if_changed(self.folder / name, text)

    def _tensorboard(self, row: dict[str, Any]) -> None:
        if not (self.write and self.config.tensorboard):
            return
        if self._board is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events of epochs at or after this one (an interrupted run's) are dropped
            self._board = SummaryWriter(str(self.folder / TENSORBOARD_DIR), purge_step=row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._board.add_scalar(key, value, global_step=row["epoch"])
        self._board.flush()


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity (a best score of -inf before any epoch): null instead."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` atomically unless the file already holds it: a rerun of a finished run
    restores the same rows and writes nothing (its folder may be on a read-only mount)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(path, text)
