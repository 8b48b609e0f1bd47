"""The stage-three report: one self-contained HTML page (its PNG plots embedded as ``data:`` URIs,
so the file can be mailed or moved alone; the PNGs are also written beside it).

It shows a table of every run output and ensemble (macro-F1, accuracy, ABAW-2021 score), per-class
F1 bars, precision, recall, F1 and support per class of the final ensemble (a class with no frame
in the scored split is marked *absent*, not scored as F1 0: its F1 is undefined there, whatever
the macro-F1 counts), the confusion matrix of the final ensemble, a timeline of predicted and
true class for a few clips, the m,n grid heatmap of each proportional run
(its record's ``grid``), the training curves from each run's record's ``history``
(:func:`pipeline.runs.plots.plot_history`, the curve training draws too: training and validation
loss, validation macro-F1, on integer epochs), the attention maps of runs that saved them
(:mod:`pipeline.scoring.attention`), the class distribution per split and what each tuned choice
was fitted on. Plots are drawn with the
object API of matplotlib on the Agg canvas (no pyplot, no global backend state); matplotlib is
imported only when a plot is drawn, so importing this module (and ``fer-pipeline --help``) stays
cheap. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, NUM_CLASSES
from pipeline import io
from pipeline.runs.plots import new_figure, plot_history, save_figure
from pipeline.runs.record import RunInfo
from pipeline.scoring.attention import plot_attention
from pipeline.scoring.crossfit import Row

MAX_F1_SERIES = 6  # per-class F1 bars: the final ensemble and at most this many rows in all
ABSENT = "absent"  # shown for a class with no frame in the scored split


@dataclass
class ReportData:
    """Everything the report shows; built by the ensemble stage."""

    split: str  # the scored split
    rows: list[Row]  # members, ensembles, pipeline steps; scores on `split`
    final: str  # name of the row the headline scores come from
    runs: list[RunInfo]  # the run directories (curves, m,n grids)
    class_counts: dict[str, np.ndarray]  # split -> int [9]: frames per class, then unannotated
    tuning: dict  # the tuning record of scores.json
    notes: list[str] = field(default_factory=list)  # lines shown under the title
    timelines: list["Timeline"] = field(default_factory=list)  # a few clips, frame by frame


@dataclass
class Timeline:
    """One clip's final predicted and true class per frame (for the timeline plot)."""

    clip_id: str
    predicted: np.ndarray  # int [T]
    labels: np.ndarray  # int [T], -1 = not annotated


def class_table(confusion: np.ndarray) -> list[tuple[str, float | None, float | None,
                                                     float | None, int]]:
    """(class, precision, recall, F1, support) per class from a confusion matrix (rows = truth).
    Precision, recall and F1 are None for a class with no true frame (absent); precision is 0
    for a present class never predicted."""
    confusion = np.asarray(confusion, dtype=np.int64)
    hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    table = []
    for c, name in enumerate(CLASSES):
        if support[c] == 0:
            table.append((name, None, None, None, 0))
            continue
        precision = hits[c] / predicted[c] if predicted[c] else 0.0
        recall = hits[c] / support[c]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table.append((name, float(precision), float(recall), float(f1), int(support[c])))
    return table


