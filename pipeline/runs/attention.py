"""A run's attention record: ``RUN/attention.npz``, written by attention heads, read by stage three.

Heads with spatial attention (``dan``) write it after training (keys ``spatial`` float32
[F, K, H, W], ``probs`` [F, 8], ``labels`` [F], ``clip_ids`` [F], ``frames`` [F]; see
:func:`pipeline.fusion.heads.dan.write_attention`); :func:`read_attention` checks it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

def read_attention(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an attention file, checked (one line naming the file when it is unusable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable attention file ({e})") from None
    spatial = arrays.get("spatial")
    if spatial is None or spatial.ndim != 4 or not {"clip_ids", "frames", "labels", "probs"} <= set(arrays):
        raise PipelineError(f"{path}: not an attention file (want spatial [F, K, H, W], probs, "
                            "labels, clip_ids, frames)")
    return arrays
