"""Stage two: train one head on the cached features and write its run directory.

Inputs: a feature store (stage one) and the manifest directory it was extracted from. Output:
``OUT/<name>/`` (``name`` defaults to the method), the run directory described in
``pipeline.fusion.train``. Rerunning the same command resumes or, if the run is complete,
does nothing. A ``dan`` run also gets ``attention.npz`` (``pipeline.fusion.heads.dan``). With
``bag.k = K`` (``--bag K``) the run is a soft-voting bag of K members (:mod:`pipeline.fusion.bagging`).

A run directory has one writer at a time (:meth:`RunDir.owned`): a second ``fuse`` into it is
refused in one line naming the first. The manifests must describe the clips the store was
extracted from (frame counts, fps, media; labels may change) for every clip read
(:func:`check_manifest`), unless ``allow_manifest_mismatch``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pipeline.data.manifest import Clip, clip_digest, feature_digest, load_clips
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.bagging import fuse_bag
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.heads import head_class
from pipeline.fusion.rundir import RunDir
from pipeline.fusion.train import RunResult, train
from pipeline.progress import ProgressFn, silent

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


def check_manifest(store: FeatureStore, clips: list[Clip], manifests: Path) -> None:
    """Refuse clips whose features would differ from the store's: a frame count, fps or media
    other than the store recorded at extraction (:func:`feature_digest`). Labels may differ
    (a relabelled manifest reads the same features; runs record the labels' fingerprint).

    A store written before feature digests has label-including digests (``manifest_digests``):
    its clips are checked against those, labels included, until ``extract`` is rerun with the
    new manifests (it computes nothing new and records feature digests). Clips with neither
    record (older stores still) are not checked."""
    features, legacy = store.feature_digests(), store.manifest_digests()
    differing = [c.clip_id for c in clips if c.clip_id in features
                 and features[c.clip_id] != feature_digest(c)]
    if differing:
        raise PipelineError(
            f"{manifests}: not the manifests {store.path} was extracted from ({len(differing)}"
            f" clip(s) differ in frame count, fps or media, e.g. {differing[0]}); rerun `extract`"
            " with these manifests, or pass --allow-manifest-mismatch")
    differing = [c.clip_id for c in clips if c.clip_id not in features and c.clip_id in legacy
                 and legacy[c.clip_id] != clip_digest(c)]
    if differing:
        raise PipelineError(
            f"{manifests}: not the manifests {store.path} was extracted from ({len(differing)}"
            f" clip(s) differ in length or labels, e.g. {differing[0]}; the store predates"
            " label-free digests): rerun `extract` with these manifests (it recomputes only"
            " clips whose frames changed), or pass --allow-manifest-mismatch")


def fuse(config: FuseConfig, out: str | Path, name: str | None = None,
         progress: ProgressFn = silent, restart: bool = False, force: bool = False,
         allow_manifest_mismatch: bool = False) -> RunResult:
    """Train ``config.method`` into ``out/<name or method>`` (see
    :func:`pipeline.fusion.train.train`); with ``config.bag.k``, a bag of that many members."""
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
    if not allow_manifest_mismatch:
        check_manifest(store, clips, manifests)
    # Absolute paths: a run resumed from another working directory is still the same run.
    config = dataclasses.replace(config, store=str(store_path.resolve()),
                                 manifests=str(manifests.resolve()))
    run_dir = Path(out) / name
    with RunDir(run_dir).owned():
        if config.bag.k:
            return fuse_bag(config, run_dir, clips, store, progress, restart, force)
        result = train(config, run_dir, clips, store, progress, restart=restart, force=force)
        head_class(config.method).after_training(result.run_dir, store, clips)
    return result
