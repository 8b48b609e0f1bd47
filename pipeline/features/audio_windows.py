"""Log-mel windows centred on video frames, and the ``--audio-stride`` rule for audio embeddings.

The audio and video clocks differ: video frame ``i`` is centred at ``(i + 0.5) / fps`` seconds
(see :mod:`pipeline.data.media`), log-mel frame ``j`` at ``j / mel_rate`` seconds (``center=True``
framing). The window of ``W`` video frames for frame ``i`` spans ``W / fps`` seconds centred on
frame ``i``: it holds ``T_win = round(W / fps * mel_rate)`` consecutive log-mel frames, the same
for every frame of a clip, starting at

    start_i = floor((i + 0.5) / fps * mel_rate - (T_win - 1) / 2 + 0.5)

so that the window's frame centres sit as symmetrically about the video frame's centre as the
mel grid allows. Rows before the first or after the last log-mel frame are padded (``pad``) with
the clip's minimum value (``"min"``: for log-mel, silence at the clip's floor, since log-mel is in
dB, floored at ``top_db`` below the peak), or with the first / last frame (``"edge"``: for
frontends with no silence floor). The same holds for any frontend of rows at a fixed rate.

Audio embeddings cost one backbone call per frame and window length; ``--audio-stride K``
computes them only at :func:`strided_indices` (every K-th frame and always the last) and
:func:`fill_strided` fills the frames between by linear interpolation between the two nearest
computed frames (windows K frames apart overlap by ``W - K`` of ``W`` frames, so the embedding
changes slowly between them). Computed frames keep their values exactly.
"""

from __future__ import annotations

import numpy as np

PAD_MODES = ("min", "edge")


def window_length(window_frames: int, fps: float, mel_rate: float) -> int:
    """Log-mel frames in a window of ``window_frames`` video frames (at least one)."""
    return max(1, round(window_frames / fps * mel_rate))


def window_starts(frame_indices: np.ndarray, fps: float, mel_rate: float, t_win: int) -> np.ndarray:
    """First log-mel frame of each video frame's window (may be negative or past the end)."""
    centres = (np.asarray(frame_indices, dtype=np.float64) + 0.5) / fps * mel_rate
    return np.floor(centres - (t_win - 1) / 2 + 0.5).astype(np.int64)


def frame_windows(
    mel: np.ndarray,
    mel_rate: float,
    n_frames: int,
    fps: float,
    window_frames: int,
    frame_indices: np.ndarray | None = None,
    pad: str = "min",
) -> np.ndarray:
    """``float32 [len(frame_indices), T_win, n_mels]``: the window of each listed video frame.

    ``mel`` is the clip's log-mel ``[T_mel, n_mels]`` at ``mel_rate`` frames/s. Pass
    ``frame_indices`` in batches on long clips: the result holds ``T_win`` rows per frame.
    ``pad``: rows outside the clip take its minimum (``"min"``) or its nearest row (``"edge"``).
    """
    assert pad in PAD_MODES, f"pad must be one of {PAD_MODES}, got {pad!r}"
    mel = np.asarray(mel, dtype=np.float32)
    assert mel.ndim == 2 and mel.shape[0] > 0, f"expected a non-empty [T_mel, n_mels], got {mel.shape}"
    indices = np.arange(n_frames) if frame_indices is None else np.asarray(frame_indices, np.int64)
    assert indices.size == 0 or (indices.min() >= 0 and indices.max() < n_frames), (
        f"frame indices outside [0, {n_frames})")
    t_win = window_length(window_frames, fps, mel_rate)
    starts = window_starts(indices, fps, mel_rate, t_win)
    rows = starts[:, None] + np.arange(t_win)[None, :]  # [N, T_win] log-mel frame of each row
    inside = (rows >= 0) & (rows < mel.shape[0])
    out = mel[np.clip(rows, 0, mel.shape[0] - 1)]  # "edge" padding as it stands
    if pad == "min":
        out[~inside] = mel.min()
    return out


def strided_indices(n_frames: int, stride: int) -> np.ndarray:
    """Frames at which embeddings are computed: ``0, K, 2K, ...`` and always the last frame."""
    assert stride >= 1, f"audio stride must be >= 1, got {stride}"
    indices = np.arange(0, n_frames, stride, dtype=np.int64)
    if n_frames > 0 and indices[-1] != n_frames - 1:
        indices = np.append(indices, n_frames - 1)
    return indices


def fill_strided(values: np.ndarray, indices: np.ndarray, n_frames: int) -> np.ndarray:
    """``float32 [n_frames, ...]`` from ``values [len(indices), ...]`` computed at ``indices``.

    Frames between two computed frames are linearly interpolated; frames before the first or
    after the last computed frame (none, with :func:`strided_indices`) repeat the nearest one.
    """
    values = np.asarray(values, dtype=np.float32)
    indices = np.asarray(indices, dtype=np.int64)
    assert indices.ndim == 1 and len(indices) == len(values) > 0, (
        f"need one value row per index, got {values.shape} for {indices.shape}")
    assert np.all(np.diff(indices) > 0) and indices[0] >= 0 and indices[-1] < n_frames, (
        f"indices must be strictly increasing within [0, {n_frames})")
    if len(indices) == 1:
        return np.repeat(values, n_frames, axis=0)
    frames = np.arange(n_frames)
    left = np.clip(np.searchsorted(indices, frames, side="right") - 1, 0, len(indices) - 2)
    span = (indices[left + 1] - indices[left]).astype(np.float32)
    weight = np.clip((frames - indices[left]) / span, 0.0, 1.0).astype(np.float32)
    weight = weight.reshape(-1, *([1] * (values.ndim - 1)))
    out = (1.0 - weight) * values[left] + weight * values[left + 1]
    out[indices] = values  # exact at computed frames, whatever the arithmetic gave
    return out
