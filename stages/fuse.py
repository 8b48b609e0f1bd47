"""Stage two: train one head on the cached features and write its run directory.

Inputs: a feature store (stage one) and the manifest directory it was extracted from. Output:
``OUT/<name>/`` (``name`` defaults to the method), the run directory described in
``pipeline.fusion.train``. Rerunning the same command resumes or, if the run is complete,
does nothing.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pipeline.data.manifest import load_clips
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.train import RunResult, train
from pipeline.progress import ProgressFn, silent

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


def fuse(config: FuseConfig, out: str | Path, name: str | None = None,
         progress: ProgressFn = silent, restart: bool = False, force: bool = False) -> RunResult:
    """Train ``config.method`` into ``out/<name or method>`` (see :func:`pipeline.fusion.train.train`)."""
    name = name or config.method
    if not _NAME.fullmatch(name):
        raise PipelineError(f"run name {name!r}: use letters, digits and ._=+- (no slashes)")
    store_path, manifests = Path(config.store), Path(config.manifests)
    if not store_path.exists():
        raise PipelineError(f"{store_path}: no such feature store (run `fer-pipeline extract`)")
    if not manifests.is_dir():
        raise PipelineError(f"{manifests}: no such manifest directory (run `fer-pipeline manifest`)")
    store = FeatureStore(store_path)
    try:
        clips = load_clips(manifests, au_only=True)  # the run keeps the clips of its tasks
    except ValueError as e:
        raise PipelineError(" ".join(str(e).split())) from None
    # Absolute paths: a run resumed from another working directory is still the same run.
    config = dataclasses.replace(config, store=str(store_path.resolve()),
                                 manifests=str(manifests.resolve()))
    return train(config, Path(out) / name, clips, store, progress, restart=restart, force=force)
