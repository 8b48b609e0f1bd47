"""The store under damage and on hostile filesystems: reads verify what they read (crc32c per chunk,
recorded chunk sizes, sha256 for older arrays), writes are atomic, locks fall back to leases where
flock is refused, other tools (plain zarr, xarray) open the store, and a store path that is a file
gives one line."""

import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import zarr

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline import locks
from pipeline.features import atomic
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import CorruptArray, StoreError, checksum
from pipeline.features.store_inspect import verify
from pipeline.fusion.data import FeatureRequest, check_inputs, read_clip

N = 3000  # frames: swin [N, 768] float16 spans two 4 MiB chunks


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "f.zarr", "a")
    s.ensure_clip("c1", N, 25.0)
    rng = np.random.default_rng(0)
    s.write("c1", "swin", rng.normal(size=(N, 768)).astype(np.float16), "k", 25.0)
    s.write("c1", "valid", np.ones(N, bool), "v", 25.0)
    return s


def _clip():
    return Clip("c1", "train", "v1", N, 25.0, None, None, None, np.zeros(N, np.int8))


def _fuse_read(store):
    """What `fuse` does per clip: check the inputs, then read the whole clip."""
    request = FeatureRequest(arrays=("swin",))
    handle = FeatureStore(store.path)  # fuse opens the store read-only
    dims = check_inputs(handle, [_clip()], request)
    return read_clip(handle, _clip(), request, dims, train=True)


def _chunks(store, name="swin"):
    return sorted(p for p in (store.path / "clips" / "c1" / name / "c").rglob("*") if p.is_file())


def _refusal(store, excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(store.path) in message and "'c1'" in message and "'swin'" in message
    assert "rerun `fer-pipeline extract`" in message
    return message


def test_fuse_reader_refuses_a_deleted_chunk(store):
    assert len(_chunks(store)) == 2
    _fuse_read(store)  # intact: reads
    _chunks(store)[1].unlink()  # zarr alone would read the rows as zeros
    with pytest.raises(PipelineError) as excinfo:
        _fuse_read(store)
    assert "missing" in _refusal(store, excinfo)


def test_fuse_reader_refuses_flipped_bytes(store):
    chunk = _chunks(store)[0]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(PipelineError) as excinfo:
        _fuse_read(store)
    _refusal(store, excinfo)


def test_a_corrupt_array_found_by_a_reader_is_recomputed_by_the_next_plan(store):
    assert store.is_complete("c1", "swin", "k")
    chunk = _chunks(store)[0]
    chunk.write_bytes(b"\0" * chunk.stat().st_size)  # same size: only reading can tell
    assert store.is_complete("c1", "swin", "k")  # the cheap check cannot see it
    with pytest.raises(CorruptArray):
        store.read("c1", "swin")
    assert not store.is_complete("c1", "swin", "k")  # the reader's note: extract recomputes it
    store.write("c1", "swin", np.ones((N, 768), np.float16), "k", 25.0)
    assert store.is_complete("c1", "swin", "k") and (store.read("c1", "swin") == 1).all()


def test_arrays_written_before_crc32c_are_checked_against_their_sha256(store):
    """An array in the format of earlier versions (no crc32c codec, no recorded chunks)."""
    data = np.arange(N * 4, dtype=np.float16).reshape(N, 4)
    legacy = zarr.create_array(str(store.path / "clips" / "c1" / "old"), shape=data.shape,
                               dtype=data.dtype, chunks=(1000, 4), zarr_format=3)
    legacy[...] = data
    legacy.attrs["complete"] = {"sha256": checksum(data), "cache_key": "k", "rate": 25.0}
    np.testing.assert_array_equal(store.read("c1", "old"), data)
    sorted((store.path / "clips" / "c1" / "old" / "c").rglob("*"))[-1].unlink()
    with pytest.raises(CorruptArray, match="does not match its sha256"):
        store.read("c1", "old")


def test_store_verify_reports_what_reading_would_refuse(store):
    _chunks(store)[0].unlink()
    problems = list(verify(store))
    assert [(p.clip_id, p.array) for p in problems] == [("c1", "swin")]
    assert "missing" in problems[0].reason


def test_a_failed_write_leaves_the_previous_array_whole_and_nothing_visible(store, monkeypatch):
    before = store.read("c1", "swin")

    def crash(*args, **kwargs):
        raise OSError(errno.EIO, "disk failed mid-write")

    monkeypatch.setattr("pipeline.features.store_array.move_into_place", crash)
    with pytest.raises(StoreError, match="cannot write clip 'c1' array 'swin'"):
        store.write("c1", "swin", np.zeros((N, 768), np.float16), "k2", 25.0)
    np.testing.assert_array_equal(store.read("c1", "swin"), before)
    assert store.marker("c1", "swin")["cache_key"] == "k"
    assert not [p for p in (store.path / "clips" / "c1").iterdir() if p.name.startswith(".")]
    assert not list((store.meta / "tmp").iterdir())


def test_move_into_place_replaces_a_directory_whole(tmp_path):
    final = tmp_path / "a"
    final.mkdir()
    (final / "old").write_text("old")
    built = atomic.aside_name(final, tmp_path / "scratch")
    built.mkdir(parents=True)
    (built / "new").write_text("new")
    atomic.move_into_place(built, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "scratch"]
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert not list((tmp_path / "scratch").iterdir())  # the replaced copy is deleted


def test_what_a_killed_writer_left_is_swept(tmp_path):
    scratch = tmp_path / "scratch"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = scratch / f"{atomic.TMP_PREFIX}swin@{socket.gethostname()}@{dead}@abcd1234"
    mine = atomic.aside_name(tmp_path / "valid", scratch)
    other_host = scratch / f"{atomic.TMP_PREFIX}swin@elsewhere@1@abcd1234"
    for path in (left, mine, other_host):
        path.mkdir(parents=True)
    atomic.sweep(scratch)
    assert sorted(p.name for p in scratch.iterdir()) == sorted([mine.name, other_host.name])
    old = time.time() - 2 * atomic.STALE_SECONDS
    os.utime(other_host, (old, old))
    atomic.sweep(scratch)
    assert [p.name for p in scratch.iterdir()] == [mine.name]


# ---- locks where flock is refused ----------------------------------------------------------------

def _refuse_flock(monkeypatch):
    def flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", flock)


def test_clip_locks_fall_back_to_exclusive_leases(store, monkeypatch):
    _refuse_flock(monkeypatch)
    with store.lock_clip("c1") as mine:
        assert mine
        assert (store.meta / "locks" / "clip-c1.lease").is_file()
        with store.lock_clip("c1") as again:
            assert not again
        code = ("import sys, errno, fcntl\n"
                "def refuse(fd, op): raise OSError(errno.ENOSYS, 'no flock')\n"
                "fcntl.flock = refuse\n"
                "from pipeline.features.store import FeatureStore\n"
                "with FeatureStore(sys.argv[1]).lock_clip('c1') as got: print(got)")
        out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True,
                             text=True, check=True).stdout
        assert out.strip() == "False"
    assert not (store.meta / "locks" / "clip-c1.lease").exists()
    with store.lock_clip("c1") as after:
        assert after


