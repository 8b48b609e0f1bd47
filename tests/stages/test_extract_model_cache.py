"""A worker's model cache keeps loaded models only: a failed load is never kept, so a corrected
command works without restarting the worker (issue 23, point 5)."""

import shutil

import pytest
import torch

from extract_fixtures import make_dataset
from pipeline.data.manifest import load_clips
from pipeline.errors import PipelineError
from pipeline.features import runner
from pipeline.features.extractors import create
from pipeline.features.extractors.tdnn import TdnnConfig
from pipeline.features.plan import ClipJob
from pipeline.features.runner import ShardTask, run_shard
from pipeline.features.store import FeatureStore


def _task(store, clips, ext) -> ShardTask:
    return ShardTask(store=str(store), jobs=[ClipJob(c, ("tdnn",), True) for c in clips],
                     extractors={"tdnn": ext}, batch_size=4, audio_stride=2, loader_threads=4,
                     prefetch=4, wait=True)


def test_a_failed_load_is_not_cached_and_the_corrected_command_works(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_LOADED", {})  # a fresh worker
    clips = load_clips(make_dataset(tmp_path / "data", n_clips=2, n_frames=12))
    config = TdnnConfig(windows=(4, 8), channels=(8, 8, 8, 8, 16), embedding_dim=8)
    source = create("tdnn", config=config, seed=7)
    source.load()
    weights = tmp_path / "client-only" / "tdnn.pth"
    weights.parent.mkdir()
    torch.save(source._model.state_dict(), weights)
    store = tmp_path / "f.zarr"
    FeatureStore(store, "a")

    # The client hashed the file, but the worker cannot read it there (another mount, say).
    unreadable = create("tdnn", config=config, weights=weights, device="cpu", precision="fp32")
    shared = tmp_path / "shared" / "tdnn.pth"
    shared.parent.mkdir()
    shutil.move(weights, shared)
    with pytest.raises(PipelineError, match="client-only"):
        run_shard(_task(store, clips, unreadable))
    assert not runner._LOADED  # nothing cached for a model that did not load

    # The corrected command: the same weights (same cache key) where the worker reads them.
    fixed = create("tdnn", config=config, weights=shared, device="cpu", precision="fp32")
    assert fixed.cache_key == unreadable.cache_key
    outcomes = run_shard(_task(store, clips, fixed))
    assert [o.status for o in outcomes] == ["done", "done"]
    assert list(runner._LOADED.values()) == [fixed]
    # The model came from the file: the same features as the network it was saved from.
    window = torch.randn(3, 20, source.frontend.params.n_mels)
    assert torch.equal(fixed.embed(window), source.embed(window))


def test_the_cache_is_keyed_by_what_defines_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_LOADED", {})
    clips = load_clips(make_dataset(tmp_path / "data", n_clips=1, n_frames=12))
    store = tmp_path / "f.zarr"
    FeatureStore(store, "a")
    config = TdnnConfig(windows=(4,), channels=(8, 8, 8, 8, 16), embedding_dim=8)
    first = create("tdnn", config=config, seed=1, device="cpu", precision="fp32")
    run_shard(_task(store, clips, first))
    # The same model again (a new object, as a new shard brings): the cached one serves it.
    same = create("tdnn", config=config, seed=1, device="cpu", precision="fp32")
    run_shard(_task(store, clips, same))
    assert list(runner._LOADED.values()) == [first] and same._model is None
    # Another seed is another model: built, and the old one dropped.
    other = create("tdnn", config=config, seed=2, device="cpu", precision="fp32")
    run_shard(_task(store, clips, other))
    assert list(runner._LOADED.values()) == [other] and other._model is not None
