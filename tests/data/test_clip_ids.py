"""Clip ids and store array names are one safe path component, checked where they enter: a
manifest line, ``store import --name``, ``faces``' video names, the dataset reader (issue 37;
the rule is in docs/trust.md)."""

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli.main import main
from pipeline.data.clip_ids import BadName, check_name, name_problem
from pipeline.data.manifest import Clip, load_clips, write_manifest
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.data.faces.config import FacesConfig
from stages.faces import find_videos, process_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

BAD = [".", "..", "a/b", "/abs", ".hidden", "-x", "a b", "", "a\\b", "x" * 201, "é"]
GOOD = ["10-60-1280x720_left", "video10_1", "_a", "a.b+c-d", "7"]


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_in_words(name):
    assert name_problem(name) is not None
    with pytest.raises(BadName) as error:
        check_name(name)
    assert "\n" not in str(error.value) and str(error.value).startswith("clip id ")


@pytest.mark.parametrize("name", GOOD)
def test_names_of_real_datasets_pass(name):
    assert name_problem(name) is None and check_name(name) == name


def _clip(clip_id="c0", n=4):
    return Clip(clip_id, "train", "v", n, 10.0, None, None, None, np.zeros(n, np.int8))


@pytest.mark.parametrize("clip_id", [".", "..", "a/b", "/abs"])
def test_a_manifest_line_with_a_bad_id_is_named_by_file_and_line(tmp_path, clip_id):
    path = tmp_path / "m" / "train.jsonl"
    write_manifest(path, [_clip("c0"), _clip("c1")])
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["clip_id"] = clip_id
    path.write_text(lines[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError) as error:
        load_clips(tmp_path / "m")
    assert str(error.value).startswith(f"{path}:2: not a clip record (clip id {clip_id!r}")
    with pytest.raises(ValueError):
        _clip(clip_id)  # and no code can build one


def _extract(tmp_path, clip_id, capsys):
    from extract_fixtures import make_dataset

    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=6, missing=())
    path = manifests / "train.jsonl"
    record = json.loads(path.read_text())
    record["clip_id"] = clip_id
    path.write_text(json.dumps(record) + "\n")
    store = tmp_path / "store.zarr"
    code = main(["extract", "--manifests", str(manifests), "--store", str(store),
                 "-e", "logmel", "--device", "cpu"])
    return code, capsys.readouterr().err, store


@pytest.mark.parametrize("clip_id", [".", "..", "a/b"])
def test_extract_refuses_a_bad_id_before_writing_anything(tmp_path, clip_id, capsys):
    code, err, store = _extract(tmp_path, clip_id, capsys)
    assert code == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert f"train.jsonl:1: not a clip record (clip id {clip_id!r}" in err
    assert not store.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_store_refuses_a_bad_id_too(tmp_path):
    store = FeatureStore(tmp_path / "s.zarr", "a")
    with pytest.raises(PipelineError, match=r"clip id '\.' starts with a dot"):
        store.ensure_clip(".", 4, 10.0)
    assert store.clip_ids() == []


def test_store_import_name_dotdot_leaves_no_stray_folder(tmp_path, capsys):
    manifests = tmp_path / "m"
    write_manifest(manifests / "train.jsonl", [_clip("a", 3)])
    store = FeatureStore(tmp_path / "s.zarr", "a")
    store.ensure_clip("a", 3, 10.0)
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        h5.create_dataset("a", data=np.ones((3, 2), np.float32))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for name in ("..", ".", ".hidden", "a b"):
        code = main(["store", "import", str(tmp_path / "f.h5"), "--store", str(store.path),
                     "--manifests", str(manifests), "--name", name])
        err = capsys.readouterr().err
        assert code == 1 and err.count("error:") == 1 and f"--name {name!r}" in err, err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_faces_skips_a_video_whose_name_is_no_clip_id(tmp_path):
    (tmp_path / "...mp4").write_bytes(b"")
    assert find_videos([tmp_path]) == [tmp_path / "...mp4"]  # found, then skipped alone
    outcome = process_video(str(tmp_path / "...mp4"), str(tmp_path / "out"), FacesConfig())
    assert outcome.status == "skipped"
    assert outcome.reason.startswith(f"{tmp_path / '...mp4'}: clip name '..' starts with a dot: rename")
    assert not (tmp_path / "out" / "cropped_aligned").exists()
