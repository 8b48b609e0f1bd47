"""Zarr metadata for other readers: consolidated metadata at the end of ``extract`` (written as
zarr's own ``consolidate_metadata`` writes it; xarray opens without a warning), never used by the
store's own reads, removed when a writer starts; clip groups carry split and video id."""

import json
import shutil
import warnings

import numpy as np
import pytest
import zarr

from extract_fixtures import TINY_LOGMEL, make_dataset
from pipeline.data.manifest import load_clips
from pipeline.features.config import ExtractConfig
from pipeline.features.store import FeatureStore
from pipeline.features.store_meta import KEY, consolidate, is_consolidated, unconsolidate
from stages.extract import run_extract


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    manifests = make_dataset(root / "data", n_clips=2, n_frames=8, missing=())
    store = root / "f.zarr"
    config = ExtractConfig(extractors=["test_mean_colour", "logmel"], configs={"logmel": TINY_LOGMEL},
                           batch_size=4, device="cpu")
    run_extract(config, manifests, store)
    return store, manifests


def test_extract_leaves_consolidated_metadata_as_zarr_writes_it(extracted, tmp_path):
    store, _ = extracted
    assert is_consolidated(store)
    ours = json.loads((store / "zarr.json").read_text())[KEY]
    reference = tmp_path / "copy.zarr"
    shutil.copytree(store, reference)
    unconsolidate(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: "not part of the v3 specification"
        zarr.consolidate_metadata(str(reference))
    theirs = json.loads((reference / "zarr.json").read_text())[KEY]
    assert theirs == ours


def test_xarray_opens_the_store_without_a_warning(extracted):
    xr = pytest.importorskip("xarray")
    store, _ = extracted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the "no consolidated metadata" RuntimeWarning included
        tree = xr.open_datatree(store, engine="zarr")
    clip = FeatureStore(store).clip_ids()[0]
    np.testing.assert_array_equal(tree[f"clips/{clip}"]["test_mean_colour"].values,
                                  FeatureStore(store).read(clip, "test_mean_colour"))


def test_clip_groups_carry_split_and_video_id(extracted):
    store, manifests = extracted
    handle = FeatureStore(store)
    for clip in load_clips(manifests):
        attrs = handle.clip_attrs(clip.clip_id)
        assert attrs["split"] == clip.split and attrs["video_id"] == clip.video_id


def test_stale_consolidated_metadata_never_misleads_the_store(extracted, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(extracted[0], store)
    handle = FeatureStore(store, "a")
    handle.ensure_clip("late", 3, 10.0)  # written without removing it: the worst case
    handle.write("late", "test_mean_colour", np.ones((3, 3), np.float16), "k", 10.0)
    fresh = FeatureStore(store)
    assert "late" in fresh.clip_ids() and fresh.array_names("late") == ["test_mean_colour"]
    stale = zarr.open_group(str(store), mode="r", use_consolidated=True)
    assert "late" not in stale["clips"]  # (what a consolidated reader would have seen)
    unconsolidate(store)
    assert not is_consolidated(store) and FeatureStore(store).clip_ids() == fresh.clip_ids()
    assert consolidate(store) > 0
    assert "late" in zarr.open_group(str(store), mode="r", use_consolidated=True)["clips"]


def test_a_new_extraction_removes_it_while_writing(extracted, tmp_path, monkeypatch):
    store, manifests = tmp_path / "s.zarr", extracted[1]
    shutil.copytree(extracted[0], store)
    seen = []
    import stages.extract as stage

    real = stage.consolidate
    monkeypatch.setattr(stage, "consolidate", lambda path: seen.append(is_consolidated(path)) or
                        real(path))
    config = ExtractConfig(extractors=["test_mean_colour", "logmel"],
                           configs={"logmel": {**TINY_LOGMEL, "n_mels": 8}}, batch_size=4,
                           device="cpu")
    run_extract(config, manifests, store)  # new log-mel: work to do
    assert seen == [False] and is_consolidated(store)  # removed before writing, written after
