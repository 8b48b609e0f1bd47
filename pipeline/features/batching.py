"""The cross-clip batch stream: rows of one model input, collected across clips, run in full batches.

Stage one's model thread keeps one :class:`BatchStream` per model input (an image extractor; an
audio embedding extractor at one window length). Rows arrive in pieces (a chunk of one clip's
frames); the stream runs whenever a full batch is there, splitting a piece across two batches
where needed, so a batch spans clip boundaries. A short batch (at the end, or before the producer
blocks on a lock: ``flush``) is padded with zeros to ``batch_size``, so that every forward has the
same shape: oneDNN and cuDNN choose kernels by shape, and a frame's fp32 result can differ in the
last bit between batch sizes; padding makes it independent of its neighbours.

On a CUDA device a batch assembled on the CPU is copied from pinned (page-locked) memory with a
non-blocking copy, so the transfer overlaps the model's previous work on the GPU instead of
stalling the model thread; rows already on the device (decoded there) are not copied. On the CPU
nothing changes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Piece:
    """Consecutive rows of one owner (a clip): its input, then (once run) its outputs."""

    owner: Any
    rows: np.ndarray  # the owner's row indices, one per input row
    inputs: Any = None  # tensor [len(rows), ...], None once run
    outputs: dict[str, np.ndarray] | None = None  # float32 {name: [len(rows), ...]} once run


class BatchStream:
    """Rows for one model input; ``run`` maps a ``[batch_size, ...]`` tensor to ``{name: tensor}``."""

    def __init__(self, run: Callable[[Any], dict[str, Any]], batch_size: int, device: str = "cpu") -> None:
        assert batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"
        self.run = run
        self.batch_size = batch_size
        self.device = device  # where ``run``'s model is: a CUDA device gets pinned, async copies
        self.pieces: deque[Piece] = deque()
        self.pending = 0  # rows queued, not yet run

    def add(self, owner: Any, rows: np.ndarray, inputs: Any) -> None:
        assert len(rows) == inputs.shape[0], f"{len(rows)} rows for {inputs.shape[0]} inputs"
        self.pieces.append(Piece(owner, np.asarray(rows), inputs))
        self.pending += len(rows)

    def step(self, flush: bool) -> list[Piece]:
        """Run every full batch (and, if ``flush``, the rest); return the pieces run, in order.

        A piece split across two batches comes back as two pieces.
        """
        import torch

        done: list[Piece] = []
        while self.pending >= self.batch_size or (flush and self.pending):
            taken: list[Piece] = []
            need = self.batch_size
            while need and self.pieces:
                piece = self.pieces.popleft()
                if len(piece.rows) > need:  # split: the tail stays queued as its own piece
                    self.pieces.appendleft(Piece(piece.owner, piece.rows[need:], piece.inputs[need:]))
                    piece = Piece(piece.owner, piece.rows[:need], piece.inputs[:need])
                taken.append(piece)
                need -= len(piece.rows)
            tensors = [p.inputs for p in taken]
            batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            n = batch.shape[0]
            self.pending -= n
            if n < self.batch_size:
                batch = torch.cat([batch, batch.new_zeros((self.batch_size - n, *batch.shape[1:]))])
            batch = to_device(batch, self.device)
            with torch.inference_mode():
                outputs = {k: v[:n].float().cpu().numpy() for k, v in self.run(batch).items()}
            start = 0
            for piece in taken:
                count = len(piece.rows)
                piece.outputs = {k: v[start:start + count] for k, v in outputs.items()}
                piece.inputs = None
                start += count
                done.append(piece)
        return done


def to_device(batch: Any, device: str) -> Any:
    """``batch`` on a CUDA ``device`` through pinned memory and a non-blocking copy (the copy is
    ordered before the model's kernels on the same stream); unchanged for the CPU or a tensor
    already there."""
    if not device.startswith("cuda") or batch.device.type == "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)
