"""The stage-three report's figures: per-class F1, confusion, (m, n) grids, timelines, class
counts, the test split's predicted class shares. Drawn with the object API of matplotlib on the
Agg canvas (:func:`pipeline.runs.plots.new_figure`: no pyplot, no global backend state; matplotlib
is imported only when a figure is drawn). Each function writes one PNG atomically and returns its
file name; :mod:`pipeline.scoring.report` embeds them in the page.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, NUM_CLASSES
from pipeline.runs.plots import new_figure, save_figure
from pipeline.scoring.crossfit import Row

MAX_F1_SERIES = 6  # per-class F1 bars: the final ensemble and at most this many rows in all
ABSENT = "absent"  # shown for a class with no frame in the scored split


@dataclass
class Timeline:
    """One clip's final predicted and true class per frame (for the timeline plot)."""

    clip_id: str
    predicted: np.ndarray  # int [T]
    labels: np.ndarray | None  # int [T], -1 = not annotated; None: a test clip (no labels)


def present_classes(confusion: np.ndarray) -> np.ndarray:
    """bool [8]: the classes with at least one true frame."""
    return np.asarray(confusion).sum(axis=1) > 0


def plot_per_class_f1(rows: Sequence[Row], final: str, path: Path) -> str:
    """Grouped bars: per-class F1 of the final row and of the best other rows."""
    final_row = next(r for r in rows if r.name == final)
    others = sorted((r for r in rows if r.name != final), key=lambda r: -r.scores.macro_f1)
    series = [final_row] + others[:MAX_F1_SERIES - 1]
    present = present_classes(final_row.scores.confusion)
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


def plot_va_timelines(timelines: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path) -> str:
    """One panel per clip: true valence and arousal (thick; gaps where invalid) and the final
    VA prediction (thin), frame by frame."""
    figure = new_figure(figsize=(10, 1.9 * len(timelines) + 0.6))
    axes = figure.subplots(len(timelines), 1, squeeze=False)[:, 0]
    for ax, (clip_id, predicted, truth) in zip(axes, timelines):
        frames = np.arange(len(predicted))
        for k, (name, colour) in enumerate((("valence", "tab:blue"), ("arousal", "tab:orange"))):
            ax.plot(frames, np.where(truth[:, k] == -5, np.nan, truth[:, k]), color=colour,
                    linewidth=4, alpha=0.4, label=f"true {name}")
            ax.plot(frames, predicted[:, k], color=colour, linewidth=1, label=f"predicted {name}")
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlim(0, max(len(frames) - 1, 1))
        ax.set_title(f"{clip_id} ({len(frames)} frames)", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1].set_xlabel("frame")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_timelines(timelines: Sequence[Timeline], path: Path) -> str:
    """One panel per clip: the true class (thick, grey where not annotated) and the final
    ensemble's predicted class, frame by frame (a test clip, with no labels: predicted only)."""
    figure = new_figure(figsize=(10, 1.9 * len(timelines) + 0.6))
    axes = figure.subplots(len(timelines), 1, squeeze=False)[:, 0]
    for ax, timeline in zip(axes, timelines):
        frames = np.arange(len(timeline.predicted))
        accuracy = ""
        if timeline.labels is not None:
            truth = np.where(timeline.labels >= 0, timeline.labels, np.nan).astype(float)
            ax.step(frames, truth, where="post", color="tab:green", linewidth=4, alpha=0.5,
                    label="true")
        ax.step(frames, np.where(timeline.predicted >= 0, timeline.predicted, np.nan),
                where="post", color="tab:red", linewidth=1, label="predicted")
        if timeline.labels is not None:
            unannotated = timeline.labels < 0
            if unannotated.any():
                ax.fill_between(frames, -0.5, NUM_CLASSES - 0.5, where=unannotated, step="post",
                                color="lightgray", alpha=0.5, label="not annotated")
            agree = (timeline.predicted == timeline.labels)[~unannotated]
            accuracy = f", {agree.mean():.0%} of annotated frames right" if agree.size else ""
        ax.set_yticks(range(NUM_CLASSES), CLASSES, fontsize=7)
        ax.set_ylim(-0.5, NUM_CLASSES - 0.5)
        ax.set_xlim(0, max(len(frames) - 1, 1))
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


def plot_class_shares(clip_ids: Sequence[str], shares: np.ndarray, path: Path) -> str:
    """Stacked horizontal bars: each clip's share of frames predicted as each class."""
    shares = np.asarray(shares, dtype=float)
    figure = new_figure(figsize=(10, 0.28 * len(clip_ids) + 1.6))
    ax = figure.add_subplot()
    left = np.zeros(len(clip_ids))
    y = np.arange(len(clip_ids))
    for c, name in enumerate(CLASSES):
        ax.barh(y, shares[:, c], left=left, label=name, color=f"C{c}")
        left += shares[:, c]
    ax.set_yticks(y, clip_ids, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the clip's frames")
    ax.set_title("test split: predicted class shares per clip")
    below = -0.12 - 1.2 / (len(clip_ids) + 6)  # under the x label, whatever the figure's height
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, below), ncol=NUM_CLASSES)
    figure.tight_layout()
    return save_figure(figure, path)
