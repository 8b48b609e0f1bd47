"""HDF5 import and export: round trips, frame-number alignment, bad input, unchanged re-imports."""

import json
import shutil

import h5py
import numpy as np
import pytest

from pipeline.data.manifest import Clip, load_clips, write_manifest
from pipeline.errors import PipelineError
from pipeline.features.hdf5 import (
    IMPORT_KIND,
    IMPORT_VALID_KEY,
    ImportOptions,
    import_hdf5,
)
from pipeline.features.hdf5_export import export_hdf5
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import checksum, mask_name
from pipeline.features.store_inspect import verify
from pipeline.fusion.data import FeatureRequest, check_inputs, feature_keys, read_clip

FPS = 30.0
LENGTHS = {"a": 7, "b_left": 5, "b_right": 5}
SPLITS = {"a": "train", "b_left": "val", "b_right": "val"}


def _clips():
    return [Clip(cid, SPLITS[cid], cid.split("_")[0], n, FPS, None, None,
                 None if cid == "b_right" else "audio.mp4", np.zeros(n, np.int8))
            for cid, n in LENGTHS.items()]


@pytest.fixture
def manifests(tmp_path):
    out = tmp_path / "manifests"
    for split in ("train", "val"):
        write_manifest(out / f"{split}.jsonl", [c for c in _clips() if c.split == split])
    return out


@pytest.fixture
def extracted(tmp_path):
    """A store as extraction leaves it: float16 image features, float32 audio rows, valid."""
    store = FeatureStore(tmp_path / "src.zarr", "a")
    rng = np.random.default_rng(0)
    for clip in _clips():
        n = clip.n_frames
        store.ensure_clip(clip.clip_id, n, FPS, {"has_audio": clip.audio_path is not None})
        store.write(clip.clip_id, "swin", rng.standard_normal((n, 6)).astype(np.float16), "swin-k", FPS)
        store.write(clip.clip_id, "logmel", rng.standard_normal((3 * n, 4)).astype(np.float32),
                    "mel-k", 3 * FPS)
        store.write(clip.clip_id, "valid", rng.random(n) > 0.3, "valid-1", FPS)
    store.record_extractors({"swin": {"name": "swin", "kind": "image", "outputs": {"swin": {}}},
                             "logmel": {"name": "logmel", "kind": "audio", "outputs": {"logmel": {}}}})
    return store


def _mtimes(store):
    """Modification times of every file of the store's clips (metadata and chunks)."""
    return {p: p.stat().st_mtime_ns for p in (store.path / "clips").rglob("*") if p.is_file()}


def _write_h5(path, datasets):
    with h5py.File(path, "w") as h5:
        for name, data in datasets.items():
            h5.create_dataset(name, data=data)
    return path


def test_export_then_import_round_trips_bit_for_bit(extracted, manifests, tmp_path):
    out = tmp_path / "features.h5"
    result = export_hdf5(extracted.path, out, load_clips(manifests), compression="gzip")
    assert result.clips == 3 and set(result.arrays) == {"swin", "logmel", "valid"}
    with h5py.File(out) as h5:
        group = h5["b_left"]
        assert group.attrs["fps"] == FPS and group.attrs["n_frames"] == 5 and group.attrs["split"] == "val"
        assert group["swin"].compression == "gzip"
        assert group["swin"].attrs["rate"] == FPS and group["logmel"].attrs["rate"] == 3 * FPS
        assert json.loads(group["swin"].attrs["description"])["kind"] == "image"
        np.testing.assert_array_equal(group["valid"][()], extracted.read("b_left", "valid"))

    target = tmp_path / "dst.zarr"
    clips = load_clips(manifests)
    imported = import_hdf5(out, target, clips, ImportOptions("myswin", path="{clip}/swin"))
    assert sorted(imported.written) == sorted(LENGTHS) and not imported.failed
    import_hdf5(out, target, clips, ImportOptions("mel", path="{clip}/logmel", hop=1 / (3 * FPS)))
    store = FeatureStore(target)
    for cid in LENGTHS:
        for src, dst in (("swin", "myswin"), ("logmel", "mel")):
            original, copy = extracted.read(cid, src), store.read(cid, dst)
            assert copy.dtype == original.dtype and copy.tobytes() == original.tobytes()
        assert store.rate(cid, "mel") == pytest.approx(3 * FPS)
        assert store.read(cid, mask_name("myswin")).all()
        assert store.marker(cid, "valid")["cache_key"] == IMPORT_VALID_KEY
    assert list(verify(store)) == []
    record = store.extractors()["myswin"]
    assert record["kind"] == IMPORT_KIND and record["source"] == str(out.resolve())
    assert record["outputs"].keys() == {"myswin", "myswin_valid"}


