"""``fer-pipeline export``: tidy per-frame rows that other tools read back, and npz files that
name their class columns."""

import builtins
import csv
import json

import numpy as np
import pytest

from cli.main import main
from pipeline.data.labels import CLASSES
from pipeline.data.manifest import load_clips
from pipeline.runs.predictions import Predictions, PredictionWriter
from scoring.test_ensemble_stage import _clips, _run
from stages.export import export_predictions

COLUMNS = ["clip", "index", "frame", "time", "face", *CLASSES, "label"]


@pytest.fixture()
def run(tmp_path):
    rng = np.random.default_rng(1)
    clips = _clips(tmp_path, rng)
    run = _run(tmp_path, "mfm", ["fusion", "image"], clips, rng)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "primary": "fusion"}))
    (run / "config.toml").write_text(f'method = "mfm"\nmanifests = "{tmp_path / "manifests"}"\n')
    return run, tmp_path / "manifests"


def _expected(run, manifests, split, output):
    probs = Predictions(run / "predictions" / split / f"{output}.npz")
    faces = Predictions(run / "predictions" / split / "face_mask.npz")
    return load_clips(manifests, [split]), probs, faces


def test_npz_files_name_their_columns(tmp_path):
    path = tmp_path / "p.npz"
    with PredictionWriter(path) as writer:
        writer.add("a", np.full((3, 8), 0.125))
    assert list(np.load(path)["__classes__"]) == list(CLASSES)  # what another tool sees
    predictions = Predictions(path)
    assert list(predictions) == ["a"] and len(predictions) == 1
    assert predictions.classes == CLASSES


def test_csv_rows_read_back_with_the_csv_module(run, capsys, tmp_path, monkeypatch):
    run_dir, manifests = run
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["export", str(run_dir), "--format", "csv"]) == 0  # manifests from config.toml
    path = tmp_path / "elsewhere" / "mfm.val.fusion.csv"  # the current directory, not the run's
    assert f"{path.name}: " in capsys.readouterr().out
    assert not list((run_dir / "predictions").rglob("*.csv"))
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS
    clips, probs, faces = _expected(run_dir, manifests, "val", "fusion")
    assert len(rows) - 1 == sum(c.n_frames for c in clips)
    body = iter(rows[1:])
    for clip in clips:
        got = [next(body) for _ in range(clip.n_frames)]
        assert {r[0] for r in got} == {clip.clip_id}
        assert [int(r[1]) for r in got] == list(range(clip.n_frames))
        assert [int(r[2]) for r in got] == list(range(1, clip.n_frames + 1))  # 1-based frames
        np.testing.assert_allclose([float(r[3]) for r in got], np.arange(clip.n_frames) / clip.fps,
                                   atol=1e-6)
        assert [r[4] == "1" for r in got] == list(faces[clip.clip_id])
        np.testing.assert_allclose([[float(v) for v in r[5:13]] for r in got], probs[clip.clip_id],
                                   rtol=1e-5)
        assert [int(r[13]) for r in got] == list(clip.labels)


