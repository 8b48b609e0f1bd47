"""Decoding a video's frames in batches (PyAV), for the face detector and the cropper: the one
place where ``faces`` (and ``predict``, through it) turns a video into pictures, upright."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.data.media import MediaError

__all__ = ["frame_batches", "upright", "video_rotation"]


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` ``[H, W, 3]`` as it is shown: turned ``rotation`` degrees counterclockwise
    (PyAV's ``VideoFrame.rotation``, the display matrix's angle; a phone held upright writes
    -90: FFmpeg's command line turns such a frame 90 degrees clockwise, as players do). The
    library API leaves frames as stored, so this is done here. Angles are rounded to the nearest
    quarter turn; flips in the matrix are not applied."""
    turns = int(round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def video_rotation(path: str | Path) -> int:
    """The display rotation of a video's first frame, in degrees counterclockwise as
    :func:`upright` takes it (0 when the file has none)."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return int(round(frame.rotation / 90)) % 4 * 90
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
        raise MediaError(f"{path}: unreadable video ({' '.join(str(e).split())})") from None
    return 0


def frame_batches(path: str | Path, batch: int) -> Iterator[np.ndarray]:
    """uint8 RGB ``[b, H, W, 3]`` batches of the first video stream's frames, in order, upright
    (each frame turned by its display matrix: :func:`upright`).

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
                image = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
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
