"""Stage one in-process: array contents, reuse, exact recomputation on config and weights changes,
bad input, and the ``extract`` / ``store`` commands."""

import json

import numpy as np
import pytest
import torch
import typer
import zarr
from typer.testing import CliRunner

from cli import extract as extract_cli
from extract_fixtures import TINY_LOGMEL, TINY_TDNN, MeanColour, make_dataset, store_arrays
from pipeline.data.manifest import load_clips
from pipeline.data.media import decode_audio, read_image
from pipeline.errors import PipelineError
from pipeline.features.audio_windows import fill_strided, frame_windows, strided_indices
from pipeline.features.store import FeatureStore
from pipeline.features.store_inspect import verify
from pipeline.features.config import ExtractConfig
from pipeline.features.plan import build_extractors
from stages.extract import run_extract

EXTRACTORS = ["test_mean_colour", "logmel", "tdnn"]

# The commands of this group alone (the root app imports every group).
app = typer.Typer()
extract_cli.register(app)


def _config(**kwargs):
    kwargs.setdefault("extractors", list(EXTRACTORS))
    kwargs.setdefault("configs", {"tdnn": dict(TINY_TDNN), "logmel": dict(TINY_LOGMEL)})
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("audio_stride", 3)
    kwargs.setdefault("device", "cpu")
    return ExtractConfig(**kwargs)