def test_a_stale_lease_is_taken_over(tmp_path, monkeypatch):
    _refuse_flock(monkeypatch)
    folder = tmp_path / "locks"
    folder.mkdir()
    lease = folder / "x.lease"
    # A holder on another node that stopped renewing: stale once older than the lease.
    lease.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
    with locks.hold(folder, "x", blocking=False, lease_seconds=60) as got:
        assert not got  # fresh: still held
    old = time.time() - 120
    os.utime(lease, (old, old))
    with locks.hold(folder, "x", blocking=False, lease_seconds=60) as got:
        assert got
        assert json.loads(lease.read_text())["pid"] == os.getpid()
    # A holder on this host whose process died is stale at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lease.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead), "time": time.time()}))
    with locks.hold(folder, "x", blocking=False, lease_seconds=60) as got:
        assert got


def test_a_held_lease_is_renewed(tmp_path, monkeypatch):
    _refuse_flock(monkeypatch)
    folder = tmp_path / "locks"
    with locks.hold(folder, "x", lease_seconds=0.6) as got:
        assert got
        first = (folder / "x.lease").stat().st_mtime
        time.sleep(0.5)
        assert (folder / "x.lease").stat().st_mtime > first


# ---- other tools, and bad paths ------------------------------------------------------------------

def test_plain_zarr_and_xarray_open_the_store(store):
    xarray = pytest.importorskip("xarray")
    store.write("c1", "logmel", np.ones((40, 8), np.float32), "m", 31.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about any folder that is not a Zarr node
        nodes = dict(zarr.open_group(str(store.path), mode="r").members(max_depth=None))
    assert "clips/c1/swin" in nodes
    ds = xarray.open_zarr(store.path, group="clips/c1", consolidated=False)
    assert ds["swin"].dims == ("frame", "swin_feature")
    assert ds["logmel"].dims == ("logmel_frame", "logmel_feature")
    np.testing.assert_allclose(ds["time"].values, np.arange(N) / 25.0)
    np.testing.assert_allclose(ds["logmel_time"].values, np.arange(40) / 31.25)
    assert "time" in ds["swin"].coords
    np.testing.assert_array_equal(ds["swin"].values, store.read("c1", "swin"))
    tree = xarray.open_datatree(store.path, engine="zarr", consolidated=False)
    assert tree["clips/c1"].dataset["valid"].dims == ("frame",)


def test_legacy_folders_move_beside_the_store(store):
    (store.path / ".locks").mkdir()
    (store.path / "reports").mkdir()
    (store.path / "reports" / "extract-1.json").write_text("{}")
    FeatureStore(store.path, "a")
    assert not (store.path / ".locks").exists() and not (store.path / "reports").exists()
    assert (store.meta / "reports" / "extract-1.json").read_text() == "{}"


@pytest.mark.parametrize("mode", ["r", "a"])
def test_a_store_path_that_is_a_file_gives_one_line(tmp_path, mode):
    path = tmp_path / "features.zarr"
    path.write_text("not a folder")
    with pytest.raises(StoreError, match=r"features.zarr: is a file, not a feature store"):
        FeatureStore(path, mode)
    with pytest.raises(StoreError, match="cannot create or open the store"):
        FeatureStore(path / "inner.zarr", "a")


def test_an_unreadable_store_gives_one_line(store):
    (store.path / "zarr.json").write_text("{ half a json")
    with pytest.raises(StoreError, match=r"f.zarr: cannot read the store \(") as excinfo:
        FeatureStore(store.path)
    assert "\n" not in str(excinfo.value)
    message = str(excinfo.value)
    assert str(store.path / "zarr.json") in message and "fer-pipeline extract" in message
    (store.path / "zarr.json").unlink()
    (store.path / "zarr.json").mkdir()  # not a file: not a store
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(store.path)
