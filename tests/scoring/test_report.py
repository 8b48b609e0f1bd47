"""The HTML report: one portable file (every PNG embedded and decoding, the same PNGs beside it),
per-class precision, recall and support checked against scikit-learn, absent classes marked,
integer epoch ticks, validation loss, timelines."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from pipeline.scoring.crossfit import Row
from pipeline.metrics.scores import score
from pipeline.runs.record import RunInfo, RunRecord
from pipeline.scoring.report import ReportData, write_report


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
        RunInfo("runA", RunRecord.from_json({
            "outputs": ["fusion", "image"],
            "history": [{"epoch": e, "train_loss": 1 / (e + 1), "examples": 900,
                         "val_macro_f1": {"fusion": e / 10, "image": e / 20}} for e in range(4)]})),
        RunInfo("prop run", RunRecord.from_json({
            "outputs": ["fusion"], "history": [],
            "grid": {"m": [1, 2, 3, 4, 5], "n": [1, 2, 3, 4, 5],
                     "macro_f1": rng.random((5, 5)).tolist(), "best": [2, 3]}})),
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
    embedded = _embedded(page)
    pngs = sorted(p.name for p in html_path.parent.glob("*.png"))
    assert sorted(embedded) == pngs  # every PNG embedded, and the same files lie beside the page
    assert {"confusion.png", "per_class_f1.png", "class_distribution.png", "curves_runA.png",
            "grid_prop_run.png"} == set(pngs)
    for name in pngs:
        assert embedded[name] == (html_path.parent / name).read_bytes()
        with Image.open(io.BytesIO(embedded[name])) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] > 100
    assert 'src="' not in page.replace('src="data:image/png;base64,', "")  # no outside file
    assert "&lt;odd&gt; &amp; name" in page and "<odd>" not in page
    assert "Anger +0.2" in page and "val-crossfit" in page
    for row in data.rows:
        assert f"{row.scores.macro_f1:.4f}" in page


def _embedded(page: str) -> dict[str, bytes]:
    """PNG bytes of every image of the page by its title (the PNG's file name)."""
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" title="([^"]+)"',
                       page)
    assert len(found) == page.count("<img ")
    return {title: base64.b64decode(data) for data, title in found}


def test_history_series_flatten_per_output_values():
    from pipeline.runs.plots import _series

    series = _series([{"epoch": 1, "train_loss": 0.5, "val_macro_f1": {"fusion": 0.2}},
                      {"epoch": 2, "train_loss": 0.4, "val_macro_f1": {"fusion": 0.3}}])
    assert series == {"train_loss": [(1, 0.5), (2, 0.4)], "val_macro_f1 fusion": [(1, 0.2), (2, 0.3)]}


def test_report_without_runs_or_counts_still_has_table_and_confusion(tmp_path):
    rng = np.random.default_rng(1)
    data = ReportData(split="val", rows=_rows(rng), final="runA/main", runs=[],
                      class_counts={}, tuning={"protocol": "same", "tuned_on_scored_frames": True})
    page = write_report(tmp_path, data).read_text()
    assert "optimistic" in page
    assert sorted(_embedded(page)) == ["confusion.png", "per_class_f1.png"]


def test_class_table_matches_scikit_learn_and_marks_absent_classes(tmp_path):
    from sklearn.metrics import precision_recall_fscore_support

    from pipeline.scoring.report import class_table

    rng = np.random.default_rng(2)
    truth = rng.choice([0, 1, 2, 4, 5, 6], 400)  # Fear (3) and Other (7) absent
    pred = np.where(rng.random(400) < 0.4, rng.integers(0, 8, 400), truth)
    pred[:5] = 3  # Fear predicted, never true
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, labels=range(8), zero_division=0)
    table = class_table(score(truth, pred).confusion)
    for c, (name, p, r, f, n) in enumerate(table):
        assert n == support[c]
        if c in (3, 7):
            assert (p, r, f) == (None, None, None)
        else:
            np.testing.assert_allclose((p, r, f), (precision[c], recall[c], f1[c]))
    rows = [Row("ensemble", "pipeline", "val-crossfit", score(truth, pred))]
    page = write_report(tmp_path, ReportData("val", rows, "ensemble", [], {},
                                             {"protocol": "same"})).read_text()
    fear_row = re.search(r"<tr><td>Fear</td>(.*?)</tr>", page).group(1)
    assert fear_row.count('class="absent">absent') == 3 and "<td>0</td>" in fear_row
    happy_row = re.search(r"<tr><td>Happiness</td>(.*?)</tr>", page).group(1)
    assert f"<td>{precision[4]:.3f}</td><td>{recall[4]:.3f}</td>" in happy_row


def test_curves_have_integer_epochs_and_validation_loss(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from pipeline.runs import plots as report

    drawn = []
    monkeypatch.setattr(report, "save_figure",
                        lambda figure, path: drawn.append(figure) or path.name)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": {"fusion": 2 / e},
                "val_macro_f1": {"fusion": e / 10}} for e in range(1, 4)]
    assert report.plot_history(history, "run", tmp_path / "c.png") == "c.png"
    figure: Figure = drawn[0]
    figure.canvas.draw()
    losses, scores = figure.axes
    assert [line.get_label() for line in losses.get_lines()] == ["train_loss", "val_loss fusion"]
    for ax in (losses, scores):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_timelines_are_drawn_for_the_given_clips(tmp_path):
    from pipeline.scoring.report import Timeline

    rng = np.random.default_rng(3)
    rows = _rows(rng)
    labels = np.repeat([0, 4, -1, 6], 25)
    timelines = [Timeline("clip_a", np.repeat([0, 4, 4, 6], 25), labels),
                 Timeline("clip_b", rng.integers(0, 8, 60), rng.integers(-1, 8, 60))]
    page = write_report(tmp_path, ReportData("val", rows, "ensemble", [], {},
                                             {"protocol": "same"}, timelines=timelines)).read_text()
    assert "<h2>Timelines</h2>" in page and "timelines.png" in _embedded(page)
    with Image.open(tmp_path / "timelines.png") as image:
        assert image.size[1] > image.size[0] / 4  # one panel per clip


