"""Audio embeddings once per clip: frame-level layers over the whole clip, windows pooled from prefix sums.

An audio embedding extractor whose network splits into **frame-level** layers (a function of a
bounded neighbourhood of frontend rows: ``left`` rows before and ``right`` after each output row)
and a **segment** part fed by statistics pooling (the mean and standard deviation of the
frame-level outputs over a window, both functions of the sums of ``x`` and ``x**2``) need not run
its frame-level layers once per window. :class:`ClipFrames` runs them once over the clip's
frontend, in fixed blocks of :attr:`ClipFrames.block` output rows (each block reads
``left + right`` rows of overlap, so every output equals a one-shot run's), keeps float64 prefix
sums of the outputs and their squares, and answers each window's ``(sum, sum of squares, count)``
by two subtractions. Only the prefix sums that later windows still need are kept: memory is
bounded by the longest window plus one block, not by the clip.

Which frame-level outputs a window pools (:func:`pooled_ranges`), in frontend-row coordinates
(output ``c`` is the one centred on row ``c``, computed from rows ``c - left .. c + right``):

* a window of ``T`` rows starting at row ``s`` with ``T >= left + right + 1`` pools the outputs
  ``s + left .. s + T - right - 1``: exactly those whose receptive field lies inside the window,
  which is what the per-window computation (the network on the window alone, unpadded) pools.
  The two agree to float rounding, at the clip's edges too: rows outside the clip take the same
  pad rule (:attr:`~pipeline.features.extractors.audio_embedding.AudioEmbeddingExtractor.pad_mode`);
* a shorter window (the per-window computation pads it to the receptive field by repeating its
  edge rows) pools the one output centred where the per-window computation's is, computed from the
  clip's real neighbouring rows instead of repeated ones (pad rule outside the clip).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pooled_ranges(starts: np.ndarray, t_win: int, left: int, right: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first, stop)`` output rows each window pools (see the module docstring)."""
    starts = np.asarray(starts, dtype=np.int64)
    span = left + right + 1
    if t_win >= span:
        return starts + left, starts + t_win - right
    first = starts - (span - t_win) // 2 + left  # the centre of the per-window computation's output
    return first, first + 1


def padded_rows(front: np.ndarray, start: int, stop: int, pad: str, pad_value: float) -> np.ndarray:
    """Rows ``start .. stop - 1`` of ``front``, rows outside the clip by the pad rule."""
    rows = np.arange(start, stop)
    out = front[np.clip(rows, 0, front.shape[0] - 1)]  # "edge" as it stands
    if pad == "min":
        out[(rows < 0) | (rows >= front.shape[0])] = pad_value
    return out


class ClipFrames:
    """One clip's frame-level outputs, computed block by block, as windowed sums.

    ``ext`` provides ``frame_context() -> (left, right)``, ``frame_level(rows [N, F]) -> [N -
    left - right, C]`` (a tensor or array) and ``pad_mode``. Calls to :meth:`window_sums` must
    ask for non-decreasing ``first`` rows (the frames of a clip in order), which lets the prefix
    sums before them go.
    """

    block = 2048  # frame-level output rows per call: bounds the activations' memory

    def __init__(self, ext: Any, front: np.ndarray, origin: int) -> None:
        self.ext = ext
        self.front = np.asarray(front, dtype=np.float32)
        self.left, self.right = ext.frame_context()
        self.pad_value = float(self.front.min())
        self.low = self.high = origin  # prefix sums held for output rows low .. high
        # cum[k]: sums over outputs origin .. low + k - 1 (float64: windows subtract large sums).
        self.cum: np.ndarray | None = None
        self.cum_sq: np.ndarray | None = None

    def _advance(self, stop: int) -> None:
        """Compute blocks until outputs up to ``stop - 1`` are summed."""
        while self.high < stop:
            rows = padded_rows(self.front, self.high - self.left, self.high + self.block + self.right,
                               self.ext.pad_mode, self.pad_value)
            out = np.asarray(self.ext.frame_level(rows), dtype=np.float64)
            assert out.shape[0] == self.block, f"frame_level gave {out.shape[0]} rows for {self.block}"
            if self.cum is None:
                zero = np.zeros((1, out.shape[1]))
                self.cum, self.cum_sq = zero, zero.copy()
            self.cum = np.concatenate([self.cum, self.cum[-1] + np.cumsum(out, axis=0)])
            self.cum_sq = np.concatenate([self.cum_sq, self.cum_sq[-1] + np.cumsum(out * out, axis=0)])
            self.high += self.block

    def window_sums(self, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """``float64 [N, 2C + 1]``: per window, the sum and sum of squares of outputs
        ``first .. stop - 1``, and their count."""
        first, stop = np.asarray(first, np.int64), np.asarray(stop, np.int64)
        assert len(first) and first.min() >= self.low, (
            f"windows from output {first.min()} asked after outputs before {self.low} were dropped")
        self._advance(int(stop.max()))
        drop = int(first.min()) - self.low  # later calls start no earlier
        self.cum, self.cum_sq, self.low = self.cum[drop:], self.cum_sq[drop:], self.low + drop
        a, b = first - self.low, stop - self.low
        count = (stop - first).astype(np.float64)[:, None]
        return np.concatenate([self.cum[b] - self.cum[a], self.cum_sq[b] - self.cum_sq[a], count], axis=1)
