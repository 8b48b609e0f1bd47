"""The run's training curve (``RUN/curve.png``) and the plotting setup every figure shares.

Training draws the curve when a run finishes; stage three's report draws the same curve of each
member from its record's ``history``. Matplotlib is imported only when a figure is drawn, so
importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pipeline import io

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**options: Any) -> "Figure":
    """A matplotlib figure on an Agg canvas (matplotlib is imported here, on first use)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: "Figure", path: Path) -> str:
    io.save_figure(path, figure, dpi=100)
    return path.name


def _series(history: Sequence[dict]) -> dict[str, list[tuple[float, float]]]:
    """(epoch, value) per numeric key; a dict value (one per output) gives "key output" keys."""
    series: dict[str, list[tuple[float, float]]] = {}
    for i, entry in enumerate(history):
        epoch = entry.get("epoch", i)
        for key, value in entry.items():
            values = value if isinstance(value, dict) else {"": value}
            for sub, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "epoch":
                    series.setdefault(f"{key} {sub}".strip(), []).append((epoch, v))
    return series


def plot_history(history: Sequence[dict], title: str, path: Path) -> str | None:
    """Training curves: losses on the left panel, F1/accuracy/score keys on the right.

    Other numeric keys (e.g. examples per epoch) are left out: they share no scale with these.
    """
    from matplotlib.ticker import MaxNLocator

    series = _series(history)
    panels = [[k for k in sorted(series) if "loss" in k],
              [k for k in sorted(series) if "loss" not in k
               and any(word in k for word in ("f1", "acc", "score"))]]
    panels = [keys for keys in panels if keys]
    if not panels:
        return None
    figure = new_figure(figsize=(5 * len(panels), 3.6))
    for index, keys in enumerate(panels, 1):
        ax = figure.add_subplot(1, len(panels), index)
        for key in keys:
            ax.plot(*zip(*series[key]), marker="o", markersize=3, label=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
