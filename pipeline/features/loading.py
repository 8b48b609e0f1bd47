"""Decoding for stage one's loader threads: frame chunks, and each video's audio once per rate.

These run in the loader pool of :mod:`pipeline.features.runner`, off the model's thread. A file
that cannot be read raises :class:`~pipeline.features.feeding.InputError` naming it, which drops
the clip whole; an audio track that cannot be decoded beside a whole video stream costs the clip
its audio only (:class:`AudioCache`).

**JPEG decoding on the GPU.** On a GPU, Swin-Tiny in bf16 outruns the CPU's JPEG decoding.
:func:`jpeg_decode_device` says where a chunk of frames can be decoded: on the model's CUDA
device when torchvision's nvJPEG ``decode_jpeg`` takes a batch there (torchvision >= 0.19),
else on the CPU (PIL, :func:`read_images`: the fallback and the only path on a CPU machine).
:func:`decode_jpegs` reads the files' bytes in the loader thread and decodes the chunk in one
batched call. It is used by ``tests/bench/bench_extract.py --device cuda``; the stage's image kind
still decodes with PIL, since its extractors preprocess PIL images (see the bench's note).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.data.media import (
    MediaError,
    audio_frames,
    decode_audio_timed,
    lead_frames,
    read_image,
    short_audio,
    truncation,
    video_frames,
)
from pipeline.features.feeding import InputError


def input_error(path: str | Path, error: MediaError) -> InputError:
    """The InputError for a media error, its reason without the repeated path."""
    message = str(error)
    prefix = f"{path}: "
    return InputError(str(path), message[len(prefix):] if message.startswith(prefix) else message)


def jpeg_decode_device(device: str) -> str:
    """Where to decode frames for a model on ``device``: that CUDA device when batched nvJPEG
    decoding is available there, else "cpu"."""
    if not device.startswith("cuda"):
        return "cpu"
    try:
        import torch

        from pipeline.compat import ensure_torchvision

        ensure_torchvision()
        import torchvision
    except ImportError:
        return "cpu"
    version = tuple(int(p) for p in torchvision.__version__.split("+")[0].split(".")[:2])
    if not torch.cuda.is_available() or version < (0, 19):  # batched decode_jpeg came in 0.19
        return "cpu"
    return device


def decode_jpegs(paths: Sequence[Path], device: str) -> list[Any]:
    """uint8 ``[3, H, W]`` tensors of a chunk of JPEG frames, decoded in one call on ``device``
    (see :func:`jpeg_decode_device`); a bad file raises an InputError naming it."""
    import torch

    from pipeline.compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.io import ImageReadMode, decode_jpeg

    data = []
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise InputError(str(path), f"unreadable image ({e.strerror or e})") from None
        if not raw:
            raise InputError(str(path), "empty image file")
        data.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        for path, raw in zip(paths, data):  # name the file: decode each on the CPU
            try:
                decode_jpeg(raw, mode=ImageReadMode.RGB)
            except RuntimeError as e:
                raise InputError(str(path), f"undecodable JPEG ({' '.join(str(e).split())[:120]})") from None
        raise


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
        self._entries: dict[int, tuple[str, _Track]] = {}

    def get(self, path: str, sample_rate: int, n_frames: int, fps: float,
            extra_tolerance: float = 0.0) -> tuple[np.ndarray, ShortAudio | None]:
        """The track at ``sample_rate``, and how it falls short of the clip's ``n_frames`` at
        ``fps`` (None when it covers them, within :func:`~pipeline.data.media.short_audio`'s
        tolerance).

        A short track is one of two things, told apart by the video stream: a truncated file
        (its video stream lacks frames its container declares: an InputError, the clip is bad
        input) or audio that ends before the video, common in real recordings: the samples come
        back padded with silence to the clip's length, with the frames the audio covers, so that
        the clip keeps every face and only its audio past the end is masked. A track that starts
        more than a frame after the video (its lead-in: silence put there by the decoder) has the
        frames before its start masked the same way."""
        with self._lock:  # decoding under the lock: the second clip of a video waits, not re-decodes
            entry = self._entries.get(sample_rate)
            if entry is None or entry[0] != path:
                entry = (path, _decoded(path, sample_rate))
                self._entries[sample_rate] = entry
        track = entry[1]
        if track.undecodable:  # the clip keeps its faces; its audio is silence, all masked
            return (np.zeros(int(np.ceil(n_frames / fps * sample_rate)) + 1, np.float32),
                    ShortAudio(0, n_frames, 0.0, n_frames / fps, undecodable=track.undecodable))
        samples, frame_seconds, lead = track.samples, track.frame_seconds, track.lead
        first = lead_frames(lead, fps)
        reason = short_audio(len(samples), sample_rate, n_frames, fps, frame_seconds,
                             extra_tolerance)
        if reason is None and not first:
            return samples, None
        if reason is None:  # starts late, covers the end: the lead-in frames alone are masked
            return samples, ShortAudio(n_frames, n_frames, len(samples) / sample_rate,
                                       n_frames / fps, first, lead)
        try:
            truncated = truncation(*video_frames(path))
        except MediaError as e:
            raise input_error(path, e) from None
        if truncated is not None:
            raise InputError(path, f"{truncated} ({reason})")
        covered = audio_frames(len(samples), sample_rate, n_frames, fps)
        need = int(np.ceil(n_frames / fps * sample_rate)) + 1
        padded = np.zeros(max(need, len(samples)), np.float32)
        padded[:len(samples)] = samples
        return padded, ShortAudio(covered, n_frames, len(samples) / sample_rate, n_frames / fps,
                                  min(first, covered), lead)


@dataclass(frozen=True)
class _Track:
    """A file's decoded audio track (:func:`~pipeline.data.media.decode_audio_timed`), or why it
    cannot be decoded."""

    samples: np.ndarray
    frame_seconds: float
    lead: float
    undecodable: str = ""


def _decoded(path: str, sample_rate: int) -> _Track:
    """The audio track of ``path``; one that cannot be decoded in a file whose video stream is
    whole comes back empty with the reason: the clip keeps its faces and only its audio is lost
    (a garbled audio stream is common in real recordings). A file whose video is unreadable or
    truncated too raises the InputError that drops the clip."""
    try:
        return _Track(*decode_audio_timed(path, sample_rate))
    except MediaError as e:
        why = input_error(path, e).reason
        try:
            truncated = truncation(*video_frames(path))
        except MediaError:
            raise input_error(path, e) from None
        if truncated is not None:
            raise InputError(path, f"{truncated} ({why})") from None
        return _Track(np.zeros(0, np.float32), 0.0, 0.0, undecodable=why)


@dataclass(frozen=True)
class ShortAudio:
    """An audio track that ends before its clip's video (not a truncated file), or starts after
    its first frame."""

    covered: int  # the clip's first frames the audio covers; its audio features past them are masked
    n_frames: int
    audio_seconds: float
    video_seconds: float
    # A track that starts late (media.decode_audio_timed): the frames before ``first`` have no
    # audio either, and are masked too; ``audio_start`` is where its first sample is.
    first: int = 0
    audio_start: float = 0.0
    undecodable: str = ""  # why the track could not be decoded: every frame's audio is masked

    def __str__(self) -> str:
        if self.undecodable:
            return (f"audio track cannot be decoded ({self.undecodable}): audio features of all "
                    f"{self.n_frames} frames are masked (every face kept)")
        ends = self.covered < self.n_frames
        when, which = [], []
        if self.first:
            when.append(f"starts at {self.audio_start:.2f} s")
            which.append(f"first {self.first}")
        if ends or not self.first:
            when.append(f"ends at {self.audio_seconds:.2f} s")
            which.append(f"last {self.n_frames - self.covered}")
        return (f"audio {' and '.join(when)} of the video's {self.video_seconds:.2f} s:"
                f" audio features of its {' and '.join(which)} of {self.n_frames} "
                "frames are masked (every face kept)")
