"""A run directory has one owner, its files agree, a full disk says so, and a run reads only the
manifests its store was extracted from (issue 14, items 3, 6 and 7)."""

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from extract_fixtures import make_dataset as make_media
from fusion.synthetic import make_dataset
from pipeline.config import load_toml
from pipeline.data.manifest import feature_digest, fingerprint, load_clips, write_manifest
from pipeline.errors import PipelineError
from pipeline.features.config import ExtractConfig
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import FuseConfig
from stages.extract import run_extract
from stages.fuse import check_manifest

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--method", "image", "--set", "train.patience=1000"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("owner"), splits={"train": 2, "val": 1},
                        frames=40)
    FeatureStore(data.store, "a").record_manifest({c.clip_id: feature_digest(c) for c in data.clips})
    return data


def _args(data, out, *extra):
    return ["fuse", "--store", str(data.store), "--manifests", str(data.manifests),
            "--out", str(out), *QUICK, *extra]


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow  # a second interpreter imports torch (about 10 s on 2 busy cores)
def test_second_fuse_into_one_run_directory_is_refused_and_files_agree(data, tmp_path, capsys):
    run = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *_args(data, tmp_path, "--name", "shared", "--seed",
                                                  "3", "--set", "train.epochs=100000")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run / "checkpoint.pt", first)
        first.send_signal(signal.SIGSTOP)  # holds the lock, writes nothing meanwhile
        code = main(_args(data, tmp_path, "--name", "shared", "--seed", "4",
                          "--set", "train.epochs=2"))
        err = " ".join(capsys.readouterr().err.split())
        assert code == 1
        assert f"run directory {run}: in use by pid {first.pid}" in err
        assert "fuse --store" in err and "Traceback" not in err
        assert load_toml(FuseConfig, run / "config.toml").seed == 3
        first.send_signal(signal.SIGKILL)  # the kernel frees the lock of a dead holder
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    # the killed run resumes (same identity, fewer epochs asked: it finishes at once)
    assert main(_args(data, tmp_path, "--name", "shared", "--seed", "3",
                      "--set", "train.epochs=1")) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    saved = load_toml(FuseConfig, run / "config.toml")
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved.seed == metrics["seed"] == checkpoint["config"]["seed"] == 3
    assert saved.train.epochs == checkpoint["config"]["train"]["epochs"] == 1


def test_interrupted_run_leaves_config_matching_its_checkpoint(data, tmp_path):
    from pipeline.fusion.config import build_config
    from stages.fuse import fuse

    def stop_after_first_epoch(event):
        if event.task == "epochs" and event.advance:
            raise KeyboardInterrupt

    config = build_config("image", data.store, data.manifests, sets=["train.epochs=5"], seed=7)
    with pytest.raises(KeyboardInterrupt):
        fuse(config, tmp_path, progress=stop_after_first_epoch)
    run = tmp_path / "image"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and not (run / "metrics.json").exists()
    assert load_toml(FuseConfig, run / "config.toml").seed == checkpoint["config"]["seed"] == 7
    # the lock went with the call: the same command resumes
    assert fuse(config, tmp_path).resumed_from == 1


