"""Stage three's provenance (issue 35): which extractors, weights and precision stand behind each
member, the command that remakes it, and the banner's lines; never an error for a store that
cannot be read."""

import json
import subprocess
from pathlib import Path

from pipeline.features.store import FeatureStore
from pipeline.runs.record import read_record
from stages.provenance import (git_commit, member_source, random_weight_extractors,
                               report_date, warnings)


def _store(path: Path) -> Path:
    FeatureStore(path, "a").record_extractors({
        "swin": {"name": "swin", "cache_key": "k-swin", "precision": "fp32",
                 "random_weights": False, "weights": "/w/swin.pth", "weights_sha256": "ab" * 32},
        "tdnn": {"name": "tdnn", "cache_key": "k-tdnn", "precision": "fp32",
                 "random_weights": True, "weights": None, "weights_sha256": None}})
    return path


def _run(root: Path, name: str, store: Path, features: dict) -> Path:
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(f'method = "mfm"\nstore = "{store}"\n'
                                     'manifests = "/data/my manifests"\n')
    (run / "metrics.json").write_text(json.dumps({"outputs": ["main"], "features": features}))
    return run


def test_only_the_extractors_a_run_read_are_its_sources(tmp_path):
    store = _store(tmp_path / "s.zarr")
    image = _run(tmp_path, "image", store, {"valid": "valid-1", "swin": "k-swin"})
    audio = _run(tmp_path, "audio", store, {"tdnn_w32": "k-tdnn-stride1"})
    image_source = member_source(image, read_record(image))
    assert [e["name"] for e in image_source.extractors] == ["swin"]
    assert image_source.extractors[0]["sha256"] == "ab" * 6
    assert random_weight_extractors([image_source]) == []  # tdnn is random, but not read
    assert image_source.store == str(store) and image_source.extract_reports == []
    reports = FeatureStore(store, "r").meta / "reports"  # where each `extract` run records itself
    reports.mkdir(parents=True)
    (reports / "extract-20261207T000000.000000Z.json").write_text("{}")
    audio_source = member_source(audio, read_record(audio))
    assert [Path(r).name for r in audio_source.extract_reports] == [
        "extract-20261207T000000.000000Z.json"]
    assert random_weight_extractors([image_source, audio_source]) == ["tdnn"]
    assert "RANDOM WEIGHTS" in warnings([audio_source], "fp32")[0]
    assert warnings([image_source], "fp32") == []
    # a command a shell runs as it is: the path with a space is quoted
    assert image_source.command.startswith("fer-pipeline fuse --method mfm --store ")
    assert "--manifests '/data/my manifests'" in image_source.command
    assert image_source.command.endswith(f"--name image --config {image / 'config.toml'}")


def test_an_unreadable_store_or_config_is_a_stated_problem(tmp_path):
    gone = _run(tmp_path, "gone", tmp_path / "missing.zarr", {"swin": "k"})
    source = member_source(gone, read_record(gone))
    assert source.extractors == [] and source.problem.startswith("its store cannot be read")
    (gone / "config.toml").write_text("not = [toml")
    source = member_source(gone, read_record(gone))
    assert source.command == "-" and source.problem.startswith("no readable config.toml")


def test_precision_lines_for_mixed_unknown_and_bf16():
    assert "different precisions" in warnings([], "bf16 + fp32")[0]
    assert warnings([], "unknown (a: why)") == [
        "precision: the members' feature precision is unknown (a: why)"]
    assert "bf16" in warnings([], "bf16")[0] and warnings([], "fp32") == []


def test_git_commit_of_a_checkout_and_of_no_checkout(tmp_path):
    assert git_commit(tmp_path) is None  # not a git checkout: no commit, no error
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a").write_text("1")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "a"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "a").write_text("2")
    assert git_commit(tmp_path) == f"{head} + uncommitted changes"


def test_the_date_follows_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert report_date() == "2023-11-14 22:13 UTC"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert report_date().endswith(" UTC") and report_date() != "2023-11-14 22:13 UTC"
