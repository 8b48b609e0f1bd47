"""Imports and exports that round-trip: ``store import`` reads ``store export``'s layout by
itself, hop-rate imports keep their own clock (xarray opens the whole store; heads read them per
frame, interpolated), and AU-only clips can be imported."""

import warnings

import h5py
import numpy as np
import pytest

from cli.main import main
from pipeline.data.labels import NUM_AUS
from pipeline.data.manifest import AU_ONLY, Clip, load_clips, write_manifest
from pipeline.errors import PipelineError
from pipeline.features.hdf5 import ImportOptions, import_hdf5
from pipeline.features.hdf5_export import export_hdf5
from pipeline.features.store import FeatureStore
from pipeline.fusion.data import FeatureRequest, check_inputs, read_clip

FPS = 10.0
LENGTHS = {"a": 7, "b": 5}


def _clips():
    return [Clip(cid, "train", cid, n, FPS, None, None, "audio.mp4", np.zeros(n, np.int8))
            for cid, n in LENGTHS.items()]


def _au_only_clip():
    n = 6
    return Clip("c_au", "train", "c", n, FPS, None, None, "audio.mp4", None,
                au_labels=np.zeros((n, NUM_AUS), np.int8), au_split="train")


@pytest.fixture
def manifests(tmp_path):
    out = tmp_path / "manifests"
    write_manifest(out / "train.jsonl", _clips())
    write_manifest(out / f"{AU_ONLY}.jsonl", [_au_only_clip()])
    return out


@pytest.fixture
def extracted(tmp_path):
    store = FeatureStore(tmp_path / "src.zarr", "a")
    rng = np.random.default_rng(0)
    for clip in _clips():
        n = clip.n_frames
        store.ensure_clip(clip.clip_id, n, FPS, {"has_audio": True})
        store.write(clip.clip_id, "swin", rng.standard_normal((n, 6)).astype(np.float16), "swin-k", FPS)
        store.write(clip.clip_id, "logmel", rng.standard_normal((3 * n, 4)).astype(np.float32),
                    "mel-k", 3 * FPS)
        store.write(clip.clip_id, "valid", np.ones(n, bool), "valid-1", FPS)
    return store


