"""The stage-three report: one self-contained HTML page (its PNG plots embedded as ``data:`` URIs,
so the file can be mailed or moved alone; the PNGs are also written beside it).

The page is rendered from a Jinja2 template shipped with the package
(``pipeline/scoring/templates/report.html.j2``, package data), autoescaped, in this order:

1. a **headline**: the final row's macro-F1 with its interval, what its choices were fitted on,
   and one sentence reading it against the best member;
2. a **banner** of warnings: random backbone weights, the features' precision, anything tuned or
   selected on the scored frames, manifests not checked;
3. **provenance**: package version and git commit, date, machine, precision, and for each member
   the command that remakes it and the extractors (weights, precision) behind what it read;
4. **contents** with an anchor per section;
5. per-class precision, recall, F1 and support of the final row (a class with no frame in the
   scored split is marked *absent*, not scored as F1 0), per-class F1 bars, the confusion matrix;
6. the table of every run output and ensemble (macro-F1, interval, accuracy, ABAW-2021 score,
   what it was fitted on), the pairwise candidates and each row's per-class F1 folded
   (``<details>``);
7. timelines of predicted and true class for a few clips; the **test split** (each clip's share
   of frames per predicted class, timelines of a few clips) when test predictions were made;
8. attention maps, the tuning record (each fit's choices, folded), the proportional (m, n) grids
   (folded), training curves, the class distribution per split, and every note.

The figures are :mod:`pipeline.scoring.report_plots`'s. Every file is written atomically.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.data.labels import CLASSES, NUM_CLASSES
from pipeline.runs.plots import plot_history
from pipeline.runs.record import RunInfo
from pipeline.scoring.attention import plot_attention
from pipeline.scoring.bootstrap import Difference
from pipeline.scoring.crossfit import NOTHING, Row
from pipeline.scoring.report_plots import (ABSENT, plot_class_counts, plot_class_shares,
                                           plot_confusion, plot_grid, plot_per_class_f1,
                                           Timeline, plot_timelines, plot_va_timelines,
                                           present_classes)

TEMPLATES = Path(__file__).resolve().parent / "templates"  # package data (pyproject.toml)
TEST_TIMELINES = 3  # test clips drawn frame by frame (the longest)


@dataclass
class TestSplit:
    """The final pipeline's test predictions, summarised clip by clip as they are made (memory
    does not grow with the frames: counts per clip, and the longest clips' frames)."""

    clip_ids: list[str] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)  # int [8] per clip
    timelines: list[Timeline] = field(default_factory=list)  # the longest TEST_TIMELINES clips

    def add(self, clip_id: str, predicted: np.ndarray) -> None:
        predicted = np.asarray(predicted)
        self.clip_ids.append(clip_id)
        self.counts.append(np.bincount(predicted[predicted >= 0], minlength=NUM_CLASSES))
        self.timelines.append(Timeline(clip_id, predicted.copy(), None))
        self.timelines.sort(key=lambda t: -len(t.predicted))  # stable: earlier clips win ties
        del self.timelines[TEST_TIMELINES:]


@dataclass
class ReportData:
    """Everything the report shows; built by the ensemble stage."""

    split: str  # the scored split
    rows: list[Row]  # members, ensembles, pipeline steps; scores on `split`
    final: str  # name of the row the headline scores come from
    runs: list[RunInfo]  # the run directories (curves, m,n grids)
    class_counts: dict[str, np.ndarray]  # split -> int [9]: frames per class, then unannotated
    tuning: dict  # the tuning record of scores.json
    notes: list[str] = field(default_factory=list)  # lines shown under the provenance
    timelines: list[Timeline] = field(default_factory=list)  # a few clips, frame by frame
    warnings: list[str] = field(default_factory=list)  # the banner's lines
    provenance: Any = None  # stages.provenance.Provenance (None: not shown)
    best_member: str | None = None  # the member row with the best macro-F1
    gain: Difference | None = None  # final minus best member, paired bootstrap
    test: TestSplit | None = None  # the test predictions (None: none were made)
    # VA: (clip id, final values [T, 2], labels [T, 2]) of a few clips (empty: no VA outputs)
    va_timelines: list = field(default_factory=list)


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _figure(path: Path, alt: str) -> dict:
    """The PNG at ``path`` as the template embeds it: a data URI (the page needs no other file)."""
    return {"data": base64.b64encode(path.read_bytes()).decode("ascii"), "alt": alt,
            "title": path.name}


def _value(value: float | None) -> str:
    return ABSENT if value is None else f"{value:.3f}"


