"""The run directory's writing side: when a run may resume, how it is cleared, who owns it.

The layout (every file's name) is :mod:`pipeline.runs.layout`, the record ``metrics.json``
:mod:`pipeline.runs.record`; :class:`RunDir` adds to those paths what only stage two does.

**One writer.** :meth:`RunDir.owned` holds the run's lock for a whole ``fuse`` call: a second
``fuse`` into the same directory is refused in one line naming the holder (host, pid, command),
and the kernel frees the lock when the holder dies, so a killed run resumes without any cleaning.

**Resume.** ``checkpoint.pt`` is written after every epoch, with the torch and
numpy generator states, so rerunning the same command after an interruption continues from the
last finished epoch and ends exactly as an uninterrupted run would. A run whose saved config
differs from the new one is refused with a one-line error, unless ``force`` (continue with the
new config) or ``restart`` (discard the old run). ``train.epochs`` may change (raising it extends
a finished run, unless it had stopped early), and so may ``train.cache_mb``.
The saved *identity* (:func:`identity`: the config and the store's features) is what must match;
:func:`changes` names what differs.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import tomli_w

from pipeline import io
from pipeline.config import merge, to_dict
from pipeline.errors import PipelineError
from pipeline.fusion.config import FuseConfig
from pipeline.locks import owner_lock
from pipeline.runs.layout import RUN_FILES, RunPaths
from pipeline.runs.record import RunRecord, read_record, write_record

FACE_RULE = "nearest frame with a face (same clip; ties: the earlier frame)"
NOT_IDENTITY = ("epochs", "cache_mb")  # train.* keys a resumed run may change


class RunDir(RunPaths):
    """The paths of one run directory and the writing (and resuming) of its files."""

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Hold the run's owner lock (creating the directory); raise ``LockHeld`` if another
        process holds it; a run that fails leaves no bare folder: :func:`owner_lock`)."""
        with owner_lock(self.owner, f"run directory {self.path}"):
            yield

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last epoch's state, or None when there is none."""
        import torch

        if not self.checkpoint.exists():
            return None
        return torch.load(self.checkpoint, weights_only=True)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """The checkpoint, then ``config.toml`` from the config inside it (never before: the two
        must not disagree after an interruption)."""
        io.torch_save(self.checkpoint, state)
        io.write_text(self.config, tomli_w.dumps(state["config"]))

    def save_best(self, state: dict[str, Any]) -> None:
        io.torch_save(self.best, state)

    def read_metrics(self) -> RunRecord:
        """The record (:func:`pipeline.runs.record.read_record`)."""
        return read_record(self.path)

    def write_metrics(self, record: RunRecord | dict[str, Any]) -> RunRecord:
        """The record, a dict checked against the schema first
        (:func:`pipeline.runs.record.write_record`)."""
        return write_record(self.path, record)

    def clear(self) -> None:
        """Remove what a run writes (and nothing else)."""
        io.check_write(self.metrics)  # the owner's guards (a lease still held, a writable folder)
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        predictions = self.predictions_dir
        if predictions.is_dir():
            for path in sorted(predictions.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            predictions.rmdir()


def identity(config: FuseConfig, features: dict[str, str], labels: str | None = None) -> dict[str, Any]:
    """What must match for a run to resume: the config, the features and the labels read (the
    manifests' :func:`~pipeline.data.manifest.fingerprint`: the store accepts relabelled
    manifests, a run must not train on two labellings). Not compared: ``train.epochs``
    (raising it extends a run) and ``train.cache_mb`` (changes no result)."""
    saved = to_dict(config)
    for key in NOT_IDENTITY:
        saved["train"].pop(key, None)
    return {"config": saved, "features": features, **({"labels": labels} if labels else {})}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


# Options added with a default other than the behaviour before them: (section, key) -> the value
# that reproduces a run written before the option existed.
EARLIER_BEHAVIOUR = {("train", "ema_epochs"): 0.0}


def with_new_options(saved_config: dict[str, Any]) -> dict[str, Any]:
    """A saved run config with the options added to the code since it was written: at the value
    that behaves as the code did then (its default, or :data:`EARLIER_BEHAVIOUR`'s value), so a
    run still resumes unless the new code would train it otherwise."""
    try:
        defaults = identity(FuseConfig(method=saved_config.get("method", "mfm")), {})["config"]
    except PipelineError:  # a method this code no longer has: compare as saved
        return saved_config
    for (section, key), value in EARLIER_BEHAVIOUR.items():
        if key in defaults.get(section, {}):
            defaults[section][key] = value
    return merge(defaults, saved_config)


def changes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a saved identity and a new one, in words."""
    changed = differences(with_new_options(saved["config"]), new["config"])
    if saved["features"] != new["features"]:
        changed.append("the store's features (re-extracted)")
    if saved.get("labels") != new.get("labels"):
        changed.append("the manifests' labels")
    return changed
