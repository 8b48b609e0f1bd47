"""``extract`` on hostile storage: without flock (lease files), on a complete read-only store (no
lock, no write), after a reader found a corrupt array (recomputed), and with a store path that is
a file (one line)."""

import errno
import fcntl
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from extract_fixtures import make_dataset, store_arrays
from pipeline.errors import PipelineError
from pipeline import locks
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import CorruptArray
from pipeline.features.store_inspect import summarize, verify
from stages.extract import ExtractConfig, run_extract

HERE = str(Path(__file__).resolve().parent)
CONFIG = dict(extractors=["test_mean_colour"], batch_size=4, device="cpu")


def _refuse_flock(monkeypatch):
    def flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", flock)


def test_extract_runs_where_flock_is_refused(tmp_path, monkeypatch):
    manifests = make_dataset(tmp_path, n_clips=3, n_frames=8)
    clean = tmp_path / "clean.zarr"
    run_extract(ExtractConfig(**CONFIG), manifests, clean)
    _refuse_flock(monkeypatch)
    store = tmp_path / "f.zarr"
    result = run_extract(ExtractConfig(**CONFIG), manifests, store)
    assert result.ok and result.clips_done == 3
    assert not list((FeatureStore(store).meta / "locks").glob("*.lease"))  # leases released
    expected, actual = store_arrays(clean), store_arrays(store)
    assert actual.keys() == expected.keys()
    for key, data in expected.items():
        np.testing.assert_array_equal(actual[key], data, err_msg=str(key))


# Both children refuse flock, wait for the go, then extract into one store.
CHILD = """
import errno, fcntl, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
def refuse(fd, op):
    raise OSError(errno.ENOSYS, "Function not implemented")
fcntl.flock = refuse
import extract_fixtures
from stages.extract import ExtractConfig, run_extract
Path(sys.argv[2]).touch()
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
result = run_extract(ExtractConfig(**json.loads(sys.argv[4])), sys.argv[5], sys.argv[6])
print(json.dumps({"written": result.arrays_written, "done": result.clips_done}))
"""


@pytest.mark.slow
def test_two_writers_without_flock_never_both_write_a_clip(tmp_path):
    import json

    manifests = make_dataset(tmp_path, n_clips=4, n_frames=8)
    store = tmp_path / "f.zarr"
    FeatureStore(store, "a")
    go = tmp_path / "go"
    env = {**os.environ, "FER_TEST_DELAY": "0.05", "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, HERE, str(tmp_path / f"ready{k}"),
                                  str(go), json.dumps(CONFIG), str(manifests), str(store)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for k in range(2)]
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
    go.touch()
    outs = [c.communicate(timeout=180) for c in children]
    assert [c.returncode for c in children] == [0, 0], outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    # Each clip's two arrays (features, valid) were written once, by one of the two.
    assert sum(r["written"] for r in results) == 4 * 2
    assert sum(r["done"] for r in results) == 4
    assert not list(verify(FeatureStore(store)))