def test_full_disk_during_fuse_names_the_directory(data, tmp_path, capsys, monkeypatch):
    real = Path.write_bytes

    def full(self, data_):
        if self.name == "checkpoint.pt.tmp":
            real(self, bytes(data_)[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data_)

    monkeypatch.setattr(Path, "write_bytes", full)
    code = main(_args(data, tmp_path, "--set", "train.epochs=1"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert f"no space left on {tmp_path / 'image'} (writing checkpoint.pt)" in err
    assert "unexpected pos" not in err
    assert not (tmp_path / "image" / "checkpoint.pt.tmp").exists()
    assert not (tmp_path / "image" / "checkpoint.pt").exists()


def _relabelled(data, tmp_path) -> Path:
    manifests = tmp_path / "relabelled"
    clips = load_clips(data.manifests)
    first = clips[0]
    labels = first.labels.copy()
    labels[:5] = (labels[:5] + 1) % 8
    clips[0] = dataclasses.replace(first, labels=labels)
    for split in ("train", "val"):
        write_manifest(manifests / f"{split}.jsonl", [c for c in clips if c.split == split])
    return manifests


def test_fuse_accepts_relabelled_manifests_and_refuses_other_frame_counts(data, tmp_path, capsys):
    """Labels are not features (issue 23, point 7): a label fix needs no re-extraction."""
    manifests = _relabelled(data, tmp_path)
    args = ["fuse", "--store", str(data.store), "--manifests", str(manifests),
            "--out", str(tmp_path), *QUICK, "--set", "train.epochs=1"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "image" / "metrics.json").read_text())
    # the run records the labels it read: another labelling is another fingerprint
    assert metrics["manifest_fingerprint"] == fingerprint(load_clips(manifests))
    assert metrics["manifest_fingerprint"] != fingerprint(load_clips(data.manifests))
    # ...and a run trained on one labelling does not resume or count as complete on another
    original = ["fuse", "--store", str(data.store), "--manifests", str(data.manifests),
                "--out", str(tmp_path), *QUICK, "--set", "train.epochs=1"]
    assert main(original) == 1
    assert "the manifests' labels differ" in " ".join(capsys.readouterr().err.split())
    # a frame count other than the store's is still refused
    longer = tmp_path / "longer"
    clips = load_clips(data.manifests)
    clips[0] = dataclasses.replace(clips[0], n_frames=clips[0].n_frames + 1,
                                   labels=np.r_[clips[0].labels, clips[0].labels[-1:]])
    for split in ("train", "val"):
        write_manifest(longer / f"{split}.jsonl", [c for c in clips if c.split == split])
    assert main([*args[:4], str(longer), *args[5:], "--name", "longer"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{longer}: not the manifests {data.store} was extracted from" in err
    assert f"1 clip(s) differ in frame count, fps or media, e.g. {clips[0].clip_id}" in err
    assert "--allow-manifest-mismatch" in err


def test_extract_records_the_manifest_and_fuse_checks_it(tmp_path):
    manifests = make_media(tmp_path, n_clips=2, n_frames=6)
    store_path = tmp_path / "f.zarr"
    run_extract(ExtractConfig(extractors=["test_mean_colour"], device="cpu"), manifests, store_path)
    store = FeatureStore(store_path)
    clips = load_clips(manifests)
    assert store.feature_digests() == {c.clip_id: feature_digest(c) for c in clips}
    check_manifest(store, clips, manifests)  # the same manifest passes
    relabelled = [dataclasses.replace(c, labels=np.full(c.n_frames, 3, np.int8)) for c in clips]
    check_manifest(store, relabelled, manifests)  # so does another labelling
    faster = [dataclasses.replace(c, fps=c.fps * 2) for c in clips]
    with pytest.raises(PipelineError, match="2 clip\\(s\\) differ in frame count, fps or media"):
        check_manifest(store, faster, manifests)
    # extracting again with the new manifest recomputes the clips and records it
    write_manifest(manifests / "train.jsonl", faster)
    again = run_extract(ExtractConfig(extractors=["test_mean_colour"], device="cpu"), manifests,
                        store_path)
    assert again.clips_done == 2
    check_manifest(FeatureStore(store_path), faster, manifests)

def test_a_store_with_label_digests_is_read_and_upgraded_by_extract(tmp_path):
    """Stores extracted before feature digests recorded ``manifest_digests`` (labels included):
    fuse still checks those; `extract` with the relabelled manifests recomputes nothing and
    records feature digests, after which the relabelled manifests are accepted."""
    import zarr

    from pipeline.data.manifest import clip_digest

    manifests = make_media(tmp_path, n_clips=2, n_frames=6)
    store_path = tmp_path / "f.zarr"
    config = ExtractConfig(extractors=["test_mean_colour"], device="cpu")
    run_extract(config, manifests, store_path)
    clips = load_clips(manifests)
    root = zarr.open_group(str(store_path), mode="a")  # what an old extract left
    del root.attrs["feature_digests"]
    root.attrs["manifest_digests"] = {c.clip_id: clip_digest(c) for c in clips}
    store = FeatureStore(store_path)
    check_manifest(store, clips, manifests)
    relabelled = [dataclasses.replace(c, labels=np.full(c.n_frames, 3, np.int8)) for c in clips]
    with pytest.raises(PipelineError, match=r"2 clip\(s\) differ in length or labels, e.g. clip00; "
                                            r"the store predates label-free digests\): rerun `extract`"):
        check_manifest(store, relabelled, manifests)
    write_manifest(manifests / "train.jsonl", relabelled)
    again = run_extract(config, manifests, store_path)
    assert again.arrays_written == 0 and again.clips_done == 0
    check_manifest(FeatureStore(store_path), relabelled, manifests)
