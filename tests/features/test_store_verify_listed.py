"""``store verify`` checks every clip the store's root records and every clip folder: a clip whose
``zarr.json`` or whole folder was deleted is reported, not "ok" (issue 37)."""

import shutil

import numpy as np
import pytest

from cli.main import main
from pipeline.features.store import FeatureStore
from pipeline.features.store_inspect import verify


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "f.zarr", "a")
    for clip in ("a", "b", "c"):
        s.ensure_clip(clip, 4, 10.0)
        s.write(clip, "feat", np.ones((4, 2), np.float32), "k", 10.0)
        s.write(clip, "valid", np.ones(4, bool), "v", 10.0)
    s.record_manifest({"a": "d1", "b": "d2", "c": "d3"})
    return s


def _verify(store, capsys):
    code = main(["store", "verify", str(store.path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_intact_store_is_ok(store, capsys):
    code, out = _verify(store, capsys)
    assert code == 0 and "ok: 3 clips" in out


def test_a_deleted_clip_group_metadata_is_reported(store, capsys):
    (store.path / "clips" / "b" / "zarr.json").unlink()
    code, out = _verify(FeatureStore(store.path), capsys)
    assert code == 1 and "ok:" not in out
    assert f"b: {store.path / 'clips' / 'b' / 'zarr.json'}: the clip's group metadata is missing" in " ".join(out.split())
    assert [p.clip_id for p in verify(FeatureStore(store.path))] == ["b"]


def test_a_deleted_clip_folder_is_reported(store, capsys):
    shutil.rmtree(store.path / "clips" / "c")
    code, out = _verify(FeatureStore(store.path), capsys)
    assert code == 1 and "ok:" not in out
    assert "recorded in the store's root, but the folder is gone" in " ".join(out.split())
    from pipeline.features.store_inspect import listed_clips

    assert listed_clips(FeatureStore(store.path)) == ["a", "b", "c"]
