"""What an attention head looks at: the report's figure of a run's saved attention maps.

Heads with spatial attention (``dan``) write ``RUN/attention.npz`` after training
(:mod:`pipeline.runs.attention`). Stage three draws, for a few of those
frames, each head's map over the face map's grid, so a user sees whether the heads attend to
different regions (what DAN's partition loss asks of them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.labels import CLASSES
from pipeline.runs.attention import read_attention
from pipeline.runs.plots import new_figure, save_figure


def plot_attention(path: str | Path, out: Path, frames: int = 4) -> str:
    """A grid of heat maps: one row per saved frame (at most ``frames``), one column per head;
    returns the PNG's file name."""
    arrays = read_attention(path)
    spatial = arrays["spatial"][:frames]
    n, heads = spatial.shape[:2]
    figure = new_figure(figsize=(1.6 * heads + 0.4, 1.7 * n + 0.3))
    axes = figure.subplots(n, heads, squeeze=False)
    for f in range(n):
        label = int(arrays["labels"][f])
        truth = CLASSES[label] if label >= 0 else "unlabelled"
        predicted = CLASSES[int(np.argmax(arrays["probs"][f]))]
        for k in range(heads):
            ax = axes[f, k]
            ax.imshow(spatial[f, k], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if f == 0:
                ax.set_title(f"head {k + 1}", fontsize=8)
        axes[f, 0].set_ylabel(f"{arrays['clip_ids'][f]} #{int(arrays['frames'][f]) + 1}\n"
                              f"true {truth}\npred {predicted}", fontsize=7)
    figure.tight_layout()
    return save_figure(figure, out)
