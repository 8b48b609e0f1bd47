"""Decoding for stage one's loader threads: frame chunks, and each video's audio once per rate.

These run in the loader pool of :mod:`pipeline.features.runner`, off the model's thread. A file
that cannot be read raises :class:`~pipeline.features.feeding.InputError` naming it, which drops
the clip whole.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.data.media import MediaError, decode_audio, read_image
from pipeline.features.feeding import InputError


def input_error(path: str | Path, error: MediaError) -> InputError:
    """The InputError for a media error, its reason without the repeated path."""
    message = str(error)
    prefix = f"{path}: "
    return InputError(str(path), message[len(prefix):] if message.startswith(prefix) else message)


def read_images(paths: Sequence[Path]) -> list[Any]:
    """Decode a chunk of frames (PIL images), in order."""
    images = []
    for path in paths:
        try:
            images.append(read_image(path))
        except MediaError as e:
            raise input_error(path, e) from None
    return images


class AudioCache:
    """The last decoded waveform per sample rate: ``_left``/``_right`` clips share a video's audio."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[str, np.ndarray]] = {}

    def get(self, path: str, sample_rate: int) -> np.ndarray:
        with self._lock:  # decoding under the lock: the second clip of a video waits, not re-decodes
            entry = self._entries.get(sample_rate)
            if entry is None or entry[0] != path:
                try:
                    entry = (path, decode_audio(path, sample_rate))
                except MediaError as e:
                    raise input_error(path, e) from None
                self._entries[sample_rate] = entry
            return entry[1]
