"""A damaged or missing root ``zarr.json``: ``extract`` rebuilds it from the run reports and its
manifests, ending byte-equal to a clean extraction's, where every piece can be found again; where
one cannot (clips of splits this run does not extract, arrays no report describes), it writes
nothing and says in one line what is lost and what to run (pipeline.features.store_root)."""

import json
import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli import extract as extract_cli
from extract_fixtures import REPAIR_CONFIG, REPAIR_REQUEST, TINY_LOGMEL, make_dataset, store_arrays
from pipeline.data.manifest import load_clips
from pipeline.features.config import ExtractConfig
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import StoreError, meta_dir
from pipeline.features.store_inspect import verify
from pipeline.fusion.data import check_inputs, read_clip
from stages.extract import run_extract
from stages.fuse import check_manifest

app = typer.Typer()
extract_cli.register(app)
CONFIG, REQUEST = REPAIR_CONFIG, REPAIR_REQUEST


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Two train clips and one val clip, and a clean store of them (copied by each test)."""
    root = tmp_path_factory.mktemp("root")
    make_dataset(root, n_clips=2, n_frames=12)
    manifests = make_dataset(root, n_clips=1, n_frames=12, split="val", first=2)
    assert run_extract(CONFIG, manifests, root / "clean.zarr").ok
    return manifests, root / "clean.zarr"


@pytest.fixture
def store(clean, tmp_path):
    path = tmp_path / "f.zarr"
    shutil.copytree(clean[1], path)
    shutil.copytree(meta_dir(clean[1]), meta_dir(path))  # the run reports
    return path


def _root(store) -> dict:
    return json.loads((store / "zarr.json").read_text(encoding="utf-8"))


def _repaired(store, clean, manifests, via_cli=False) -> None:
    """The root ends byte-equal to the clean store's, and every reader works as on it."""
    if via_cli:  # CONFIG as options: the same extractor descriptions
        extracted = CliRunner().invoke(app, [
            "extract", "--manifests", str(manifests), "--store", str(store), "-e", "test_mean_colour",
            "-e", "logmel", *(f"--set=configs.logmel.{k}={v}" for k, v in TINY_LOGMEL.items()),
            "--batch-size", "4", "--device", "cpu", "--precision", "fp32"])
        assert extracted.exit_code == 0, extracted.output
        assert f"rebuilt {store / 'zarr.json'} (missing) from the run reports" in extracted.output
        assert "nothing to do" in extracted.output  # no array was recomputed
    else:
        result = run_extract(CONFIG, manifests, store)
        assert result.ok and result.nothing_to_do and result.root_rebuilt
    assert (store / "zarr.json").read_bytes() == (clean / "zarr.json").read_bytes()
    assert _root(store)["attributes"] == _root(clean)["attributes"]
    assert list(verify(FeatureStore(store))) == []
    handle, clips = FeatureStore(store), load_clips(manifests)
    check_manifest(handle, clips, manifests)  # fuse's check of the feature digests
    dims = check_inputs(handle, clips, REQUEST)
    for clip in clips:
        read_clip(handle, clip, REQUEST, dims, train=True)
    expected, found = store_arrays(clean), store_arrays(store)
    assert set(found) == set(expected) and all(found[k].tobytes() == expected[k].tobytes() for k in expected)
    info = CliRunner().invoke(app, ["store", "info", str(store)])
    assert info.exit_code == 0 and "damaged: " not in info.output


@pytest.mark.parametrize("damage", ["garbled", "truncated", "deleted"])
def test_a_damaged_root_is_rebuilt_equal_to_a_clean_extraction(store, clean, damage):
    root_json = store / "zarr.json"
    if damage == "garbled":
        root_json.write_text("{ half a json")
    elif damage == "truncated":
        root_json.write_bytes(root_json.read_bytes()[:200])
    else:
        root_json.unlink()
    with pytest.raises(StoreError):  # what every reader meets until extract rebuilds it
        FeatureStore(store)
    _repaired(store, clean[1], clean[0], via_cli=damage == "deleted")


def test_without_reports_the_run_itself_describes_its_arrays(store, clean):
    shutil.rmtree(meta_dir(store) / "reports")
    (store / "zarr.json").write_text("[]")
    _repaired(store, clean[1], clean[0])


def test_clips_of_other_splits_are_named_and_nothing_is_written(store, clean):
    (store / "zarr.json").write_text("{ half a json")
    train_only = ExtractConfig(**{**CONFIG.__dict__, "splits": ["train"]})
    with pytest.raises(StoreError) as excinfo:
        run_extract(train_only, clean[0], store)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{store / 'zarr.json'}: not JSON")
    assert "feature digests of 1 clip(s)" in message and "'clip02'" in message
    assert "split(s) val: add them to --splits" in message and "new --store" in message
    assert (store / "zarr.json").read_text() == "{ half a json"
    _repaired(store, clean[1], clean[0])  # with every split, it is rebuilt


def test_arrays_no_report_describes_are_named_and_nothing_is_written(store, clean):
    handle = FeatureStore(store, "a")
    handle.write("clip00", "imported", np.ones((12, 3), np.float16), "hdf5-0123abcd", 10.0)
    (store / "zarr.json").unlink()
    with pytest.raises(StoreError) as excinfo:
        run_extract(CONFIG, clean[0], store)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{store / 'zarr.json'}: missing")
    assert "what wrote 1 array(s), e.g. clip00/imported (cache key hdf5-0123abcd: an import" in message
    assert not (store / "zarr.json").exists()

    shutil.rmtree(store / "clips" / "clip00" / "imported")
    shutil.rmtree(meta_dir(store) / "reports")  # and logmel's arrays: only test_mean_colour runs now
    colour_only = ExtractConfig(**{**CONFIG.__dict__, "extractors": ["test_mean_colour"]})
    with pytest.raises(StoreError, match=r"what wrote 3 array\(s\), e\.g\. clip00/logmel \(cache key "
                                         r"\w+: an extraction whose run report is gone\)"):
        run_extract(colour_only, clean[0], store)
    assert not (store / "zarr.json").exists()