def _read_only(monkeypatch, *roots: Path):
    """Make every write under ``roots`` fail as on a read-only mount (root ignores chmod)."""
    roots = tuple(str(r) for r in roots)

    def guard(path):
        if str(path).startswith(roots):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_open, real_mkdir, real_rename, real_replace = os.open, os.mkdir, os.rename, os.replace

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            guard(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        guard(path)
        return real_mkdir(path, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        guard(src), guard(dst)
        return real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        guard(src), guard(dst)
        return real_replace(src, dst, *args, **kwargs)

    real_write_text = pathlib.Path.write_text

    def write_text(self, *args, **kwargs):
        guard(self)
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)

    def no_lock(*args, **kwargs):
        raise AssertionError("a lock was taken on a read-only store")

    monkeypatch.setattr(locks, "hold", no_lock)


def test_a_complete_read_only_store_needs_no_lock_and_no_write(tmp_path, monkeypatch):
    manifests = make_dataset(tmp_path, n_clips=2, n_frames=8)
    store = tmp_path / "f.zarr"
    run_extract(ExtractConfig(**CONFIG), manifests, store)
    before = sorted(p for p in tmp_path.rglob("*") if "f.zarr" in str(p))
    real_hold = locks.hold
    _read_only(monkeypatch, store, FeatureStore(store).meta)
    result = run_extract(ExtractConfig(**CONFIG), manifests, store)
    assert result.nothing_to_do and result.ok and result.report is None
    assert sorted(p for p in tmp_path.rglob("*") if "f.zarr" in str(p)) == before
    # With work to do, the same store gives one line instead of a traceback.
    monkeypatch.setattr(locks, "hold", real_hold)
    more = make_dataset(tmp_path / "more", n_clips=1, n_frames=8, first=5)
    with pytest.raises(PipelineError, match="f.zarr: cannot write"):
        run_extract(ExtractConfig(**CONFIG), more, store)


def test_extract_recomputes_an_array_a_reader_found_corrupt(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=2, n_frames=8)
    store = tmp_path / "f.zarr"
    run_extract(ExtractConfig(**CONFIG), manifests, store)
    expected = store_arrays(store)
    (chunk,) = [p for p in (store / "clips" / "clip00" / "test_mean_colour" / "c").rglob("*") if p.is_file()]
    chunk.write_bytes(b"\0" * chunk.stat().st_size)  # same size: the plan cannot see it
    with pytest.raises(CorruptArray):
        FeatureStore(store).read("clip00", "test_mean_colour")
    result = run_extract(ExtractConfig(**CONFIG), manifests, store)
    assert result.clips_done == 1 and result.arrays_written == 1
    np.testing.assert_array_equal(FeatureStore(store).read("clip00", "test_mean_colour"),
                                  expected[("clip00", "test_mean_colour")])


def test_the_cli_names_a_store_path_that_is_a_file_in_one_line(tmp_path):
    path = tmp_path / "features.zarr"
    path.write_text("x")
    for args in (["store", "info", str(path)], ["store", "verify", str(path)]):
        root = str(Path(HERE).parents[1])
        out = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                             text=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
        assert out.returncode == 1
        lines = [line for line in (out.stdout + out.stderr).splitlines()
                 if line.strip() and not line.startswith("(run with --debug")]
        assert len(lines) == 1 and "is a file, not a feature store" in lines[0], lines
        assert "Errno" not in lines[0]


def test_store_info_prints_bytes_per_frame_and_the_size_at_affwild2_scale(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    manifests = make_dataset(tmp_path, n_clips=2, n_frames=8)
    store = tmp_path / "f.zarr"
    run_extract(ExtractConfig(**CONFIG), manifests, store)
    summary = summarize(FeatureStore(store))
    entry = summary.arrays["test_mean_colour"]
    chunk_bytes = sum(p.stat().st_size for p in store.glob("clips/*/test_mean_colour/c/**/*") if p.is_file())
    assert entry.bytes == chunk_bytes and entry.bytes_per_frame == chunk_bytes / 16
    assert summary.projected_bytes(2_700_000) == pytest.approx(summary.size_bytes / 16 * 2_700_000)
    out = CliRunner().invoke(app, ["store", "info", str(store)])
    assert out.exit_code == 0, out.output
    assert "2,700,000 frames" in out.output and "B/frame" in out.output
    assert f"{entry.bytes_per_frame:,.1f}" in out.output


def test_xarray_opens_an_extracted_store_with_image_and_audio_arrays(tmp_path):
    import warnings

    import zarr

    from extract_fixtures import TINY_LOGMEL

    xarray = pytest.importorskip("xarray")
    manifests = make_dataset(tmp_path, n_clips=2, n_frames=8, audio=[True, False])
    store = tmp_path / "f.zarr"
    run_extract(ExtractConfig(extractors=["test_mean_colour", "logmel"], batch_size=4, device="cpu",
                              configs={"logmel": TINY_LOGMEL}), manifests, store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing outside the Zarr hierarchy is left inside it
        zarr.open_group(str(store), mode="r").members(max_depth=None)
    tree = xarray.open_datatree(store, engine="zarr", consolidated=False)
    clip = tree["clips/clip00"].dataset
    assert clip["test_mean_colour"].dims == ("frame", "test_mean_colour_feature")
    assert clip["logmel"].dims == ("logmel_frame", "logmel_feature")
    assert clip["logmel_time"].size == clip["logmel"].shape[0] > 0
    np.testing.assert_allclose(clip["time"].values, np.arange(8) / 10.0)
    ds = xarray.open_zarr(store, group="clips/clip01", consolidated=False)  # no audio: no rows
    assert ds["logmel"].shape[0] == 0
    np.testing.assert_array_equal(ds["valid"].values, FeatureStore(store).read("clip01", "valid"))
