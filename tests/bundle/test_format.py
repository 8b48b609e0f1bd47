"""The pipeline folder's format: its version is checked first (a newer bundle is refused in one
line), every file is verified against the sha256 manifest, and members from different
extractions are refused."""

import json

import pytest

from cli.main import main
from pipeline.bundle import format as F
from pipeline.bundle.build import build_bundle
from pipeline.errors import PipelineError


def _bundle(tmp_path, version=F.FORMAT_VERSION):
    root = tmp_path / "pipe"
    (root / "heads" / "r").mkdir(parents=True)
    (root / F.BUNDLE_JSON).write_text(json.dumps({"format": F.FORMAT, "format_version": version}))
    (root / "heads" / "r" / "config.json").write_text("{}")
    F.write_manifest(root)
    return root


def test_a_bundle_of_this_version_opens(tmp_path):
    root, record = F.open_bundle(_bundle(tmp_path))
    assert record["format_version"] == F.FORMAT_VERSION
    assert set(F.verify(root)) == {F.BUNDLE_JSON, "heads/r/config.json"}


@pytest.mark.parametrize("version", [F.FORMAT_VERSION + 1, 0, "1", None])
def test_a_bundle_of_an_unknown_version_is_refused_in_one_line(tmp_path, capsys, version):
    root = _bundle(tmp_path, version)
    with pytest.raises(PipelineError, match="bundle format version") as error:
        F.open_bundle(root)
    assert "\n" not in str(error.value) and str(root / F.BUNDLE_JSON) in str(error.value)
    assert main(["predict", str(tmp_path), "--pipeline", str(root), "--out",
                 str(tmp_path / "out")]) == 1
    message = capsys.readouterr().err
    assert "bundle format version" in message and "newer fer-pipeline" in " ".join(message.split())


def test_a_changed_missing_or_added_file_is_refused(tmp_path):
    root = _bundle(tmp_path)
    (root / "heads" / "r" / "config.json").write_text('{"x": 1}')
    with pytest.raises(PipelineError, match="config.json: sha256 differs"):
        F.open_bundle(root)
    root = _bundle(tmp_path / "b")
    (root / "heads" / "r" / "extra.json").write_text("{}")
    with pytest.raises(PipelineError, match="extra.json: not in MANIFEST"):
        F.open_bundle(root)
    (root / "heads" / "r" / "extra.json").unlink()
    (root / "heads" / "r" / "config.json").unlink()
    with pytest.raises(PipelineError, match="config.json: listed in MANIFEST.sha256 but missing"):
        F.open_bundle(root)
    (root / F.MANIFEST).unlink()
    with pytest.raises(PipelineError, match="MANIFEST.sha256: missing"):
        F.open_bundle(root)


def _run(tmp_path, name, features):
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"method": name, "outputs": ["main"],
                                                  "features": features}))
    (run / "config.toml").write_text(f'method = "{name}"\nstore = "{tmp_path / "store"}"\n')
    return run


def test_members_from_different_extractions_are_refused(tmp_path):
    a = _run(tmp_path, "image", {"valid": "valid-1", "swin": "aaaa"})
    b = _run(tmp_path, "mfm", {"valid": "valid-1", "swin": "bbbb", "tdnn_w32": "cccc"})
    scores = tmp_path / "scores"
    scores.mkdir()
    choices = {"combiner": "mean", "rule": "mean", "weights": {"image/main": 1, "mfm/main": 1},
               "fill": "none", "smooth": "none", "window": 1,
               "bias": dict.fromkeys(["Neutral", "Anger", "Disgust", "Fear", "Happiness",
                                      "Sadness", "Surprise", "Other"], 0.0),
               "fallback_threshold": None, "steps": []}
    (scores / "scores.json").write_text(json.dumps({"members": ["image/main", "mfm/main"],
                                                    "tuning": {"test": {"choices": choices}}}))
    with pytest.raises(PipelineError, match="reads swin with cache key bbbb.*different extractions"):
        build_bundle([scores, a, b], tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()
    with pytest.raises(PipelineError, match="member run 'mfm' not given"):
        build_bundle([scores, a], tmp_path / "pipe")


def test_the_face_step_settings_travel_from_the_faces_record_to_predict(tmp_path):
    """Crops written by ``faces`` have a record per video; the bundle keeps its settings and
    predict runs the face step with them."""
    import types

    from pipeline.bundle.build import face_step
    from pipeline.data.manifest import Clip, write_manifest
    from stages.predict import faces_config

    data = tmp_path / "data"
    (data / "cropped_aligned" / "v1").mkdir(parents=True)
    (data / "faces").mkdir()
    settings = {"detector": "mtcnn", "min_face": 40.0, "thresholds": [0.5, 0.6, 0.6],
                "factor": 0.709, "size": 224, "scale": 1.25, "iou_min": 0.3, "max_gap": 5,
                "min_frames": 3, "jpeg_quality": 95}
    (data / "faces" / "v1.json").write_text(json.dumps(
        {"key": {"settings": settings, "weights": "sha256:abc"}}))
    write_manifest(tmp_path / "m" / "train.jsonl", [Clip(
        "v1", "train", "v1", 4, 25.0, str(data / "cropped_aligned" / "v1"), None, None,
        __import__("numpy").zeros(4, dtype="int8"))])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(f'manifests = "{tmp_path / "m"}"\n')
    step = face_step({"run": run})
    assert step["settings"] == settings and step["weights"] == "sha256:abc"
    config = faces_config(types.SimpleNamespace(record={"faces": step}), "inprocess")
    assert (config.size, config.scale, config.min_face) == (224, 1.25, 40.0)
    (data / "faces" / "v1.json").unlink()  # crops from elsewhere: no face step recorded
    assert face_step({"run": run}) is None
    assert faces_config(types.SimpleNamespace(record={"faces": None}), "inprocess").size == 112
