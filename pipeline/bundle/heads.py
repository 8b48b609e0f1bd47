"""The member heads of a bundle: written from a run directory, rebuilt from plain files, run on a store.

A member head is stored as ``heads/<run>/config.json`` (the run's ``FuseConfig`` as a dict),
``dims.json`` (the input shapes it was built for) and ``weights.safetensors`` (the selected
epoch's weights, ``best.pt``'s ``model``, buffers included: a proportional head's fitted m,n live
there). Rebuilding repeats what stage two's loop does before predicting: build the head from its
config and dims, replace class layers by mixtures where configured, mask Other for 7-class runs,
load the weights, ``eval()``. Predicting uses stage two's own pass
(:func:`pipeline.fusion.evaluation.predict_table`: the faceless-frame rule included), so a head
predicts here exactly what it wrote into its run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.bundle.format import BundleError, read_json
from pipeline.config import from_dict
from pipeline.data.manifest import Clip
from pipeline.features.store import FeatureStore
from pipeline.training import moe
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.data import FeatureRequest, check_inputs
from pipeline.fusion.stream import ClipStream
from pipeline.fusion.evaluation import predict_table
from pipeline.fusion.heads import Head, head_class
from pipeline.fusion.run_setup import mask_other

CONFIG, DIMS, WEIGHTS = "config.json", "dims.json", "weights.safetensors"


def write_head(run_dir: Path, folder: Path) -> dict:
    """Copy a run's selected weights (``best.pt``, read without pickle) and config into
    ``folder``; returns the run's config as a dict."""
    import torch
    from safetensors.torch import save_file

    best = run_dir / "best.pt"
    if not best.is_file():
        raise BundleError(f"{best}: missing (the run did not finish an epoch)")
    try:
        saved = torch.load(best, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is one line
        raise BundleError(f"{best}: cannot read ({' '.join(str(e).split())[:200]})") from None
    folder.mkdir(parents=True)
    # safetensors refuses shared storage: every tensor gets its own contiguous copy
    state = {k: v.detach().clone().contiguous() for k, v in saved["model"].items()}
    save_file(state, str(folder / WEIGHTS))
    config = saved["config"]
    (folder / CONFIG).write_text(_json(config), encoding="utf-8")
    (folder / DIMS).write_text(_json(saved["dims"]), encoding="utf-8")
    return config


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


@dataclasses.dataclass
class MemberHead:
    """A rebuilt head and what it reads."""

    run: str
    config: FuseConfig
    head: Head
    request: FeatureRequest
    dims: dict[str, tuple[int, ...]]


def load_head(folder: Path, run: str) -> MemberHead:
    """Rebuild a member head from its folder (verified by the caller)."""
    import torch
    from safetensors.torch import load_file

    try:
        config = from_dict(FuseConfig, read_json(folder / CONFIG), str(folder / CONFIG))
    except (ValueError, TypeError) as e:
        raise BundleError(f"{folder / CONFIG}: {' '.join(str(e).split())}") from None
    dims = {k: tuple(v) for k, v in read_json(folder / DIMS).items()}
    cls = head_class(config.method)
    request = dataclasses.replace(cls.request(config.head, config.sampling),
                                  tasks=tuple(getattr(config.head, "tasks", ("expr",))),
                                  classes=config.task.classes)
    with torch.random.fork_rng():  # seeded as stage two built it; the caller's RNG untouched
        torch.manual_seed(config.seed)  # (the weights are loaded over what this initialises)
        head = cls(config.head, dims)
        moe.install(head, config.classifier)
    if config.task.classes == 7:
        mask_other(head)
    state = load_file(str(folder / WEIGHTS))
    try:
        head.load_state_dict(state)
    except RuntimeError as e:
        raise BundleError(f"{folder / WEIGHTS}: does not fit head {config.method!r}"
                          f" ({' '.join(str(e).split())[:200]})") from None
    head.eval()
    return MemberHead(run, config, head, request, dims)


def _input_dims(member: MemberHead, store: FeatureStore, clips: Sequence[Clip]
                ) -> dict[str, tuple[int, ...]]:
    """The per-frame shapes of the arrays the head reads, checked in the store; when no clip
    has audio (a silent video) the store holds no audio array to read them from, and the
    trained head's own shapes stand in (its audio inputs are zeros there)."""
    request = member.request
    if any(store.clip_attrs(c.clip_id).get("has_audio", True) for c in clips) or not request.audio:
        return check_inputs(store, clips, request)
    visual = tuple(a for a in request.arrays if a not in request.audio)
    dims = check_inputs(store, clips, dataclasses.replace(
        request, arrays=visual, audio=(), series=tuple(s for s in request.series if s in visual)))
    return {**{a: tuple(member.dims[a]) for a in request.audio}, **dims}


def predict_clips(member: MemberHead, store: FeatureStore, clips: Sequence[Clip]
                  ) -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray]]:
    """(clip id, output -> probabilities [T, 8] (AUs [T, 12]), face [T]) of every clip, in order,
    streamed a few clips at a time."""
    dims = _input_dims(member, store, clips)
    differing = {k: (v, member.dims.get(k)) for k, v in dims.items()
                 if tuple(v) != tuple(member.dims.get(k, ()))}
    if differing:
        name, (got, want) = next(iter(differing.items()))
        raise BundleError(f"{store.path}: array {name} has shape {got}, head {member.run} was"
                          f" trained on {want}")
    train = member.config.train
    stream = ClipStream(store, member.request, dims, train.buffer_mb, train.cache_mb)
    for table in stream.tables(list(clips)):
        probs = predict_table(member.head, table, train.eval_batch_size)
        for i, clip_id in enumerate(table.clip_ids):
            rows = table.clip_rows(i)
            yield clip_id, {k: v[rows] for k, v in probs.items()}, table.valid[rows].astype(bool)
