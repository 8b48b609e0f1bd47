"""Real footage in the video shapes people's files come in, built for the tests with PyAV from
carphone_pristine's 120 real frames (a man talking in a car, QCIF 176x144, 30000/1001 fps):

- **rotation**: the frames stored sideways or upside down with a display matrix saying how to
  show them, as phones write (``rotate90`` is a phone's portrait clip: stored turned 90 degrees
  counterclockwise, shown turned 90 clockwise; ffprobe says ``rotation of -90.00 degrees``);
- **variable frame rate**: frames 1/30 s apart, then 1/15 s, alternating every 20 frames, in
  mp4, mkv and avi (MJPEG: the AVI holds an empty packet, a dropped frame, in each gap);
- **codecs and pixel formats**: VP9 (webm), MPEG-4 part 2 (avi), MJPEG (avi, mov), HEVC (mp4),
  AV1 (mkv), H.264 yuv444p and 10-bit yuv420p10le, odd dimensions (175x143, VP9);
- **a late start**: the first frame at 1.5 s (mp4 writes it as an edit list; mkv as the pts);
- **garbled first packets**: an H.264 mp4 whose first 5 video packets are noise.

Building all of them takes a few seconds (:func:`build`).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from real_audio import FPS, N_FRAMES, carphone_frames, garble

LATE = 1.5  # seconds: the first frame of the `late` files
GARBLED = 5  # the first packets of `garbled_start` replaced by noise
# The variable rate: frame i + 1 is 1 or 2 ticks of 1/FPS after frame i, in runs of 20.
VFR_TICKS = np.concatenate([[0], np.cumsum([1 if (i // 20) % 2 == 0 else 2
                                            for i in range(N_FRAMES - 1)])])

# name: (file, encoder, pixel format, display rotation as a phone's `rotate` tag (clockwise
#        degrees), pts of each frame in ticks of 1/FPS (None: 0, 1, 2, ...), crop to 175x143)
VARIANTS = {
    "rotate90": ("rotate90.mp4", "libx264", "yuv420p", 90, None, False),
    "rotate180": ("rotate180.mp4", "libx264", "yuv420p", 180, None, False),
    "rotate270": ("rotate270.mov", "libx264", "yuv420p", 270, None, False),
    "vfr_mp4": ("vfr_mp4.mp4", "libx264", "yuv420p", 0, VFR_TICKS, False),
    "vfr_mkv": ("vfr_mkv.mkv", "libx264", "yuv420p", 0, VFR_TICKS, False),
    "vp9": ("vp9.webm", "libvpx-vp9", "yuv420p", 0, None, False),
    "mpeg4": ("mpeg4.avi", "mpeg4", "yuv420p", 0, None, False),
    "mjpeg_avi": ("mjpeg_avi.avi", "mjpeg", "yuvj420p", 0, None, False),
    "vfr_avi": ("vfr_avi.avi", "mjpeg", "yuvj420p", 0, VFR_TICKS, False),
    "mjpeg_mov": ("mjpeg_mov.mov", "mjpeg", "yuvj422p", 0, None, False),
    "hevc": ("hevc.mp4", "libx265", "yuv420p", 0, None, False),
    "av1": ("av1.mkv", "libsvtav1", "yuv420p", 0, None, False),
    "h264_444": ("h264_444.mp4", "libx264", "yuv444p", 0, None, False),
    "h264_10bit": ("h264_10bit.mkv", "libx264", "yuv420p10le", 0, None, False),
    "odd": ("odd.webm", "libvpx-vp9", "yuv420p", 0, None, True),
    "late_mp4": ("late_mp4.mp4", "libx264", "yuv420p", 0, np.arange(N_FRAMES) + 45, False),
    "late_mkv": ("late_mkv.mkv", "libx264", "yuv420p", 0, np.arange(N_FRAMES) + 45, False),
}
ODD = (143, 175)  # height, width
OPTIONS = {"libx264": {"preset": "ultrafast", "crf": "18"},
           "libx265": {"preset": "ultrafast", "x265-params": "log-level=none"},
           "libsvtav1": {"preset": "12", "svtav1-params": "log-level=0"},
           "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}}


def stored(frames: np.ndarray, rotate: int) -> np.ndarray:
    """``frames`` as a camera stores them when it tags them ``rotate`` (clockwise degrees, the
    turn that shows them upright): turned ``rotate`` degrees counterclockwise."""
    return np.ascontiguousarray(np.rot90(frames, rotate // 90, axes=(1, 2)))


def encode(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, rotate: int = 0,
           ticks: np.ndarray | None = None) -> Path:
    """``frames`` (RGB, shown upright) encoded by ``codec``, stored as :func:`stored` with the
    display matrix of ``rotate``, frame ``i`` at ``ticks[i] / FPS`` seconds."""
    pictures = stored(frames, rotate)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=FPS)
        video.height, video.width = pictures.shape[1:3]
        video.pix_fmt = pix_fmt
        video.options = dict(OPTIONS.get(codec, {}))
        video.codec_context.thread_count = 1
        if rotate:
            video.set_display_rotation(-rotate)  # PyAV's angle is counterclockwise
        for i, image in enumerate(pictures):
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts = i if ticks is None else int(ticks[i])
            picture.time_base = Fraction(1) / FPS
            container.mux(video.encode(picture))
        container.mux(video.encode())
    return path


# Every file :func:`build` writes: the variants, and the mp4 with its first packets garbled.
ALL = (*VARIANTS, "garbled_start")


def build(dest: Path, carphone: Path) -> dict[str, Path]:
    """Every file of :data:`ALL` in ``dest``: ``{name: path}``."""
    dest.mkdir(parents=True, exist_ok=True)
    frames = carphone_frames(carphone)
    assert len(frames) == N_FRAMES
    paths = {}
    for name, (file, codec, pix_fmt, rotate, ticks, odd) in VARIANTS.items():
        source = np.ascontiguousarray(frames[:, :ODD[0], :ODD[1]]) if odd else frames
        paths[name] = encode(dest / file, source, codec, pix_fmt, rotate, ticks)
    paths["plain"] = encode(dest / "plain.mp4", frames, "libx264", "yuv420p")
    paths["garbled_start"] = garble(paths["plain"], dest / "garbled_start.mp4", "video",
                                    GARBLED)
    return paths
