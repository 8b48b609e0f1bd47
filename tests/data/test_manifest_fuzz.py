"""Fuzzing the manifest reader (issue 37): a mutated manifest is read, or refused with one line
that names the file and the line; never a traceback, a raw numpy/MemoryError, or a write outside
the output folder.

Two levels: the reader itself under hypothesis (hundreds of mutations: a field set to any JSON
value, a field removed, bytes flipped, inserted or cut), and the ``extract`` and ``fuse`` commands
on a few seeded mutations each, with every file under the test's folder compared before and after.
"""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli.main import main
from pipeline.data.manifest import Clip, load_clips, write_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

FIELDS = ["clip_id", "split", "video_id", "n_frames", "fps", "frames_dir", "video_path",
          "audio_path", "labels", "au_labels", "au_split", "exclude_from"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from([".", "..", "a/b", "/abs", "train", "val"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12)


def _clips():
    au = np.zeros((6, 12), np.int8)
    au[:2] = -1
    return [Clip("c0", "train", "v0", 6, 25.0, "/f/c0", "/v/v0.mp4", "/v/v0.mp4",
                 np.array([0, 0, 1, 1, -1, 2], np.int8), au, "train", ("au_val",)),
            Clip("c1_left", "train", "v1", 4, 30.0, None, None, None, np.zeros(4, np.int8))]


def _one_line_naming(error: BaseException, path: Path) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:"), message
    assert len(message) < 500, message


def _read(folder: Path, path: Path) -> None:
    try:
        clips = load_clips(folder)
    except ValueError as e:  # the reader's one error type
        _one_line_naming(e, path)
    else:  # what was accepted is a clip every stage can use, not a silently odd one
        from pipeline.data.clip_ids import name_problem

        for c in clips:
            assert isinstance(c, Clip) and name_problem(c.clip_id) is None
            assert isinstance(c.n_frames, int) and c.n_frames >= 0
            assert isinstance(c.fps, (int, float)) and c.fps > 0 and np.isfinite(c.fps)
            assert all(isinstance(getattr(c, k), (str, type(None)))
                       for k in ("frames_dir", "video_path", "audio_path"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.integers(0, 1), field=st.sampled_from(FIELDS), value=JSON, drop=st.booleans())
@example(line=0, field="labels", value=[[300, 6]], drop=False)  # int8 overflow
@example(line=0, field="labels", value=[[0, 10**12]], drop=False)  # a terabyte of labels
@example(line=0, field="fps", value="fast", drop=False)
@example(line=1, field="n_frames", value=-4, drop=False)
@example(line=0, field="video_path", value=7, drop=False)
def test_a_field_set_to_any_json_value_is_read_or_named(tmp_path_factory, line, field, value, drop):
    folder = tmp_path_factory.mktemp("m")
    path = folder / "train.jsonl"
    write_manifest(path, _clips())
    lines = path.read_text().splitlines()
    record = json.loads(lines[line])
    if drop:
        record.pop(field, None)
    else:
        record[field] = value
    lines[line] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    _read(folder, path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_inserted_or_cut_bytes_are_read_or_named(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("m")
    path = folder / "train.jsonl"
    write_manifest(path, _clips())
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        kind = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if kind == "flip" and at < len(raw):
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=6))
        else:
            del raw[at:]
    path.write_bytes(bytes(raw))
    _read(folder, path)


def _files(root: Path, out: Path) -> dict[str, bytes]:
    """Every file under ``root`` outside ``out`` (the command's output folder), by content."""
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and out not in p.parents and p != out}


def _mutate(text: str, rng: random.Random) -> str:
    record = json.loads(text.splitlines()[0])
    field = rng.choice(FIELDS)
    record[field] = rng.choice([".", "..", "a/b", "/abs", -1, 1e308, float("nan"), [], {},
                                [[9, 6]], [[0, 10**12]], "x" * 300, None, True])
    return json.dumps(record) + "\n"


@pytest.mark.parametrize("seed", range(6))
def test_extract_on_a_mutated_manifest_is_one_line_and_writes_only_its_store(tmp_path, capsys, seed):
    from extract_fixtures import make_dataset

    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=6, missing=())
    path = manifests / "train.jsonl"
    path.write_text(_mutate(path.read_text(), random.Random(seed)))
    store = tmp_path / "out" / "store.zarr"
    before = _files(tmp_path, tmp_path / "out")
    code = main(["extract", "--manifests", str(manifests), "--store", str(store), "-e", "logmel",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert _files(tmp_path, tmp_path / "out") == before
    assert "Traceback" not in err
    if code != 0:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert str(path) in errors[0] or "no such file" in errors[0].lower(), errors[0]


@pytest.mark.parametrize("seed", range(4))
def test_fuse_on_a_mutated_manifest_is_one_line_and_writes_only_its_runs(tmp_path, capsys, seed):
    from fusion.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", splits={"train": 2, "val": 1}, frames=40)
    path = data.manifests / "val.jsonl"
    path.write_text(_mutate(path.read_text(), random.Random(100 + seed)))
    before = _files(tmp_path, tmp_path / "runs")
    code = main(["fuse", "--store", str(data.store), "--manifests", str(data.manifests),
                 "--out", str(tmp_path / "runs"), "--method", "image", "--set", "train.epochs=1"])
    err = capsys.readouterr().err
    assert _files(tmp_path, tmp_path / "runs") == before
    assert "Traceback" not in err
    if code != 0:  # some mutations are valid records (a path set to null)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and (str(path) in errors[0] or "val00" in errors[0]), err
