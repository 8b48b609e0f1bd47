"""A run's record (``RUN/metrics.json``): one schema, one writer, one reader for both stages.

Stage two writes the record last (the run is complete when it exists); stage three, ``cv`` and
``fuse``'s summary read it through :func:`read_record`, never as a loose dict. The fields every
reader relies on are typed attributes of :class:`RunRecord`, the training loop's own
(``stopped``, ``seed``, ``resumed_from``, ``val_scores``) included; what a head adds of its own (a
fitted table such as ``grid``, ``val_loss``, its task settings) stays in :attr:`RunRecord.extra`,
written back unchanged, so a new head needs no change here.

Old run directories still read: every field but ``outputs`` has a default, and
``selected_on`` defaults to :data:`DEFAULT_SELECTED_ON` (heads that early-stopped on val before
the field existed wrote none). :meth:`RunRecord.to_json` gives the dict the file holds
(the known fields first, in schema order, then the head's own keys).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.locks import describe, held_by
from pipeline.runs.layout import RunPaths

# Where a run made its choices when its record does not say (records written before the field).
DEFAULT_SELECTED_ON = "val"


@dataclass(frozen=True)
class RunRecord:
    """The content of ``metrics.json``. ``extra`` holds the keys a head owns."""

    outputs: tuple[str, ...]  # expression outputs (``main``, or ``fusion``/``image``/``audio``)
    method: str = ""  # the head's registry name
    primary: str = ""  # the output a run is ranked by ("" in a record without it: outputs[0])
    best_epoch: int = 0
    epochs_run: int = 0
    stopped: str | None = None  # why the loop ended: "early" (patience) or "epochs"
    seed: int | None = None  # the run's seed (weights and every sampling draw)
    resumed_from: int | None = None  # the epoch the last training call continued from (0: fresh)
    selected_on: str = DEFAULT_SELECTED_ON  # "val" or "train-dev": where choices were fitted
    val_macro_f1: dict[str, float] = field(default_factory=dict)  # per output
    dev_macro_f1: dict[str, float] | None = None  # per output; runs that selected on dev
    val_scores: dict[str, dict] | None = None  # per output: the val Scores' JSON, best epoch
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    splits: dict[str, list[str]] = field(default_factory=dict)  # val/test clip ids predicted
    features: dict[str, str] = field(default_factory=dict)  # array -> the store's cache key
    manifest_fingerprint: str | None = None  # the labels the run read
    face_outputs: tuple[str, ...] = ()  # outputs that see only frames with a face
    au_outputs: tuple[str, ...] = ()  # action-unit outputs (multi-task heads)
    val_au: dict | None = None  # AU scores on val (multi-task heads)
    va_outputs: tuple[str, ...] = ()  # valence-arousal outputs (multi-task heads)
    val_va: dict | None = None  # VA scores on val (CCC per dimension and mean)
    bag: dict | None = None  # a bag's members (pipeline.fusion.bagging)
    extra: dict[str, Any] = field(default_factory=dict)  # the head's own keys (grid, val_loss)

    def __post_init__(self) -> None:
        if not self.primary and self.outputs:
            object.__setattr__(self, "primary", self.outputs[0])

    @property
    def grid(self) -> dict | None:
        """The proportional head's fitted m,n table, when the run has one."""
        grid = self.extra.get("grid")
        return grid if isinstance(grid, dict) else None

    @classmethod
    def from_json(cls, data: Any, source: str | Path = "metrics.json") -> "RunRecord":
        """The record of a parsed ``metrics.json`` (raises PipelineError naming ``source`` and
        the field when a field has the wrong type)."""
        if not isinstance(data, dict):
            raise PipelineError(f"{source}: not a run record (a JSON object)")
        outputs = data.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise PipelineError(f"{source}: 'outputs' should be a non-empty list of output names")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in ("outputs", "extra") or f.name not in data:
                continue
            value = data[f.name]
            kind = _KINDS[f.name]
            if value is None and f.default is None:
                continue
            if not _is(value, kind):
                raise PipelineError(f"{source}: {f.name!r} should be {_WORDS[kind]}, not "
                                    f"{type(value).__name__}")
            values[f.name] = tuple(value) if kind == "names" else value
        extra = {k: v for k, v in data.items() if k not in _FIELDS}
        return cls(outputs=tuple(outputs), extra=extra, **values)

    def to_json(self) -> dict[str, Any]:
        """The dict ``metrics.json`` holds (None fields and an empty ``au_outputs`` left out, the
        head's keys last)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or (f.name in _OMIT_EMPTY and not value):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return {**out, **self.extra}


_KINDS = {"method": "str", "primary": "str", "best_epoch": "int", "epochs_run": "int",
          "stopped": "str", "seed": "int", "resumed_from": "int", "val_scores": "dict",
          "selected_on": "str", "val_macro_f1": "dict", "dev_macro_f1": "dict",
          "history": "list", "splits": "dict", "features": "dict",
          "manifest_fingerprint": "str", "face_outputs": "names", "au_outputs": "names",
          "val_au": "dict", "bag": "dict", "va_outputs": "names", "val_va": "dict"}
_WORDS = {"str": "a string", "int": "an integer", "dict": "an object", "list": "a list",
          "names": "a list of names"}
_FIELDS = {f.name for f in dataclasses.fields(RunRecord)}
_OMIT_EMPTY = {"au_outputs", "va_outputs"}  # expression-only runs write none


def _is(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "names":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, {"str": str, "dict": dict, "list": list}[kind])


def write_record(run_dir: str | Path, record: RunRecord | dict[str, Any]) -> RunRecord:
    """Write ``RUN/metrics.json`` atomically (a dict is checked against the schema first)."""
    path = RunPaths(run_dir).metrics
    if not isinstance(record, RunRecord):
        record = RunRecord.from_json(record, path)
    io.write_json(path, record.to_json())
    return record


def read_record(run_dir: str | Path) -> RunRecord:
    """``RUN/metrics.json`` as a :class:`RunRecord` (one-line PipelineError when it cannot be
    read or does not fit the schema; FileNotFoundError when there is none)."""
    path = RunPaths(run_dir).metrics
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{path}: cannot read ({e})") from None
    return RunRecord.from_json(data, path)


@dataclass
class RunInfo:
    """A run directory as stage three sees it: its name, record and attention maps."""

    name: str  # the run directory's name
    record: RunRecord
    attention: Path | None = None  # RUN/attention.npz (pipeline.runs.attention), if any


def read_run(run_dir: str | Path) -> RunInfo:
    """A finished run directory for stage three: one-line errors for a run being written, an
    unfinished one, a folder that is no run, and a record that cannot be read."""
    paths = RunPaths(run_dir)
    if not paths.metrics.is_file():
        holder = held_by(paths.owner)
        if holder is not None:  # fuse removes metrics.json while it (re)writes a run
            raise PipelineError(f"{paths.path}: being written by {describe(holder)}; run ensemble "
                                "when it has finished")
        if paths.checkpoint.is_file():
            raise PipelineError(f"{paths.path}: an unfinished run (no metrics.json, nobody writing"
                                " it); rerun its fuse command to finish it")
        raise PipelineError(f"{paths.path}: no metrics.json (not a run directory written by fuse)")
    record = read_record(paths.path)
    return RunInfo(paths.path.name, record, paths.attention if paths.attention.is_file() else None)
