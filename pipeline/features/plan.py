"""What stage one still has to compute: the configured extractors, and per clip what is missing.

:func:`missing` is the one check of a clip's arrays against the store. The plan runs it for every
clip before any worker starts (:func:`plan_clip`); a worker runs it again once it holds the
clip's lock (another process may have finished part of it meanwhile).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import config as config_io
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features import extractors as extractor_registry
from pipeline.features.config import ExtractConfig, resolve_precision
from pipeline.features.extractors.base import Extractor
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import (TIME, TIME_KEY, VALID, VALID_KEY, StoreError, array_key,
                                            is_coordinate, time_name)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda where torch sees one, else cpu; a CUDA device that is not there fails now,
    before any work, in one line."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"--device {device}: this machine has no CUDA device torch can use")
    return device


def build_extractors(config: ExtractConfig) -> dict[str, Extractor]:
    """The configured extractors, unloaded: building them hashes weights files but no model."""
    config = dataclasses.replace(config)  # re-checks fields assigned after the config was built
    device = resolve_device(config.device)
    precision, _ = resolve_precision(config.precision, device)
    built: dict[str, Extractor] = {}
    for name in config.extractors:
        cls = extractor_registry.extractor_class(name)
        try:
            ext_config = config_io.from_dict(cls.Config, config.configs.get(name, {}), f"configs.{name}")
        except (ValueError, TypeError) as e:
            raise PipelineError(str(e)) from None
        weights = config.weights.get(name)
        if weights is not None and not Path(weights).exists():
            raise PipelineError(f"{weights}: no such weights file or folder for {name}")
        if weights is not None:  # absolute: workers load it from their own working directory
            weights = os.path.abspath(weights)
        built[name] = cls(config=ext_config, weights=weights, device=device,
                          precision=precision, seed=config.seed, trust_code=config.trust_code)
    names = [a for e in built.values() for a in e.outputs()] + [VALID]
    clash = sorted({a for a in names if names.count(a) > 1})
    if clash:
        raise PipelineError(f"extractors {config.extractors} would write the same array(s) {clash}")
    reserved = sorted(a for a in names if is_coordinate(a))
    if reserved:
        raise PipelineError(f"array name(s) {reserved}: 'time' and names ending in '_time' are the "
                            "store's time coordinates; rename the extractor's outputs")
    return built


def array_keys(ext: Extractor, audio_stride: int, has_audio: bool) -> dict[str, str]:
    """Store array name -> the cache key it must carry to be reused (the store's rule)."""
    key = array_key(ext.cache_key, audio_stride if ext.strided else None,
                    no_audio=ext.needs_audio and not has_audio)
    return {name: key for name in ext.outputs()}


@dataclass(frozen=True)
class Missing:
    """What a clip lacks in the store."""

    extractors: tuple[str, ...]  # extractors whose arrays are to be (re)computed
    write_valid: bool  # the valid array is missing or stale
    complete: int  # arrays found complete (of the extractors asked about, and valid)

    @property
    def nothing(self) -> bool:
        return not self.extractors and not self.write_valid


def missing(store: FeatureStore, clip: Clip, extractors: dict[str, Extractor], audio_stride: int,
            verify: bool = False) -> Missing:
    """Which of ``extractors`` (and ``valid``) the store lacks for ``clip``, with current keys.

    One stale array recomputes its extractor's whole set. The check costs a few metadata reads
    and ``stat`` calls per array (:meth:`FeatureStore.is_complete`); ``verify`` also re-reads and
    re-hashes every complete array (the old, per-byte check).
    """
    has_audio = clip.audio_path is not None
    needed, complete = [], 0
    for name, ext in extractors.items():
        keys = array_keys(ext, audio_stride, has_audio)
        done = [store.is_complete(clip.clip_id, a, k, verify) and _coordinate_intact(store, clip, a)
                for a, k in keys.items()]
        if all(done):
            complete += len(done)
        else:
            needed.append(name)
    write_valid = not store.is_complete(clip.clip_id, VALID, VALID_KEY, verify)
    return Missing(tuple(needed), write_valid, complete + (not write_valid))


def _coordinate_intact(store: FeatureStore, clip: Clip, name: str) -> bool:
    """An array at its own rate (log-mel) needs its time coordinate, written with it: a damaged
    or deleted one (found by a reader or ``store verify``) recomputes the pair."""
    marker = store.marker(clip.clip_id, name) or {}
    if float(marker.get("rate", clip.fps)) == float(clip.fps):
        return True
    coordinate = store.marker(clip.clip_id, time_name(name))
    return coordinate is not None and store.is_complete(clip.clip_id, time_name(name),
                                                        coordinate.get("cache_key"))


@dataclass(frozen=True)
class ClipJob:
    """One clip of a shard and what the plan found missing."""

    clip: Clip
    extractors: tuple[str, ...]  # extractors whose arrays are to be (re)computed
    write_valid: bool  # the valid array is missing or stale


def plan_clip(store: FeatureStore, clip: Clip, extractors: dict[str, Extractor],
              audio_stride: int, verify: bool) -> tuple[ClipJob | None, int]:
    """What ``clip`` still needs: (a job or None, arrays that are complete)."""
    try:
        attrs = store.clip_attrs(clip.clip_id)
    except StoreError:
        attrs = None
    if attrs is None or attrs.get("n_frames") != clip.n_frames or attrs.get("fps") != clip.fps:
        # New clip, or its group will be replaced (ensure_clip): everything is to compute.
        return ClipJob(clip, tuple(extractors), True), 0
    found = missing(store, clip, extractors, audio_stride, verify)
    # A damaged `time` (found by a reader or `store verify`): the worker's ensure_clip rewrites it.
    if found.nothing and store.is_complete(clip.clip_id, TIME, TIME_KEY):
        return None, found.complete
    return ClipJob(clip, found.extractors, found.write_valid), found.complete