def test_report_shows_what_rows_were_fitted_on_and_their_interval(tmp_path):
    from pipeline.scoring.bootstrap import Interval

    rows = _rows(np.random.default_rng(2))
    rows[-1].interval = Interval(rows[-1].scores.macro_f1, 0.1234, 0.9876, 0.9, 100)
    data = ReportData(split="val", rows=rows, final="ensemble", runs=[], class_counts={},
                      tuning={"protocol": "val-crossfit"})
    page = write_report(tmp_path, data).read_text()
    assert "<th>fitted on</th>" in page and "<th>90% CI</th>" in page
    assert "0.1234-0.9876" in page and "val (same frames)" in page


def test_attention_maps_of_a_run_are_drawn_in_the_report(tmp_path):
    from pipeline.runs.attention import read_attention
    from pipeline.runs.layout import ATTENTION_FILE

    rng = np.random.default_rng(4)
    run = tmp_path / "dan"
    run.mkdir()
    spatial = rng.random((3, 4, 7, 7)).astype(np.float32)  # 3 frames, 4 heads, a 7x7 map
    np.savez(run / ATTENTION_FILE, spatial=spatial, channel=rng.random((3, 4, 16)),
             probs=rng.dirichlet(np.ones(8), 3).astype(np.float32), labels=np.array([4, -1, 0]),
             clip_ids=np.array(["v1", "v2", "v3"]), frames=np.array([10, 3, 7]))
    np.testing.assert_array_equal(read_attention(run / ATTENTION_FILE)["spatial"], spatial)
    runs = [RunInfo("dan", RunRecord(outputs=("main",)), run / ATTENTION_FILE)]
    page = write_report(tmp_path / "out", ReportData("val", _rows(rng), "ensemble", runs, {},
                                                     {"protocol": "same"})).read_text()
    assert "<h2>Attention: dan</h2>" in page
    with Image.open(io.BytesIO(_embedded(page)["attention_dan.png"])) as image:
        assert image.size[0] > image.size[1] / 2  # four heads side by side, three rows


def test_an_unusable_attention_file_is_one_line(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.runs.attention import read_attention

    bad = tmp_path / "attention.npz"
    np.savez(bad, spatial=np.zeros((2, 7, 7)))
    with pytest.raises(PipelineError, match="attention.npz: not an attention file"):
        read_attention(bad)
    bad.write_bytes(b"garbage")
    with pytest.raises(PipelineError, match="attention.npz: unreadable attention file"):
        read_attention(bad)
