"""Real footage in the video shapes people's files come in (:mod:`real_video`: carphone's real
frames with a phone's rotation, a variable frame rate, VP9, MPEG-4, MJPEG, HEVC, AV1, 4:4:4,
10-bit, odd dimensions, a late start, garbled first packets): what decoding and probing make of
each, fast (no detector). The route on them (MTCNN, predict) is in test_real_video_route.py."""

from fractions import Fraction

import numpy as np
import pytest

import real_video
from pipeline.data.faces.video import frame_batches, upright, video_rotation
from pipeline.data.media import MediaError, probe_video, timed_rate, truncation, video_frames

CFR = float(Fraction(30000, 1001))
DECODABLE = [v for v in real_video.VARIANTS]


def _decoded(path):
    return np.concatenate(list(frame_batches(path, 32)))


@pytest.fixture(scope="module")
def plain(shaped_videos):
    """The upright H.264 frames every variant is compared with."""
    return _decoded(shaped_videos["plain"]).astype(np.float32)


@pytest.mark.parametrize("variant", ["rotate90", "rotate180", "rotate270"])
def test_a_phones_rotation_is_applied_when_decoding(shaped_videos, plain, variant):
    """Frames stored sideways (or upside down) with a display matrix come out as they are shown:
    the stored size turned, and the picture of the upright file (before: sideways, 144 wide and
    176 high, and the man upside down at 180)."""
    frames = _decoded(shaped_videos[variant])
    assert frames.shape == plain.shape
    error = np.abs(frames.astype(np.float32) - plain).mean()
    wrong = min(np.abs(upright(f, 180).astype(np.float32) - p).mean()
                for f, p in zip(frames[:3], plain[:3]))
    assert error < 4 < wrong  # 2.6 measured (two encodings of the same frames); turned: > 20
    # the record says it as PyAV's counterclockwise angle: a phone's rotate=90 is -90, i.e. 270
    assert video_rotation(shaped_videos[variant]) == (360 - int(variant[6:])) % 360
    assert video_rotation(shaped_videos["plain"]) == 0


@pytest.mark.parametrize("variant", DECODABLE)
def test_every_codec_pixel_format_and_size_decodes_every_frame(shaped_videos, plain, variant):
    """Each variant: all 120 frames decode, upright, at the stored size (175x143 for the odd
    one), close to the H.264 file's pictures, and the probe counts the same 120."""
    frames = _decoded(shaped_videos[variant])
    height, width = real_video.ODD if real_video.VARIANTS[variant][5] else plain.shape[1:3]
    assert frames.shape == (120, height, width, 3)
    error = np.abs(frames.astype(np.float32) - plain[:, :height, :width]).mean()
    assert error < 10  # 2.5 (H.264, VP9) to 8.1 (MPEG-4 part 2) measured
    assert probe_video(shaped_videos[variant]).n_frames == 120


@pytest.mark.parametrize("variant", ["vfr_mkv", "vfr_mp4", "vfr_avi"])
def test_a_variable_frame_rate_is_measured_from_the_timestamps(shaped_videos, variant):
    """120 frames over 5.97 s (runs of 1/30 s and 1/15 s steps): the probe's rate is 120 over
    the time they span, in mkv and avi as in mp4 (before: mkv and avi took their header's
    29.97 fps, which put the last frame 2 s early on the audio); constant-rate files keep their
    exact declared rate."""
    span = (real_video.VFR_TICKS[-1] + 1) / CFR
    info = probe_video(shaped_videos[variant])
    assert info.n_frames == 120
    assert info.fps == pytest.approx(120 / span, rel=1e-3)
    assert info.duration == pytest.approx(span, rel=1e-3)
    for constant in ("plain", "vp9", "mpeg4", "late_mkv", "h264_10bit", "odd"):
        assert probe_video(shaped_videos[constant]).fps == CFR  # exactly: bytes unchanged


def test_how_far_a_variable_rate_puts_frames_off_their_timestamps(shaped_videos):
    """``drift``: the farthest frame's timestamp from ``i / fps``: 0.33 s for runs of 20 frames
    at 1/30 s and 1/15 s (10 frames' worth), 0 up to timestamp rounding for a constant rate; an
    mp4 that declares its count is read for it only when asked (``timed``: the manifest of
    ``faces`` output and ``predict`` ask; a training set's loader does not read every file)."""
    for variant in ("vfr_mkv", "vfr_mp4", "vfr_avi"):
        assert probe_video(shaped_videos[variant], timed=True).drift == pytest.approx(0.328, abs=2e-3)
    assert probe_video(shaped_videos["vfr_mkv"]).drift == pytest.approx(0.328, abs=2e-3)
    assert probe_video(shaped_videos["vfr_mp4"]).drift == 0.0  # not read
    for constant in ("plain", "vp9", "mpeg4", "late_mp4", "late_mkv", "mjpeg_mov"):
        assert probe_video(shaped_videos[constant], timed=True).drift < 0.002  # ms stamps: 0.001


def test_an_avis_dropped_frames_are_no_truncation(shaped_videos, tmp_path):
    """An AVI's header counts frame slots (179 for the variable-rate file), its packets fill 120:
    the 59 gaps are dropped frames, not a cut (before: "truncated file: the container declares
    179 video frames, only 120 are in it", and the whole video skipped by ``faces`` and
    ``extract``); the same file cut short is still truncated."""
    path = shaped_videos["vfr_avi"]
    assert video_frames(path) == (120, 120) and truncation(*video_frames(path)) is None
    data = path.read_bytes()
    for share in (0.5, 0.97):
        cut = tmp_path / f"cut{share}.avi"
        cut.write_bytes(data[:int(len(data) * share)])
        assert truncation(*video_frames(cut)).startswith("truncated file")


def test_timed_rate_keeps_the_declared_rate_within_one_percent():
    class Packet:
        def __init__(self, pts, duration):
            self.pts, self.duration = pts, duration

    ms = [Packet(round(i * 1000 / CFR), 33) for i in range(120)]  # mkv's millisecond stamps
    assert timed_rate(ms, Fraction(1, 1000), CFR) == CFR
    slow = [Packet(i * 2, 2) for i in range(10)]
    assert timed_rate(slow, Fraction(1, 30), 30.0) == pytest.approx(15.0)
    assert timed_rate(slow[:1], Fraction(1, 30), 30.0) == 30.0  # one frame: nothing to measure


def test_a_late_start_keeps_every_frame(shaped_videos):
    """The first frame at 1.5 s (an mp4 edit list, an mkv's first pts): every frame decodes, in
    order, and the rate is the declared one."""
    for variant in ("late_mp4", "late_mkv"):
        info = probe_video(shaped_videos[variant])
        assert (info.n_frames, info.fps) == (120, CFR)


def test_garbled_first_packets_are_one_line_naming_the_file(shaped_videos):
    """The first 5 packets noise (the key frame every later frame needs): one MediaError line
    naming the file and FFmpeg's reason; nothing else is read from it."""
    path = shaped_videos["garbled_start"]
    with pytest.raises(MediaError) as caught:
        _decoded(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unreadable video (") and "\n" not in message
