"""Damaged store metadata (issue 23, point 6): every read of a damaged ``zarr.json`` names the file
and what to run, ``store verify`` reports every array the clip's record lists, and ``extract``
repairs whatever ``verify`` reports: the store ends equal to a clean extraction."""

import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli import extract as extract_cli
from extract_fixtures import REPAIR_CONFIG, REPAIR_REQUEST, make_dataset, store_arrays
from pipeline.data.manifest import load_clips
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.features.store_inspect import verify
from pipeline.fusion.data import check_inputs, read_clip
from stages.extract import run_extract

app = typer.Typer()
extract_cli.register(app)
CONFIG, REQUEST = REPAIR_CONFIG, REPAIR_REQUEST


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A dataset and a clean store of it (copied by each test before damaging it)."""
    root = tmp_path_factory.mktemp("meta")
    manifests = make_dataset(root, n_clips=2, n_frames=12)
    assert run_extract(CONFIG, manifests, root / "clean.zarr").ok
    return manifests, root / "clean.zarr"


@pytest.fixture
def store(clean, tmp_path):
    path = tmp_path / "f.zarr"
    shutil.copytree(clean[1], path)
    return path


def _verify(store) -> list[str]:
    return [str(p) for p in verify(FeatureStore(store))]


def _fuse_reads(store, manifests) -> None:
    """What `fuse` reads of each clip before training."""
    handle = FeatureStore(store)
    clips = load_clips(manifests)
    dims = check_inputs(handle, clips, REQUEST)
    for clip in clips:
        read_clip(handle, clip, REQUEST, dims, train=True)


def _repaired(store, clean, manifests) -> None:
    """`extract` repairs what verify reported: then nothing is reported and the store equals a
    clean extraction, byte for byte."""
    result = run_extract(CONFIG, manifests, store)
    assert result.ok and not result.nothing_to_do
    assert _verify(store) == []
    _fuse_reads(store, manifests)
    expected, found = store_arrays(clean), store_arrays(store)
    assert set(found) == set(expected)
    assert all(found[k].tobytes() == expected[k].tobytes() for k in expected)
    for clip_id in ("clip00", "clip01"):  # the coordinates too
        np.testing.assert_array_equal(FeatureStore(store).read(clip_id, "time"), np.arange(12) / 10.0)
        np.testing.assert_array_equal(FeatureStore(store).read(clip_id, "logmel_time"),
                                      FeatureStore(clean).read(clip_id, "logmel_time"))


def _one_line_naming(message: str, path) -> None:
    assert str(path) in message and "fer-pipeline extract" in message and "\n" not in message


def test_a_corrupt_clip_group_is_named_and_repaired(store, clean):
    manifests = clean[0]
    damaged = store / "clips" / "clip00" / "zarr.json"
    damaged.write_text("{not json")
    (problem,) = _verify(store)
    _one_line_naming(problem, damaged)
    with pytest.raises(PipelineError) as fuse_error:
        _fuse_reads(store, manifests)
    _one_line_naming(str(fuse_error.value), damaged)
    verify = CliRunner().invoke(app, ["store", "verify", str(store)])
    assert verify.exit_code == 1 and str(damaged) in verify.output.replace("\n", "")
    info = CliRunner().invoke(app, ["store", "info", str(store)])
    assert info.exit_code == 0 and "damaged" in info.output
    _repaired(store, clean[1], manifests)


def test_a_corrupt_array_metadata_is_named_and_repaired(store, clean):
    manifests = clean[0]
    damaged = store / "clips" / "clip01" / "logmel" / "zarr.json"
    damaged.write_text('{"zarr_format": 3, "node_type": "arr')
    (problem,) = _verify(store)
    assert problem.startswith("clip01/logmel: ")
    _one_line_naming(problem, damaged)
    with pytest.raises(PipelineError) as fuse_error:
        _fuse_reads(store, manifests)
    _one_line_naming(str(fuse_error.value), damaged)
    _repaired(store, clean[1], manifests)


def test_a_deleted_array_folder_is_reported_and_repaired(store, clean):
    shutil.rmtree(store / "clips" / "clip00" / "logmel")
    (problem,) = _verify(store)
    assert problem.startswith("clip00/logmel: missing") and "fer-pipeline extract" in problem
    _repaired(store, clean[1], clean[0])


@pytest.mark.parametrize("coordinate", ["time", "logmel_time"])
def test_a_corrupt_time_coordinate_is_recomputed(store, clean, coordinate):
    chunk = next(p for p in (store / "clips" / "clip01" / coordinate / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (problem,) = _verify(store)
    assert problem.startswith(f"clip01/{coordinate}: corrupt")
    _repaired(store, clean[1], clean[0])


def test_a_deleted_time_coordinate_is_reported_and_recomputed(store, clean):
    shutil.rmtree(store / "clips" / "clip00" / "logmel_time")
    (problem,) = _verify(store)
    assert problem.startswith("clip00/logmel_time: missing")
    _repaired(store, clean[1], clean[0])