def test_export_streams_chosen_arrays_of_chosen_splits_and_lzf(extracted, manifests, tmp_path):
    out = tmp_path / "val.h5"
    export_hdf5(extracted.path, out, load_clips(manifests, ["val"]), ["swin"], compression="lzf")
    with h5py.File(out) as h5:
        assert sorted(h5) == ["b_left", "b_right"]
        assert sorted(h5["b_left"]) == ["swin", "valid"]
        assert h5["b_left/swin"].compression == "lzf"
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
    with pytest.raises(PipelineError, match="no array 'nope'"):
        export_hdf5(extracted.path, tmp_path / "x.h5", None, ["nope"])
    assert not (tmp_path / "x.h5").exists()


def test_frame_numbers_align_rows_to_their_frames(manifests, tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3, 4)).astype(np.float32)
    frames = np.array([2, 3, 7])  # 1-based; frames 1, 4, 5, 6 had no face
    file = _write_h5(tmp_path / "f.h5", {"feat/a": rows, "num/a": frames,
                                          "feat/b_left": rows[:2], "num/b_left": np.array([5.0, 1.0])})
    store_path = tmp_path / "s.zarr"
    result = import_hdf5(file, store_path, load_clips(manifests),
                         ImportOptions("face", path="feat/{clip}", frames_path="num/{clip}"))
    assert result.written == ["a", "b_left"] and result.missing == ["b_right"]
    store = FeatureStore(store_path)
    expected = np.zeros((7, 4), np.float32)
    expected[[1, 2, 6]] = rows
    np.testing.assert_array_equal(store.read("a", "face"), expected)
    np.testing.assert_array_equal(store.read("a", "face_valid"), [0, 1, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(store.read("b_left", "face")[[4, 0]], rows[:2])
    assert list(verify(store)) == []
    assert {"face", "face_valid", "valid", "time"} <= set(store.recorded_arrays("a"))

    # Usable by the heads: check_inputs and feature_keys accept it, and frames the file lacked
    # count as frames without a face.
    clip = load_clips(manifests, ["train"])[0]
    request = FeatureRequest(arrays=("face",))
    dims = check_inputs(store, [clip], request)
    assert dims == {"face": (4,)}
    assert feature_keys(store, "a", request)["face"].startswith("hdf5-")
    part = read_clip(store, clip, request, dims, train=True)
    np.testing.assert_array_equal(part.valid, [0, 1, 1, 0, 0, 0, 1])


def _good(n):
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3)


@pytest.mark.parametrize("datasets, options, reason", [
    ({"a": _good(6)}, {}, "6 rows for the clip's 7 frames"),
    ({"a": np.where(np.eye(7, 3) > 0, np.nan, _good(7))}, {}, "NaN or inf in row 0"),
    ({"a": np.full((7, 3), np.inf)}, {}, "NaN or inf in row 0"),
    ({"a": np.full((7, 3), 1e6)}, {"dtype": "float16"}, "beyond the float16 range in row 0"),
    ({"a": np.ones((7, 3), np.int32)}, {}, "dtype int32: need floating point"),
    ({"a": np.ones(7, np.float32)}, {}, "rank 1"),
    ({"a": np.ones((7, 3), np.float32), "f/a": np.array([1, 2, 2, 3, 4, 5, 6])},
     {"frames_path": "f/{clip}"}, "frame number 2 appears more than once"),
    ({"a": np.ones((2, 3), np.float32), "f/a": np.array([0, 1])},
     {"frames_path": "f/{clip}"}, "frame number 0 outside 1..7"),
    ({"a": np.ones((2, 3), np.float32)}, {"frames_path": "f/{clip}"}, "no such dataset"),
    ({"a": np.ones((300, 3), np.float32)}, {"hop": 0.01}, "300 rows of 0.01 s span 3.00 s"),
])
def test_bad_dataset_is_one_line_and_writes_nothing(extracted, manifests, tmp_path, datasets, options,
                                                    reason):
    good = {"b_left": _good(5), "f/b_left": np.arange(1, 6)}
    file = _write_h5(tmp_path / "bad.h5", {**datasets, **good})
    before = _mtimes(extracted)
    result = import_hdf5(file, extracted.path, load_clips(manifests), ImportOptions("x", **options))
    assert result.written == ["b_left"] and result.missing == ["b_right"]
    (bad,) = result.failed
    line = str(bad)
    assert "\n" not in line and str(file) in line and reason in line
    assert bad.dataset in ("a", "f/a")
    assert "x" not in extracted.array_names("a")
    assert all(_mtimes(extracted).get(p) == t for p, t in before.items() if "/a/" in str(p))
    assert list(verify(extracted)) == []


def test_unreadable_file_strict_and_clashing_name_fail_before_writing(extracted, manifests, tmp_path):
    clips = load_clips(manifests)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(PipelineError, match="junk.h5: not a readable HDF5 file"):
        import_hdf5(junk, extracted.path, clips, ImportOptions("x"))
    file = _write_h5(tmp_path / "part.h5", {"a": _good(7)})
    before = _mtimes(extracted)
    with pytest.raises(PipelineError, match=r"for 2 clip\(s\) of the manifests, e.g. b_left, b_right"):
        import_hdf5(file, extracted.path, clips, ImportOptions("x"), strict=True)
    with pytest.raises(PipelineError, match="array 'swin' belongs to image 'swin'"):
        import_hdf5(file, extracted.path, clips, ImportOptions("swin"))
    with pytest.raises(PipelineError, match="bad pattern"):
        import_hdf5(file, extracted.path, clips, ImportOptions("x", path="{clip_id}"))
    assert _mtimes(extracted) == before
    assert list(verify(extracted)) == []


def test_reimport_of_unchanged_file_writes_nothing_and_a_changed_dataset_only_its_clip(
        extracted, manifests, tmp_path):
    clips = load_clips(manifests)
    datasets = {"a": _good(7), "b_left": _good(5), "b_right": _good(5) + 1}
    file = _write_h5(tmp_path / "f.h5", datasets)
    options = ImportOptions("mine")
    assert len(import_hdf5(file, extracted.path, clips, options).written) == 3
    root_attrs = (extracted.path / "zarr.json").stat().st_mtime_ns
    before = _mtimes(extracted)
    again = import_hdf5(file, extracted.path, clips, options)
    assert again.written == [] and sorted(again.unchanged) == sorted(LENGTHS)
    assert _mtimes(extracted) == before
    assert (extracted.path / "zarr.json").stat().st_mtime_ns == root_attrs

    datasets["b_left"] = _good(5) * 2
    _write_h5(file, datasets)  # the same file, rewritten with one dataset changed
    keys = {c: extracted.marker(c, "mine")["cache_key"] for c in LENGTHS}
    changed = import_hdf5(file, extracted.path, clips, options)
    assert changed.written == ["b_left"]
    after = _mtimes(extracted)
    assert {p for p in after if after[p] != before.get(p)} <= {
        p for p in after if "/b_left/mine" in str(p)}
    assert extracted.marker("b_left", "mine")["cache_key"] != keys["b_left"]
    assert extracted.marker("a", "mine")["cache_key"] == keys["a"]
    np.testing.assert_array_equal(extracted.read("b_left", "mine"), _good(5) * 2)
    # The extractor's face flags are kept (the import only adds a valid where there is none).
    assert extracted.marker("a", "valid")["cache_key"] == "valid-1"
    assert checksum(extracted.read("a", "mine")) == extracted.marker("a", "mine")["sha256"]
    assert list(verify(extracted)) == []


def test_cli_export_then_import_and_a_bad_dataset_exits_1(extracted, manifests, tmp_path, capsys):
    from cli.main import main

    out = tmp_path / "val.h5"
    assert main(["store", "export", str(extracted.path), str(out), "--arrays", "swin",
                 "--splits", "val", "--manifests", str(manifests), "--compression", "lzf"]) == 0
    target = tmp_path / "dst.zarr"
    args = ["store", "import", str(out), "--store", str(target), "--manifests", str(manifests),
            "--name", "face", "--path", "{clip}/swin", "--splits", "val"]
    assert main(args) == 0
    assert "b_left" in FeatureStore(target).clip_ids()
    np.testing.assert_array_equal(FeatureStore(target).read("b_right", "face"),
                                  extracted.read("b_right", "swin"))
    capsys.readouterr()
    assert main([*args[:-2], "--path", "{clip}/valid"]) == 1  # bool data: not features
    err = " ".join(capsys.readouterr().out.split())
    assert f"{out}: dataset /b_left/valid: dtype bool: need floating point features" in err
    assert main([*args[:-4], "--path", "features/{clip}"]) == 1  # a pattern that matches nothing
    assert "no dataset matches --path 'features/{clip}'" in " ".join(capsys.readouterr().err.split())


def test_the_clip_record_follows_imports_and_verify_expects_it(manifests, tmp_path):
    rows = np.random.default_rng(2).standard_normal((7, 4)).astype(np.float32)
    sparse = _write_h5(tmp_path / "sparse.h5", {"feat/a": rows[:3], "num/a": np.array([1, 2, 7])})
    store_path = tmp_path / "s.zarr"
    import_hdf5(sparse, store_path, load_clips(manifests),
                ImportOptions("face", path="feat/{clip}", frames_path="num/{clip}"))
    store = FeatureStore(store_path)
    assert "face_valid" in store.recorded_arrays("a")
    # Rows at their own rate this time: the stale mask is deleted and leaves the record, and the
    # rows' time coordinate joins it.
    hops = _write_h5(tmp_path / "hops.h5", {"feat/a": np.concatenate([rows, rows, rows])})
    import_hdf5(hops, store_path, load_clips(manifests),
                ImportOptions("face", path="feat/{clip}", hop=1 / (3 * FPS)))
    recorded = store.recorded_arrays("a")
    assert "face_valid" not in recorded and "face_time" in recorded and list(verify(store)) == []
    shutil.rmtree(store_path / "clips" / "a" / "face")
    assert [str(p) for p in verify(store)][0].startswith("a/face: missing")
