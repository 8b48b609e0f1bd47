"""The feature store: round trips, completion markers and checksums, stale clips, locks, summary."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import zarr

from pipeline.features.store import FeatureStore
from pipeline.features.store_format import StoreError, array_key, checksum
from pipeline.features.store_inspect import summarize, verify


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "f.zarr", "a")
    s.ensure_clip("a", 5, 10.0)
    return s


def _chunk_files(store, clip, name):
    return sorted(p for p in (store.path / "clips" / clip / name / "c").rglob("*") if p.is_file())


def test_round_trip_keeps_dtype_shape_and_rate(store):
    data = np.arange(5 * 3, dtype=np.float16).reshape(5, 3)
    store.write("a", "feat", data, cache_key="k1", rate=10.0)
    out = store.read("a", "feat")
    assert out.dtype == np.float16 and out.shape == (5, 3)
    np.testing.assert_array_equal(out, data)
    assert store.rate("a", "feat") == 10.0
    marker = store.marker("a", "feat")
    assert {k: marker[k] for k in ("sha256", "cache_key", "rate")} == {
        "sha256": checksum(data), "cache_key": "k1", "rate": 10.0}
    files = _chunk_files(store, "a", "feat")
    assert marker["chunks"] == {p.relative_to(store.path / "clips" / "a" / "feat").as_posix(): p.stat().st_size
                                for p in files}


def test_shape_and_has_array_read_metadata_only(store):
    store.write("a", "tokens", np.zeros((5, 2, 2, 3), np.float16), cache_key="k", rate=10.0)
    assert store.shape("a", "tokens") == (5, 2, 2, 3)
    assert store.has_array("a", "tokens") and not store.has_array("a", "nope")
    assert not store.has_array("no_clip", "tokens")
    with pytest.raises(StoreError, match="no array 'nope'"):
        store.shape("a", "nope")


def test_array_keys_carry_the_stride_and_the_no_audio_mark():
    assert array_key("abc") == "abc"
    assert array_key("abc", audio_stride=4) == "abc-stride4"
    assert array_key("abc", no_audio=True) == "abc-noaudio"
    assert array_key("abc", audio_stride=1, no_audio=True) == "abc-stride1-noaudio"


def test_is_complete_needs_the_same_key_and_intact_data(store):
    store.write("a", "feat", np.ones((5, 4), np.float32), cache_key="k1", rate=10.0)
    assert store.is_complete("a", "feat", "k1", verify=True)
    assert not store.is_complete("a", "feat", "k2")
    assert not store.is_complete("a", "other", "k1")
    assert not store.is_complete("missing-clip", "feat", "k1")
    for chunk in _chunk_files(store, "a", "feat"):
        chunk.write_bytes(b"\0" * chunk.stat().st_size)  # same size, other bytes
    # The cheap check (marker, chunk sizes) still says yes: the bytes are checked when read.
    assert store.is_complete("a", "feat", "k1", verify=False)
    assert not store.is_complete("a", "feat", "k1", verify=True)


def test_verify_finds_corrupt_chunks_missing_markers_and_unfinished_clips(store):
    store.write("a", "feat", np.random.rand(5, 4).astype(np.float32), "k", 10.0)
    store.write("a", "valid", np.ones(5, bool), "v", 10.0)
    store.ensure_clip("b", 3, 10.0)
    store.write("b", "feat", np.ones((3, 4), np.float32), "k", 10.0)
    # Only b is flagged: its valid array (written last by the stage) is missing.
    assert [(p.clip_id, p.array) for p in verify(store)] == [("b", None)]
    (chunk,) = _chunk_files(store, "a", "feat")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    arr = zarr.open_array(str(store.path / "clips" / "a" / "valid"), mode="a")
    del arr.attrs["complete"]
    problems = {(p.clip_id, p.array): p.reason for p in verify(store)}
    assert set(problems) == {("a", "feat"), ("a", "valid"), ("b", None)}
    assert "checksum" in problems[("a", "feat")] or "unreadable" in problems[("a", "feat")]
    assert "marker" in problems[("a", "valid")]


def test_ensure_clip_replaces_a_clip_whose_length_changed(store):
    store.write("a", "feat", np.ones((5, 2), np.float16), "k", 10.0)
    store.ensure_clip("a", 5, 10.0, {"has_audio": False})
    assert store.array_names("a") == ["feat"]
    assert store.clip_attrs("a")["has_audio"] is False
    store.ensure_clip("a", 6, 10.0)
    assert store.array_names("a") == []
    assert store.clip_attrs("a")["n_frames"] == 6


def test_read_refuses_an_array_without_marker(store):
    store.write("a", "feat", np.ones((5, 2), np.float16), "k", 10.0)
    arr = zarr.open_array(str(store.path / "clips" / "a" / "feat"), mode="a")
    del arr.attrs["complete"]
    with pytest.raises(StoreError, match="no complete array 'feat'"):
        store.read("a", "feat")


def test_a_directory_that_is_not_a_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path)


def test_handle_pickles_without_its_zarr_state(store):
    store.write("a", "feat", np.ones((5, 2), np.float16), "k", 10.0)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._root is None
    np.testing.assert_array_equal(copy.read("a", "feat"), store.read("a", "feat"))


def test_clip_lock_is_exclusive_within_and_across_processes(store):
    with store.lock_clip("a") as mine:
        assert mine
        with store.lock_clip("a") as again:  # a second descriptor, even in this process
            assert not again
        with store.lock_clip("b") as other:
            assert other
        code = ("import sys; from pipeline.features.store import FeatureStore; "
                "s = FeatureStore(sys.argv[1]);\n"
                "with s.lock_clip('a') as got: print(got)")
        out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True,
                             text=True, check=True).stdout
        assert out.strip() == "False"
    with store.lock_clip("a") as after:
        assert after


def test_record_extractors_merges_by_name(store):
    store.record_extractors({"swin": {"cache_key": "1"}, "tdnn": {"cache_key": "2"}})
    store.record_extractors({"swin": {"cache_key": "3"}})
    assert FeatureStore(store.path).extractors() == {"swin": {"cache_key": "3"}, "tdnn": {"cache_key": "2"}}


def test_summary_counts_arrays_shapes_keys_and_bytes(store):
    store.write("a", "swin", np.ones((5, 8), np.float16), "k1", 10.0)
    store.ensure_clip("b", 2, 10.0, {"has_audio": False})
    store.write("b", "swin", np.ones((2, 8), np.float16), "k2", 10.0)
    store.write("b", "logmel", np.zeros((0, 4), np.float32), "m", 31.25)
    summary = summarize(store)
    assert (summary.clips, summary.frames, summary.clips_without_audio) == (2, 7, 1)
    assert summary.arrays["swin"].complete == 2
    assert summary.arrays["swin"].row_shapes == {(8,)}
    assert summary.arrays["swin"].cache_keys == {"k1", "k2"}
    assert summary.arrays["logmel"].dtypes == {"float32"}
    assert summary.size_bytes > 0


def test_concurrent_creators_share_one_store(tmp_path):
    """A store is created in one rename: racing creators all open the same, whole store."""
    import concurrent.futures

    path = tmp_path / "s.zarr"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        handles = list(pool.map(lambda _: FeatureStore(path, "a"), range(8)))
    assert all(h.clip_ids() == [] for h in handles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # no leftover temporary