def _open_datatree(path):
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (consolidated metadata: not this test's subject)
        return xr.open_datatree(path, engine="zarr", consolidated=False)


def test_an_export_imports_back_without_path_or_rate(extracted, manifests, tmp_path):
    out = tmp_path / "x.h5"
    export_hdf5(extracted.path, out, load_clips(manifests), arrays=["swin", "logmel"])
    clips = load_clips(manifests)
    target = tmp_path / "dst.zarr"
    for name in ("swin", "logmel"):  # named like the exported arrays: each finds its own
        result = import_hdf5(out, target, clips, ImportOptions(name=name))
        assert not result.failed and not result.missing, result
        assert result.path == f"{{clip}}/{name}"
    imported = FeatureStore(target)
    for clip in clips:
        for name in ("swin", "logmel"):
            np.testing.assert_array_equal(imported.read(clip.clip_id, name),
                                          extracted.read(clip.clip_id, name))
            assert imported.rate(clip.clip_id, name) == extracted.rate(clip.clip_id, name)
    tree = _open_datatree(target)  # the whole store: video and own-rate rows side by side
    a = tree["clips/a"]
    assert a["swin"].dims == ("frame", "swin_feature") and a.sizes["frame"] == 7
    assert a["logmel"].dims == ("logmel_frame", "logmel_feature") and a.sizes["logmel_frame"] == 21
    np.testing.assert_allclose(a["logmel_time"].values, np.arange(21) / (3 * FPS))


def test_an_export_of_several_arrays_needs_a_choice(extracted, manifests, tmp_path):
    out = tmp_path / "x.h5"
    export_hdf5(extracted.path, out, load_clips(manifests), arrays=["swin", "logmel"])
    with pytest.raises(PipelineError, match=r"arrays logmel, swin: choose one with --path"):
        import_hdf5(out, tmp_path / "dst.zarr", load_clips(manifests), ImportOptions(name="mine"))
    result = import_hdf5(out, tmp_path / "dst.zarr", load_clips(manifests),
                         ImportOptions(name="mine", path="{clip}/swin"))
    assert sorted(result.written) == ["a", "b"]


def test_a_hop_import_at_the_video_rate_keeps_its_own_clock(manifests, tmp_path):
    """hop = 1/fps with a row count other than the frames': it used to get dimension ``frame``
    and the clip's ``time``, and xarray refused the whole store ("conflicting sizes")."""
    rng = np.random.default_rng(1)
    rows = {"a": 8, "b": 4}  # the clips have 7 and 5 frames; within the 0.5 s tolerance
    data = {cid: rng.standard_normal((k, 3)).astype(np.float32) for cid, k in rows.items()}
    source = tmp_path / "speech.h5"
    with h5py.File(source, "w") as h5:
        for cid, rows_ in data.items():
            h5.create_dataset(cid, data=rows_)
    clips = load_clips(manifests)
    store_path = tmp_path / "s.zarr"
    store = FeatureStore(store_path, "a")
    for clip in clips:  # the store already has per-frame arrays, as after `extract`
        store.ensure_clip(clip.clip_id, clip.n_frames, FPS, {"has_audio": True})
        store.write(clip.clip_id, "swin", np.zeros((clip.n_frames, 2), np.float16), "k", FPS)
        store.write(clip.clip_id, "valid", np.ones(clip.n_frames, bool), "valid-1", FPS)
    result = import_hdf5(source, store_path, clips, ImportOptions(name="speech", hop=1 / FPS))
    assert sorted(result.written) == ["a", "b"] and not result.failed

    tree = _open_datatree(store_path)
    a = tree["clips/a"]
    assert a["speech"].dims == ("speech_frame", "speech_feature") and a.sizes["speech_frame"] == 8
    assert a.sizes["frame"] == 7

    # A head asking for it per frame (the audio head's `head.audio`) reads it interpolated.
    request = FeatureRequest(arrays=("speech",), audio=("speech",))
    dims = check_inputs(store, clips, request)
    for clip in clips:
        per_frame = read_clip(store, clip, request, dims, train=False).arrays["speech"]
        assert per_frame.shape == (clip.n_frames, 3)
        times = np.arange(clip.n_frames) / FPS
        row_times = np.arange(rows[clip.clip_id]) * (1 / FPS)
        for k in range(3):  # reference: numpy's own linear interpolation
            np.testing.assert_allclose(per_frame[:, k],
                                       np.interp(times, row_times, data[clip.clip_id][:, k]),
                                       rtol=1e-6, atol=1e-6)


def test_store_import_reaches_au_only_clips(manifests, tmp_path, capsys):
    source = tmp_path / "f.h5"
    with h5py.File(source, "w") as h5:
        for clip in [*_clips(), _au_only_clip()]:
            h5.create_dataset(clip.clip_id, data=np.ones((clip.n_frames, 2), np.float32))
    store = tmp_path / "s.zarr"
    assert main(["store", "import", str(source), "--store", str(store), "--manifests",
                 str(manifests), "--name", "mine", "--splits", "au_only"]) == 0, capsys.readouterr()
    assert FeatureStore(store).clip_ids() == ["c_au"]
    assert main(["store", "import", str(source), "--store", str(store), "--manifests",
                 str(manifests), "--name", "mine"]) == 0  # the default: every clip, AU-only too
    assert FeatureStore(store).clip_ids() == ["a", "b", "c_au"]
    assert main(["store", "import", str(source), "--store", str(store), "--manifests",
                 str(manifests), "--name", "mine", "--splits", "nope"]) == 1
    assert "choose from train, val, test, au_only" in capsys.readouterr().err
