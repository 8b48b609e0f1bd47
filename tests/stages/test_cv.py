"""``fer-pipeline cv``: folds of whole videos over train + val, heads and their ensemble per fold,
mean +- std, fold-by-fold resume, and the ensemble table's "fitted on" column."""

import json

import numpy as np
import pytest

from cli.main import main
from fusion.synthetic import make_dataset
from pipeline.data.manifest import load_clips

QUICK = ["--set", "train.epochs=2", "--set", "train.batch_size=32"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cv"), splits={"train": 6, "val": 3, "test": 1},
                        frames=40)


def _cv(data, out, *extra):
    return main(["cv", "--method", "image", "--method", "audio", "--store", str(data.store),
                 "--manifests", str(data.manifests), "--out", str(out), "--folds", "3", *QUICK,
                 *extra])


def test_cv_end_to_end_and_resumes_fold_by_fold(data, tmp_path, capsys):
    assert _cv(data, tmp_path) == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validation" in out and "mean +- std" in out and "image/main" in out
    record = json.loads((tmp_path / "cv.json").read_text())
    labelled = [c for c in load_clips(data.manifests) if c.split in ("train", "val")]
    fold_of = record["fold_of_clip"]
    assert sorted(fold_of) == sorted(c.clip_id for c in labelled)  # test clips are not in CV
    for f, fold in enumerate(record["folds"]):
        # every labelled clip is scored in exactly one fold, trained on in the others
        assert sorted(fold["val_clips"]) == sorted(c for c, k in fold_of.items() if k == f)
        assert fold["selected_on"] == {"image": "train-dev", "audio": "train-dev"}
        run = tmp_path / f"fold{f}" / "runs" / "image"
        metrics = json.loads((run / "metrics.json").read_text())
        assert set(metrics["dev_clips"]).isdisjoint(fold["val_clips"])
        assert sorted(metrics["splits"]["val"]) == sorted(fold["val_clips"])
        scores = json.loads((tmp_path / f"fold{f}" / "ensemble" / "scores.json").read_text())
        assert fold["rows"][scores["final"]] == scores["macro_f1"]
    stats = record["summary"]["image/main"]
    values = [fold["rows"]["image/main"] for fold in record["folds"]]
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert record["final"] in record["summary"]

    # a finished fold is not recomputed; a missing one is
    stamps = [(tmp_path / f"fold{f}" / "result.json").stat().st_mtime_ns for f in range(3)]
    (tmp_path / "fold1" / "result.json").unlink()
    (tmp_path / "fold1" / "runs" / "audio" / "metrics.json").unlink()
    assert _cv(data, tmp_path) == 0
    assert "(1 fold(s) trained now)" in " ".join(capsys.readouterr().out.split())
    assert (tmp_path / "fold0" / "result.json").stat().st_mtime_ns == stamps[0]
    again = json.loads((tmp_path / "cv.json").read_text())
    assert again["summary"] == json.loads(json.dumps(record["summary"]))
    # other folds in the same folder are refused in one line
    assert _cv(data, tmp_path, "--fold-seed", "5") == 1
    assert "holds a fold of other clips" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_cv_in_a_process_pool_matches_in_process(data, tmp_path, capsys):
    assert _cv(data, tmp_path / "a") == 0
    assert _cv(data, tmp_path / "b", "--scheduler", "processes:2") == 0
    a, b = (json.loads((tmp_path / x / "cv.json").read_text()) for x in "ab")
    assert a["summary"] == b["summary"]
