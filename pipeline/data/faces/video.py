"""Decoding a video's frames in batches (PyAV), for the face detector and the cropper."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.data.media import MediaError


def frame_batches(path: str | Path, batch: int) -> Iterator[np.ndarray]:
    """uint8 RGB ``[b, H, W, 3]`` batches of the first video stream's frames, in order.

    A frame whose size differs from the previous one starts a new batch (rare, but legal).
    """
    path = Path(path)
    pending: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="rgb24")
                if pending and (len(pending) == batch or image.shape != pending[0].shape):
                    yield np.stack(pending)
                    pending = []
                pending.append(image)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable video ({' '.join(str(e).split())})") from None
    if pending:
        yield np.stack(pending)