@pytest.fixture(autouse=True)
def _reset_counters():
    MeanColour.loads = 0
    MeanColour.batches = []
    MeanColour.preprocess_threads = set()
    MeanColour.forward_threads = set()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three clips of 20 frames at 10 and 12.5 fps (frame 3 missing); clip01 has no audio."""
    root = tmp_path_factory.mktemp("data")
    manifests = make_dataset(root, n_clips=2, n_frames=20, fps=10.0, audio=[True, False])
    make_dataset(root, n_clips=1, n_frames=20, fps=12.5, split="val", first=2)
    return manifests


def _mtimes(path):
    return {p: p.stat().st_mtime_ns for p in (path / "clips").rglob("*") if p.is_file()}


def test_arrays_match_the_extractors_run_directly(dataset, tmp_path):
    config = _config()
    result = run_extract(config, dataset, tmp_path / "f.zarr")
    clips = {c.clip_id: c for c in load_clips(dataset)}
    assert (result.clips, result.clips_done, result.clips_without_audio) == (3, 3, 1)
    assert result.ok and not result.skipped and not result.nothing_to_do
    assert result.arrays_written == 3 * 5  # mean colour, logmel, two tdnn windows, valid
    assert result.frames == 60 and result.frames_per_second > 0
    assert set(result.random_weights) >= {"test_mean_colour", "tdnn"}

    store = FeatureStore(tmp_path / "f.zarr")
    extractors = build_extractors(config)
    colour, logmel, tdnn = (extractors[n] for n in EXTRACTORS)
    for clip_id, clip in clips.items():
        valid = store.read(clip_id, "valid")
        assert valid.dtype == bool and valid.tolist() == [i != 3 for i in range(20)]
        feats = store.read(clip_id, "test_mean_colour")
        assert feats.dtype == np.float16 and feats.shape == (20, 6)
        assert not feats[3].any()  # no face: zeros
        frames = torch.stack([colour.preprocess(read_image(clip.frame_path(i))) for i in range(20) if i != 3])
        expected = colour.forward(frames)["test_mean_colour"].numpy().astype(np.float16)
        np.testing.assert_array_equal(feats[valid], expected)
        assert store.rate(clip_id, "test_mean_colour") == clip.fps

        mel = store.read(clip_id, "logmel")
        has_audio = clip.audio_path is not None
        assert store.clip_attrs(clip_id)["has_audio"] is has_audio
        dtype = np.dtype(logmel.outputs()["logmel"].dtype)
        if not has_audio:
            assert mel.shape == (0, 16) and mel.dtype == dtype
            for w in (4, 8):
                assert not store.read(clip_id, f"tdnn_w{w}").any()
            continue
        wave = decode_audio(clip.audio_path, 16000)
        np.testing.assert_array_equal(mel, logmel.compute(wave).astype(dtype))
        assert store.rate(clip_id, "logmel") == pytest.approx(16000 / 256)
        front = tdnn.compute_frontend(wave)
        indices = strided_indices(20, 3)
        for w in (4, 8):
            windows = frame_windows(front, tdnn.frontend.frame_rate, 20, clip.fps, w, indices)
            values = tdnn.embed(torch.from_numpy(windows)).numpy()
            stored = store.read(clip_id, f"tdnn_w{w}")
            assert stored.dtype == np.float16 and stored.shape == (20, 8)
            np.testing.assert_allclose(stored.astype(np.float32),
                                       fill_strided(values, indices, 20), rtol=2e-3, atol=2e-3)

    described = store.extractors()
    assert described["tdnn"]["cache_key"] == tdnn.cache_key and described["tdnn"]["audio_stride"] == 3
    assert described["test_mean_colour"]["random_weights"] is True
    report = json.loads(open(result.report).read())
    assert report["result"]["clips_done"] == 3 and report["config"]["audio_stride"] == 3


def test_batches_span_clips_and_loading_is_off_the_model_thread(dataset, tmp_path):
    run_extract(_config(extractors=["test_mean_colour"], batch_size=16), dataset, tmp_path / "f.zarr")
    # 3 clips x 19 frames with a face = 57 rows: 4 batches of 16 (the last padded), not 3 x 2.
    assert MeanColour.batches == [16, 16, 16, 16]
    assert MeanColour.preprocess_threads and not MeanColour.preprocess_threads & MeanColour.forward_threads


def test_a_second_run_builds_no_model_and_changes_nothing(dataset, tmp_path):
    store = tmp_path / "f.zarr"
    run_extract(_config(), dataset, store)
    before, arrays = _mtimes(store), store_arrays(store)
    MeanColour.loads = 0
    again = run_extract(_config(), dataset, store)
    assert again.nothing_to_do and again.arrays_written == 0 and again.arrays_reused == 15
    assert again.clips_reused == 3 and MeanColour.loads == 0 and again.seconds == 0
    assert _mtimes(store) == before
    assert store_arrays(store).keys() == arrays.keys()


def test_config_change_recomputes_only_that_extractor(dataset, tmp_path):
    store = tmp_path / "f.zarr"
    run_extract(_config(), dataset, store)
    before = _mtimes(store)
    old = store_arrays(store)
    changed = _config(configs={"tdnn": dict(TINY_TDNN), "logmel": dict(TINY_LOGMEL),
                               "test_mean_colour": {"scale": 2.0}})
    result = run_extract(changed, dataset, store)
    assert result.arrays_written == 3 and result.arrays_reused == 12
    new = store_arrays(store)
    for (clip, name), data in new.items():
        if name == "test_mean_colour":
            np.testing.assert_array_equal(data, (old[clip, name].astype(np.float32) * 2).astype(np.float16))
    touched = {p.relative_to(store).parts[2] for p, t in _mtimes(store).items() if before.get(p) != t}
    assert touched == {"test_mean_colour"}


def test_audio_stride_change_recomputes_only_the_embeddings(dataset, tmp_path):
    store = tmp_path / "f.zarr"
    run_extract(_config(), dataset, store)
    result = run_extract(_config(audio_stride=1), dataset, store)
    assert result.arrays_written == 3 * 2 and result.arrays_reused == 3 * 3


def test_weights_file_change_recomputes_only_that_extractor(dataset, tmp_path):
    weights = tmp_path / "colour.pt"
    torch.save({"scale": torch.tensor(1.0)}, weights)
    store = tmp_path / "f.zarr"
    config = _config(weights={"test_mean_colour": str(weights)})
    first = run_extract(config, dataset, store)
    assert "test_mean_colour" not in first.random_weights
    old = store_arrays(store)
    assert run_extract(config, dataset, store).nothing_to_do
    torch.save({"scale": torch.tensor(3.0)}, weights)
    result = run_extract(config, dataset, store)
    assert result.arrays_written == 3 and result.arrays_reused == 12
    new = store_arrays(store)
    np.testing.assert_allclose(new["clip00", "test_mean_colour"].astype(np.float32),
                               old["clip00", "test_mean_colour"].astype(np.float32) * 3, rtol=2e-3)
    assert all(np.array_equal(new[k], old[k]) for k in old if k[1] != "test_mean_colour")


@pytest.mark.parametrize("damage", ["same-size bytes, full check", "deleted chunk"])
def test_a_corrupt_or_unmarked_array_is_recomputed_and_nothing_else(dataset, tmp_path, damage):
    store_path = tmp_path / "f.zarr"
    run_extract(_config(), dataset, store_path)
    clean = store_arrays(store_path)
    chunk = next(p for p in (store_path / "clips" / "clip00" / "tdnn_w4" / "c").rglob("*") if p.is_file())
    if damage == "deleted chunk":  # the default plan sees it (recorded chunk sizes)
        chunk.unlink()
        config = _config()
    else:  # only reading can tell: verify_existing re-reads (a reader's note would do too)
        chunk.write_bytes(b"\1" * chunk.stat().st_size)
        config = _config(verify_existing=True)
    del zarr.open_array(str(store_path / "clips" / "clip02" / "valid"), mode="a").attrs["complete"]
    result = run_extract(config, dataset, store_path)
    assert result.clips_done == 2 and result.arrays_written == 2 + 1  # tdnn's two windows; valid
    assert all(np.array_equal(v, clean[k]) for k, v in store_arrays(store_path).items())


def test_bad_input_skips_the_clip_with_file_and_reason(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=4, n_frames=16)
    (tmp_path / "frames" / "clip00" / "00005.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "frames" / "clip01" / "00002.jpg").write_bytes(b"")
    (tmp_path / "videos" / "clip02.mp4").unlink()
    result = run_extract(_config(), manifests, tmp_path / "f.zarr")
    assert not result.ok and result.clips_done == 1
    skipped = {s.clip_id: s for s in result.skipped}
    assert set(skipped) == {"clip00", "clip01", "clip02"}
    assert skipped["clip00"].file.endswith("clip00/00005.jpg") and "undecodable" in skipped["clip00"].reason
    assert skipped["clip01"].file.endswith("clip01/00002.jpg")
    assert skipped["clip02"].file.endswith("clip02.mp4") and skipped["clip02"].reason
    store = FeatureStore(tmp_path / "f.zarr")
    for clip_id in skipped:  # nothing of a skipped clip is marked complete
        names = store.array_names(clip_id) if clip_id in store.clip_ids() else []
        assert all(store.marker(clip_id, n) is None for n in names)
    assert not list(verify(store, ["clip03"]))
    report = json.loads(open(result.report).read())
    assert {s["clip_id"] for s in report["result"]["skipped"]} == set(skipped)
    assert run_extract(_config(allow_skips=True), manifests, tmp_path / "f.zarr").ok


def test_extract_command_exit_codes_and_summary(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=2, n_frames=16)
    (tmp_path / "frames" / "clip00" / "00002.jpg").write_bytes(b"")
    args = ["extract", "--manifests", str(manifests), "--store", str(tmp_path / "f.zarr"),
            "-e", "test_mean_colour", "-e", "logmel", "--set", "configs.logmel.n_mels=16",
            "--batch-size", "4", "--device", "cpu"]
    runner = CliRunner()
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "clip00" in failed.output and "00002.jpg" in failed.output
    assert "RANDOM WEIGHTS" in failed.output and "--allow-skips" in failed.output
    allowed = runner.invoke(app, [*args, "--allow-skips"])
    assert allowed.exit_code == 0, allowed.output
    (tmp_path / "frames" / "clip00" / "00002.jpg").unlink()  # now simply a frame without a face
    fixed = runner.invoke(app, args)
    assert fixed.exit_code == 0, fixed.output
    assert "computed" in fixed.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_extract_command_reads_a_config_file_and_rejects_unknown_extractors(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=1, n_frames=16)
    config = tmp_path / "extract.toml"
    config.write_text('extractors = ["test_mean_colour"]\nbatch_size = 4\ndevice = "cpu"\n'
                      '[configs.test_mean_colour]\nscale = 0.5\n')
    runner = CliRunner()
    ok = runner.invoke(app, ["extract", "--manifests", str(manifests), "--store", str(tmp_path / "f.zarr"),
                             "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert FeatureStore(tmp_path / "f.zarr").extractors()["test_mean_colour"]["config"]["scale"] == 0.5
    with pytest.raises(PipelineError, match="unknown extractor 'nope'"):
        build_extractors(_config(extractors=["nope"]))


def test_store_info_and_verify_commands(dataset, tmp_path):
    store = tmp_path / "f.zarr"
    run_extract(_config(), dataset, store)
    runner = CliRunner()
    info = runner.invoke(app, ["store", "info", str(store)])
    assert info.exit_code == 0, info.output
    for text in ("3 clips", "tdnn_w8", "test_mean_colour", "float16", "RANDOM"):
        assert text in info.output
    assert runner.invoke(app, ["store", "verify", str(store)]).exit_code == 0
    chunk = next(p for p in (store / "clips" / "clip00" / "test_mean_colour" / "c").rglob("*") if p.is_file())
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0x55
    chunk.write_bytes(bytes(raw))
    del zarr.open_array(str(store / "clips" / "clip01" / "logmel"), mode="a").attrs["complete"]
    bad = runner.invoke(app, ["store", "verify", str(store)])
    assert bad.exit_code == 1
    assert "clip00/test_mean_colour" in bad.output and "clip01/logmel" in bad.output
    assert "2 incomplete or corrupt" in bad.output


def test_clips_with_au_labels_only_are_extracted_too(tmp_path):
    import dataclasses

    from pipeline.data.manifest import write_manifest

    manifests = make_dataset(tmp_path, n_clips=1, n_frames=12)
    other = make_dataset(tmp_path / "au", n_clips=1, n_frames=12, first=1)
    (clip,) = load_clips(other)
    au_only = dataclasses.replace(clip, labels=None, au_labels=np.zeros((12, 12), np.int8),
                                  au_split="train")
    write_manifest(manifests / "au_only.jsonl", [au_only])
    result = run_extract(_config(extractors=["test_mean_colour"]), manifests, tmp_path / "f.zarr")
    assert result.clips == 2 and sorted(FeatureStore(tmp_path / "f.zarr").clip_ids()) == [
        "clip00", "clip01"]