def _interval(row: Row) -> str:
    return f"{row.interval.low:.4f}-{row.interval.high:.4f}" if row.interval else "-"


def _pairwise(row: Row) -> bool:
    """A candidate combining two members (the pairwise search's rows): folded in the page."""
    return row.kind == "ensemble" and " + " in row.name


FITTED_ON = {
    "val-crossfit": "fitted on the other validation folds (whole videos), never on the frames"
                    " they score",
    "train-dev": "chosen on a dev slice of the training videos: no validation label was read",
    NOTHING: "nothing was fitted",
    "train": "fitted on the training split",
}


def reading(data: ReportData, final: Row) -> str:
    """One sentence: how the final row stands against the best member."""
    where = FITTED_ON.get(final.fitted_on, f"fitted on {final.fitted_on}")
    if final.fitted_on.endswith("(same frames)"):
        where = f"fitted on {final.fitted_on}: optimistic"
    best = data.best_member
    if best is None or data.gain is None:
        return f"The final row's choices were {where}."
    if final.name == f"final: {best}":
        return (f"Combining did not gain clearly over the best member on held-out videos, so"
                f" the final row applies {best} itself (its choices {where}).")
    gain = data.gain
    verdict = ("a clear gain" if gain.low > 0 else "below it" if gain.high < 0
               else "not distinguishable from it")
    return (f"The final pipeline scores {gain.estimate:+.4f} macro-F1 against the best member"
            f" {best} ({gain.level:.0%} CI {gain.low:+.4f} to {gain.high:+.4f}: {verdict}); its"
            f" choices were {where}.")