def test_test_split_has_empty_labels_and_other_outputs_can_be_chosen(run, tmp_path):
    run_dir, manifests = run
    result = export_predictions(run_dir, "csv", "test", output="image", out=tmp_path / "t.csv",
                                manifests=manifests)
    with open(result.path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert result.output == "image" and result.rows == len(rows)
    assert {r["label"] for r in rows} == {""}


def test_parquet_rows(run, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    run_dir, manifests = run
    result = export_predictions(run_dir, "parquet", "val", out=tmp_path / "p.parquet")
    table = pq.read_table(result.path)
    assert table.column_names == COLUMNS
    clips, probs, faces = _expected(run_dir, manifests, "val", "fusion")
    assert table.num_rows == sum(c.n_frames for c in clips)
    first = clips[0]
    rows = table.slice(0, first.n_frames).to_pydict()
    np.testing.assert_array_equal(np.column_stack([rows[c] for c in CLASSES]),
                                  probs[first.clip_id])
    assert rows["label"] == list(first.labels) and rows["face"] == list(faces[first.clip_id])
    assert rows["index"] == list(range(first.n_frames))
    assert rows["frame"] == list(range(1, first.n_frames + 1))
    provenance = json.loads(pq.read_schema(result.path).metadata[b"fer_pipeline"])
    assert provenance["run"] == str(run_dir.resolve()) and provenance["output"] == "fusion"
    assert provenance["split"] == "val" and provenance["manifests"] == str(manifests.resolve())
    assert 'method = "mfm"' in provenance["config_toml"]


def test_parquet_without_pyarrow_is_one_line(run, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert main(["export", str(run[0]), "--format", "parquet"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--format parquet needs the pyarrow package (pip install pyarrow)" in err


@pytest.mark.parametrize("args, message", [
    (["--output", "audio"], "no output 'audio' (outputs: fusion, image)"),
    (["--split", "dev"], "--split 'dev': not one of train, val, test"),
    (["--split", "train", "--manifests", "nowhere"], "no such manifest directory"),
])
def test_bad_options_are_one_line(run, capsys, args, message):
    assert main(["export", str(run[0]), "--format", "csv", *args]) == 1
    assert message in " ".join(capsys.readouterr().err.split())


def test_the_ensembles_final_probabilities_export_and_score_as_scores_json_says(tmp_path, capsys):
    """An ensemble folder exports its final per-frame probabilities; their argmax over the
    labelled frames gives the macro-F1 of scores.json (sklearn as the reference)."""
    from sklearn.metrics import f1_score

    from pipeline.scoring.ensemble import EnsembleConfig
    from stages.ensemble import run_ensemble

    rng = np.random.default_rng(0)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "image", ["main"], clips, rng),
            _run(tmp_path, "mfm", ["fusion", "image", "audio"], clips, rng)]
    out = tmp_path / "scores"
    run_ensemble(runs, tmp_path / "manifests", out, EnsembleConfig(windows=(1, 5, 11)))
    record = json.loads((out / "scores.json").read_text())
    assert main(["export", str(out), "--format", "csv", "--manifests", str(tmp_path / "manifests"),
                 "--out", str(tmp_path / "final.csv")]) == 0
    with open(tmp_path / "final.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(c.n_frames for c in clips["val"])
    labelled = [r for r in rows if int(r["label"]) >= 0]
    predicted = [int(np.argmax([float(r[c]) for c in CLASSES])) for r in labelled]
    truth = [int(r["label"]) for r in labelled]
    reference = f1_score(truth, predicted, average="macro", labels=range(len(CLASSES)),
                         zero_division=0)
    assert reference == pytest.approx(record["macro_f1"], abs=1e-9)
    assert main(["export", str(out), "--format", "csv"]) == 1  # needs the manifests
    assert "needs --manifests" in capsys.readouterr().err


@pytest.mark.parametrize("smooth", ["mean", "median"])
def test_the_test_clips_final_probabilities_export_and_agree_with_the_submission(tmp_path, smooth):
    """Issue 31: stage three writes the test clips' final probabilities beside submission.txt
    (the fit on all of val, fallback and biases kept), ``export --split test`` reads them, and
    their argmax is the submission's label on every frame."""
    from pipeline.scoring.ensemble import EnsembleConfig
    from stages.ensemble import run_ensemble

    rng = np.random.default_rng(2)  # a case whose fallback keeps a threshold (checked below)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "image", ["main"], clips, rng, strength=0.3),
            _run(tmp_path, "mfm", ["fusion", "audio"], clips, rng, strength=0.3)]
    out = tmp_path / "scores"
    config = EnsembleConfig(windows=(5, 9), smooth=smooth, fallback=True, nested=False,
                            selection="best", fallback_thresholds=(0.25, 0.3, 0.4))
    run_ensemble(runs, tmp_path / "manifests", out, config)
    applied = json.loads((out / "scores.json").read_text())["tuning"]["test"]["choices"]
    assert "fallback" in applied["steps"] and applied["fallback_threshold"] is not None
    assert main(["export", str(out), "--format", "csv", "--split", "test", "--manifests",
                 str(tmp_path / "manifests"), "--out", str(tmp_path / "test.csv")]) == 0
    with open(tmp_path / "test.csv", newline="") as f:
        exported = [(f"{r['clip']}/{int(r['frame']):05d}.jpg",
                     int(np.argmax([float(r[c]) for c in CLASSES]))) for r in csv.DictReader(f)]
    submitted = [(line.split(",")[0], int(line.split(",")[1]))
                 for line in (out / "submission.txt").read_text().splitlines()[1:]]
    assert len(exported) == sum(c.n_frames for c in clips["test"]) == len(submitted)
    assert exported == submitted