def _present(confusion: np.ndarray) -> np.ndarray:
    """bool [8]: the classes with at least one true frame."""
    return np.asarray(confusion).sum(axis=1) > 0


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def plot_per_class_f1(rows: Sequence[Row], final: str, path: Path) -> str:
    """Grouped bars: per-class F1 of the final row and of the best other rows."""
    final_row = next(r for r in rows if r.name == final)
    others = sorted((r for r in rows if r.name != final), key=lambda r: -r.scores.macro_f1)
    series = [final_row] + others[:MAX_F1_SERIES - 1]
    present = _present(final_row.scores.confusion)
    figure = new_figure(figsize=(10, 4.8))
    ax = figure.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(NUM_CLASSES)
    for i, row in enumerate(series):
        values = np.where(present, row.scores.per_class_f1, np.nan)  # no bar for absent classes
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width,
               label=f"{row.name} ({row.scores.macro_f1:.3f})")
    for c in np.flatnonzero(~present):
        ax.text(c, 0.5, f"{ABSENT} from\nthis split", ha="center", va="center", fontsize=8,
                color="gray")
    ax.set_xticks(x, CLASSES)
    ax.set_xlim(-0.5, NUM_CLASSES - 0.5)  # (an absent last class has no bar to widen the axis)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("per-class F1 (macro-F1 in the legend)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_confusion(confusion: np.ndarray, title: str, path: Path) -> str:
    """Row-normalised confusion matrix with the counts written in each cell."""
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    figure = new_figure(figsize=(6.4, 5.6))
    ax = figure.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(NUM_CLASSES), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(NUM_CLASSES), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, label="fraction of the true class")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_grid(grid: dict, title: str, path: Path) -> str:
    """Heatmap of macro-F1 over the proportional rule's (m, n) grid."""
    values = np.asarray(grid["macro_f1"], dtype=float)
    m_values, n_values = list(grid["m"]), list(grid["n"])
    figure = new_figure(figsize=(5.2, 4.4))
    ax = figure.add_subplot()
    image = ax.imshow(values, cmap="viridis")
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                color="black" if value > middle else "white")
    ax.set_xticks(range(len(n_values)), n_values)
    ax.set_yticks(range(len(m_values)), m_values)
    ax.set_xlabel("n")
    ax.set_ylabel("m")
    best = grid.get("best")
    ax.set_title(f"{title}: macro-F1 over (m, n)" + (f", best {best}" if best else ""), fontsize=9)
    figure.colorbar(image, ax=ax)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_timelines(timelines: Sequence[Timeline], path: Path) -> str:
    """One panel per clip: the true class (thick, grey where not annotated) and the final
    ensemble's predicted class, frame by frame."""
    figure = new_figure(figsize=(10, 1.9 * len(timelines) + 0.6))
    axes = figure.subplots(len(timelines), 1, squeeze=False)[:, 0]
    for ax, timeline in zip(axes, timelines):
        frames = np.arange(len(timeline.labels))
        truth = np.where(timeline.labels >= 0, timeline.labels, np.nan).astype(float)
        ax.step(frames, truth, where="post", color="tab:green", linewidth=4, alpha=0.5,
                label="true")
        ax.step(frames, timeline.predicted, where="post", color="tab:red", linewidth=1,
                label="predicted")
        unannotated = timeline.labels < 0
        if unannotated.any():
            ax.fill_between(frames, -0.5, NUM_CLASSES - 0.5, where=unannotated, step="post",
                            color="lightgray", alpha=0.5, label="not annotated")
        ax.set_yticks(range(NUM_CLASSES), CLASSES, fontsize=7)
        ax.set_ylim(-0.5, NUM_CLASSES - 0.5)
        ax.set_xlim(0, max(len(frames) - 1, 1))
        agree = (timeline.predicted == timeline.labels)[~unannotated]
        accuracy = f", {agree.mean():.0%} of annotated frames right" if agree.size else ""
        ax.set_title(f"{timeline.clip_id} ({len(frames)} frames{accuracy})", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1].set_xlabel("frame")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_class_counts(counts: dict[str, np.ndarray], path: Path) -> str:
    """Frames per class for each split (the last bar group: frames not annotated)."""
    names = list(CLASSES) + ["(unannotated)"]
    figure = new_figure(figsize=(10, 3.8))
    ax = figure.add_subplot()
    width = 0.8 / max(len(counts), 1)
    x = np.arange(len(names))
    for i, (split, values) in enumerate(counts.items()):
        ax.bar(x + (i - (len(counts) - 1) / 2) * width, values, width, label=split)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("frames")
    ax.set_title("class distribution per split")
    ax.legend()
    figure.tight_layout()
    return save_figure(figure, path)


