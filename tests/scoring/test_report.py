"""The HTML report: every PNG it references lies beside it and decodes; every PNG is referenced."""

import re

import numpy as np
from PIL import Image

from pipeline.scoring.crossfit import Row
from pipeline.scoring.metrics import score
from pipeline.scoring.report import ReportData, RunInfo, write_report


def _rows(rng):
    truth = rng.integers(0, 8, 300)
    rows = []
    for name, kind, noise in [("runA/main", "member", 0.6), ("<odd> & name", "member", 0.8),
                              ("ensemble", "pipeline", 0.3)]:
        pred = np.where(rng.random(300) < noise, rng.integers(0, 8, 300), truth)
        rows.append(Row(name, kind, "val-crossfit" if kind != "member" else "val (same frames)",
                        score(truth, pred)))
    return rows


def test_report_pngs_decode_and_are_referenced(tmp_path):
    rng = np.random.default_rng(0)
    runs = [
        RunInfo("runA", {"history": [{"epoch": e, "train_loss": 1 / (e + 1), "examples": 900,
                                      "val_macro_f1": {"fusion": e / 10, "image": e / 20}}
                                     for e in range(4)]}),
        RunInfo("prop run", {"grid": {"m": [1, 2, 3, 4, 5], "n": [1, 2, 3, 4, 5],
                                      "macro_f1": rng.random((5, 5)).tolist(), "best": [2, 3]},
                             "history": []}),
    ]
    data = ReportData(
        split="val", rows=_rows(rng), final="ensemble", runs=runs,
        class_counts={"train": rng.integers(0, 100, 9), "val": rng.integers(0, 100, 9)},
        tuning={"protocol": "val-crossfit", "tuning_split": "val", "scored_split": "val",
                "tuned_on_scored_frames": False,
                "fits": [{"fold": 0, "tuning_clips": ["a", "b"], "scored_clips": ["c"],
                          "choices": {"combiner": "mean", "weights": {"runA/main": 1.0},
                                      "window": 11, "bias": {"Anger": 0.2, "Fear": 0.0}}}],
                "test": None},
        notes=["members: runA/main"],
    )
    html_path = write_report(tmp_path / "out", data)
    page = html_path.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    pngs = sorted(p.name for p in html_path.parent.glob("*.png"))
    assert sorted(sources) == pngs  # every PNG referenced, every reference a PNG beside it
    assert {"confusion.png", "per_class_f1.png", "class_distribution.png", "curves_runA.png",
            "grid_prop_run.png"} == set(pngs)
    for name in pngs:
        with Image.open(html_path.parent / name) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] > 100
    assert "&lt;odd&gt; &amp; name" in page and "<odd>" not in page
    assert "Anger +0.2" in page and "val-crossfit" in page
    for row in data.rows:
        assert f"{row.scores.macro_f1:.4f}" in page


def test_history_series_flatten_per_output_values():
    from pipeline.scoring.report import _series

    series = _series([{"epoch": 1, "train_loss": 0.5, "val_macro_f1": {"fusion": 0.2}},
                      {"epoch": 2, "train_loss": 0.4, "val_macro_f1": {"fusion": 0.3}}])
    assert series == {"train_loss": [(1, 0.5), (2, 0.4)], "val_macro_f1 fusion": [(1, 0.2), (2, 0.3)]}


def test_report_without_runs_or_counts_still_has_table_and_confusion(tmp_path):
    rng = np.random.default_rng(1)
    data = ReportData(split="val", rows=_rows(rng), final="runA/main", runs=[],
                      class_counts={}, tuning={"protocol": "same", "tuned_on_scored_frames": True})
    page = write_report(tmp_path, data).read_text()
    assert "optimistic" in page
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == ["confusion.png", "per_class_f1.png"]


def test_report_shows_what_rows_were_fitted_on_and_their_interval(tmp_path):
    from pipeline.scoring.bootstrap import Interval

    rows = _rows(np.random.default_rng(2))
    rows[-1].interval = Interval(rows[-1].scores.macro_f1, 0.1234, 0.9876, 0.9, 100)
    data = ReportData(split="val", rows=rows, final="ensemble", runs=[], class_counts={},
                      tuning={"protocol": "val-crossfit"})
    page = write_report(tmp_path, data).read_text()
    assert "<th>fitted on</th>" in page and "<th>90% CI</th>" in page
    assert "0.1234-0.9876" in page and "val (same frames)" in page