def write_report(out_dir: str | Path, data: ReportData) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir``; returns the HTML path."""
    import jinja2  # only when a report is written: importing this module stays cheap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = next(r for r in data.rows if r.name == data.final)
    present = present_classes(final.scores.confusion)
    level = next((f"{r.interval.level:.0%} CI" for r in data.rows if r.interval), "CI")

    def row_cells(r: Row) -> list[str]:
        return [r.name, r.kind, r.fitted_on, f"{r.scores.macro_f1:.4f}", _interval(r),
                f"{r.scores.accuracy:.4f}", f"{r.scores.abaw2021_score:.4f}",
                str(r.scores.n_frames)]

    shown = [r for r in data.rows if not _pairwise(r)]
    folded = [r for r in data.rows if _pairwise(r)]
    context: dict[str, Any] = {
        "data": data, "final": final, "absent": ABSENT, "classes": CLASSES, "level": level,
        "reading": reading(data, final),
        "interval": final.interval,
        "row_header": ["method", "kind", "fitted on", "macro-F1", level, "accuracy",
                       "ABAW-2021", "frames"],
        "rows": [row_cells(r) for r in shown],
        "rows_highlight": next((i for i, r in enumerate(shown) if r.name == data.final), None),
        "pairwise": [row_cells(r) for r in folded],
        "per_class_f1_rows": [[r.name, *(_value(v if present[c] else None)
                                          for c, v in enumerate(r.scores.per_class_f1))]
                              for r in data.rows],
        "per_class_f1_highlight": next(i for i, r in enumerate(data.rows)
                                       if r.name == data.final),
        "all_present": bool(present.all()),
        "class_rows": [[name, *map(_value, (precision, recall, f1)), str(support)]
                       for name, precision, recall, f1, support
                       in class_table(final.scores.confusion)],
        "per_class_figure": _figure(out / plot_per_class_f1(data.rows, data.final,
                                                            out / "per_class_f1.png"),
                                    "per-class F1"),
        "confusion_figure": _figure(out / plot_confusion(final.scores.confusion,
                                                         f"{final.name} on {data.split}",
                                                         out / "confusion.png"),
                                    "confusion matrix"),
        "timelines_figure": _figure(out / plot_timelines(data.timelines, out / "timelines.png"),
                                    "timelines of predicted and true class")
        if data.timelines else None,
        "va_timelines_figure": _figure(out / plot_va_timelines(data.va_timelines,
                                                               out / "va_timelines.png"),
                                       "valence and arousal against truth")
        if data.va_timelines else None,
        "attention": [(run.name, _figure(out / plot_attention(run.attention,
                                                              out / f"attention_{run.name}.png"),
                                         f"attention maps of {run.name}"))
                      for run in data.runs if run.attention is not None],
        "tuning": _tuning(data.tuning),
        "grids": [_figure(out / plot_grid(run.record.grid, run.name,
                                          out / f"grid_{_safe(run.name)}.png"),
                          f"m,n grid of {run.name}")
                  for run in data.runs if run.record.grid is not None],
        "curves": _curves(data.runs, out),
        "counts_figure": _figure(out / plot_class_counts(data.class_counts,
                                                         out / "class_distribution.png"),
                                 "class distribution") if data.class_counts else None,
        "counts_rows": [[split, *(str(int(v)) for v in values)]
                        for split, values in data.class_counts.items()],
        "test": _test_context(data.test, out) if data.test and data.test.clip_ids else None,
    }
    context["contents"] = _contents(data, context)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True)
    page = environment.get_template("report.html.j2").render(context)
    return io.write_text(out / "report.html", page)


def _contents(data: ReportData, context: dict) -> list[tuple[str, str]]:
    """(anchor, title) of every section the page shows, in page order."""
    items = [("headline", "Result"), ("warnings", "Warnings") if data.warnings else None,
             ("provenance", "Provenance"), ("notes", "Notes") if data.notes else None,
             ("per-class", f"Per class: {data.final}"),
             ("confusion", "Confusion matrix"), ("results", "Runs and ensembles"),
             ("timelines", "Timelines") if data.timelines else None,
             ("va-timelines", "Valence and arousal") if data.va_timelines else None,
             ("test", "Test split") if context["test"] else None]
    items += [(f"attention-{i}", f"Attention: {name}")
              for i, (name, _) in enumerate(context["attention"])]
    items += [("tuning", "Tuning"), ("grids", "Proportional fusion grids (m, n)")
              if context["grids"] else None,
              ("curves", "Training curves") if context["curves"] else None,
              ("class-distribution", "Class distribution") if data.class_counts else None]
    return [item for item in items if item]


def _curves(runs: list[RunInfo], out: Path) -> list[dict]:
    curves = []
    for run in runs:
        history = run.record.history
        if isinstance(history, list) and history:
            name = plot_history(history, run.name, out / f"curves_{_safe(run.name)}.png")
            if name:
                curves.append(_figure(out / name, f"training curves of {run.name}"))
    return curves


def _test_context(test: TestSplit, out: Path) -> dict:
    """The test section: per clip, its frames and the share predicted as each class."""
    counts = np.stack(test.counts).astype(float)
    frames = counts.sum(axis=1)
    shares = np.divide(counts, frames[:, None], out=np.zeros_like(counts),
                       where=frames[:, None] > 0)
    rows = [[clip, str(int(n)), *(f"{s:.0%}" for s in share),
             CLASSES[int(share.argmax())] if n else "-"]
            for clip, n, share in zip(test.clip_ids, frames, shares)]
    total = counts.sum(axis=0)
    overall = total / total.sum() if total.sum() else total
    return {
        "rows": rows, "clips": len(test.clip_ids), "frames": int(frames.sum()),
        "overall": [f"{s:.1%}" for s in overall],
        "shares_figure": _figure(out / plot_class_shares(test.clip_ids, shares,
                                                         out / "test_class_shares.png"),
                                 "predicted class shares per test clip"),
        "timelines_figure": _figure(out / plot_timelines(test.timelines,
                                                         out / "test_timelines.png"),
                                    "timelines of the predicted class on test clips"),
        "timeline_clips": [t.clip_id for t in test.timelines],
    }


def _tuning(tuning: dict) -> dict:
    """The tuning record as the template shows it: the protocol, each fit's choices, the test
    fit."""
    body = []
    for record in tuning.get("fits", []):
        choices = record["choices"]
        bias = ", ".join(f"{k} {v:+.1f}" for k, v in choices["bias"].items() if v) or "none"
        weights = ", ".join(f"{k}: {v:g}" for k, v in choices["weights"].items() if v)
        body.append([str(record.get("fold", "-")), str(len(record["tuning_clips"])),
                     str(len(record["scored_clips"])), choices["combiner"], weights,
                     str(choices["window"]), bias, ", ".join(choices.get("steps", [])) or "none"])
    test = tuning.get("test")
    return {
        "protocol": str(tuning.get("protocol", "?")),
        "tuning_split": str(tuning.get("tuning_split")),
        "scored_split": str(tuning.get("scored_split")),
        "optimistic": bool(tuning.get("tuned_on_scored_frames")),
        "header": ["fit", "tuning clips", "scored clips", "combiner", "weights", "window", "bias",
                   "steps applied"],
        "fits": body,
        "test": None if not test else {
            "clips": len(test["tuning_clips"]), "split": test["tuning_split"],
            "combiner": test["choices"]["combiner"], "window": test["choices"]["window"]},
    }