def _table(header: Sequence[str], body: Sequence[Sequence[str]],
           highlight: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for i, cells in enumerate(body):
        attrs = ' class="final"' if i == highlight else ""
        lines.append(f"<tr{attrs}>" + "".join(
            f'<td class="absent">{c}</td>' if c == ABSENT else f"<td>{c}</td>" for c in cells)
            + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def _figure(path: Path, alt: str) -> str:
    """The PNG at ``path`` embedded in the page as a data URI (the page needs no other file)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"'
            f' title="{html.escape(path.name)}"></figure>')


def _value(value: float | None) -> str:
    return ABSENT if value is None else f"{value:.3f}"


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.final { background: #e8f0ff; font-weight: bold; }
td.absent { color: #999; font-style: italic; }
figure { margin: 1em 0; } img { max-width: 100%; }
.note { color: #555; }
"""


def write_report(out_dir: str | Path, data: ReportData) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = next(r for r in data.rows if r.name == data.final)
    parts = [f"<h1>fer-pipeline: {html.escape(data.split)} scores</h1>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in data.notes]
    parts.append(
        f"<p>Final ensemble <b>{html.escape(final.name)}</b>: macro-F1 "
        f"<b>{final.scores.macro_f1:.4f}</b>"
        + (f" ({final.interval.level:.0%} CI {final.interval.low:.4f}-{final.interval.high:.4f})"
           if final.interval else "") + f", accuracy {final.scores.accuracy:.4f}, "
        f"ABAW-2021 score {final.scores.abaw2021_score:.4f} over {final.scores.n_frames} "
        "annotated frames.</p>")

    parts.append("<h2>Runs and ensembles</h2>")
    body = [[html.escape(r.name), r.kind, html.escape(r.fitted_on), f"{r.scores.macro_f1:.4f}",
             f"{r.interval.low:.4f}-{r.interval.high:.4f}" if r.interval else "-",
             f"{r.scores.accuracy:.4f}", f"{r.scores.abaw2021_score:.4f}", str(r.scores.n_frames)]
            for r in data.rows]
    highlight = next(i for i, r in enumerate(data.rows) if r.name == data.final)
    level = next((f"{r.interval.level:.0%} CI" for r in data.rows if r.interval), "CI")
    parts.append(_table(["method", "kind", "fitted on", "macro-F1", level, "accuracy",
                         "ABAW-2021", "frames"], body, highlight))
    present = _present(final.scores.confusion)
    parts.append(_figure(out / plot_per_class_f1(data.rows, data.final, out / "per_class_f1.png"),
                         "per-class F1"))
    parts.append(_table(["method", *CLASSES],
                        [[html.escape(r.name), *(_value(v if present[c] else None)
                                                 for c, v in enumerate(r.scores.per_class_f1))]
                         for r in data.rows], highlight))

    parts.append(f"<h2>Per class: {html.escape(final.name)}</h2>")
    if not present.all():
        parts.append(f'<p class="note">{ABSENT}: no frame of this class in the {html.escape(data.split)}'
                     " split, so its precision, recall and F1 are undefined here (the macro-F1 above"
                     " still averages over all 8 classes as the metric defines it).</p>")
    parts.append(_table(["class", "precision", "recall", "F1", "support (frames)"],
                        [[name, *map(_value, (precision, recall, f1)), str(support)]
                         for name, precision, recall, f1, support
                         in class_table(final.scores.confusion)]))

    parts.append("<h2>Confusion matrix</h2>")
    parts.append(_figure(out / plot_confusion(final.scores.confusion,
                                              f"{final.name} on {data.split}",
                                              out / "confusion.png"), "confusion matrix"))

    if data.timelines:
        parts.append("<h2>Timelines</h2>")
        parts.append(f'<p class="note">Predicted ({html.escape(final.name)}) and true class,'
                     " frame by frame, for the clips with the most annotated frames.</p>")
        parts.append(_figure(out / plot_timelines(data.timelines, out / "timelines.png"),
                             "timelines of predicted and true class"))

    for run in data.runs:
        if run.attention is not None:
            parts.append(f"<h2>Attention: {html.escape(run.name)}</h2>")
            parts.append('<p class="note">Each attention head\'s spatial map over the face map,'
                         " for validation frames (rows).</p>")
            parts.append(_figure(out / plot_attention(run.attention,
                                                      out / f"attention_{run.name}.png"),
                                 f"attention maps of {run.name}"))

    parts.append("<h2>Tuning</h2>")
    parts.append(_tuning_html(data.tuning))

    grids = [run for run in data.runs if run.record.grid is not None]
    if grids:
        parts.append("<h2>Proportional fusion grids (m, n)</h2>")
        for run in grids:
            name = plot_grid(run.record.grid, run.name, out / f"grid_{_safe(run.name)}.png")
            parts.append(_figure(out / name, f"m,n grid of {run.name}"))

    curves = []
    for run in data.runs:
        history = run.record.history
        if isinstance(history, list) and history:
            name = plot_history(history, run.name, out / f"curves_{_safe(run.name)}.png")
            if name:
                curves.append(_figure(out / name, f"training curves of {run.name}"))
    if curves:
        parts.append("<h2>Training curves</h2>")
        parts += curves

    if data.class_counts:
        parts.append("<h2>Class distribution</h2>")
        parts.append(_figure(out / plot_class_counts(data.class_counts,
                                                     out / "class_distribution.png"),
                             "class distribution"))
        parts.append(_table(["split", *CLASSES, "(unannotated)"],
                            [[html.escape(split), *(str(int(v)) for v in values)]
                             for split, values in data.class_counts.items()]))

    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>fer-pipeline report</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    return io.write_text(out / "report.html", page)


def _tuning_html(tuning: dict) -> str:
    protocol = tuning.get("protocol", "?")
    lines = [f"<p>Protocol <b>{html.escape(str(protocol))}</b>: tuned on split "
             f"<b>{html.escape(str(tuning.get('tuning_split')))}</b>, scored on "
             f"<b>{html.escape(str(tuning.get('scored_split')))}</b>."]
    if tuning.get("tuned_on_scored_frames"):
        lines.append(" <b>Choices were tuned on the scored frames: these scores are"
                     " optimistic.</b>")
    lines.append("</p>")
    body = []
    for record in tuning.get("fits", []):
        choices = record["choices"]
        bias = ", ".join(f"{k} {v:+.1f}" for k, v in choices["bias"].items() if v) or "none"
        weights = ", ".join(f"{k}: {v:g}" for k, v in choices["weights"].items() if v)
        body.append([html.escape(str(record.get("fold", "-"))),
                     str(len(record["tuning_clips"])), str(len(record["scored_clips"])),
                     html.escape(choices["combiner"]), html.escape(weights),
                     str(choices["window"]), html.escape(bias),
                     html.escape(", ".join(choices.get("steps", [])) or "none")])
    if body:
        lines.append(_table(["fit", "tuning clips", "scored clips", "combiner", "weights",
                             "window", "bias", "steps applied"], body))
    test = tuning.get("test")
    if test:
        choices = test["choices"]
        lines.append(f"<p>Test predictions: fitted on all {len(test['tuning_clips'])} clips of "
                     f"{html.escape(test['tuning_split'])}; combiner "
                     f"{html.escape(choices['combiner'])}, window {choices['window']}.</p>")
    return "".join(lines)
