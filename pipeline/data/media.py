"""Media I/O with PyAV (which bundles FFmpeg): probe videos, decode audio, write demo videos.

torchaudio's load/save need torchcodec, which does not work on the CPU install, so audio is
decoded here. Every failure raises :class:`MediaError` with the file and the reason in one line.

Alignment rule: video frame ``i`` covers ``[i / fps, (i + 1) / fps)`` seconds of the audio track,
so its centre is at ``(i + 0.5) / fps`` (``pipeline.features.audio_windows`` centres on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import PipelineError


class MediaError(PipelineError):
    """A media file that cannot be read: the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float  # average frame rate of the video stream
    n_frames: int  # frames in the video stream (counted by decoding headers if not declared)
    has_audio: bool  # the file has at least one audio stream
    duration: float  # seconds
    # Seconds the farthest frame's timestamp is from its time i / fps: a variable frame rate's
    # irregularity (0 for a constant rate; measured where the packets were read: see probe_video)
    drift: float = 0.0


def _fail(path: Path, reason: object) -> MediaError:
    return MediaError(f"{path}: {' '.join(str(reason).split())}")


def probe_video(path: str | Path, timed: bool = False) -> VideoInfo:
    """Frame rate, frame count and audio presence of a video file.

    The packets are read (not decoded) to count the frames unless an MP4 declares the count,
    and then the rate is measured from their timestamps too (:func:`timed_rate`), and how far
    they stray from ``i / fps`` (``drift``); ``timed`` reads an MP4's packets for the drift
    too (its declared count and rate kept)."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _fail(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise _fail(path, "video stream declares no frame rate")
            fps = float(rate)
            n_frames = stream.frames
            # AVI headers may count a trailing empty packet, and some files declare nothing:
            # count the non-empty packets (no decoding) unless an MP4 declares the count.
            count = not n_frames or path.suffix.lower() != ".mp4"
            drift = 0.0
            if count or timed:
                packets = [p for p in container.demux(stream) if p.size]
                if count:
                    n_frames = len(packets)
                    fps = timed_rate(packets, stream.time_base, fps)
                drift = frame_drift(packets, stream.time_base, fps)
            duration = n_frames / fps
            return VideoInfo(fps, int(n_frames), bool(container.streams.audio), duration, drift)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _fail(path, f"unreadable video ({e})") from None


def timed_rate(packets: list, time_base, declared: float) -> float:
    """The frame rate of a stream's ``packets`` from their timestamps: frames over the time
    they span (first timestamp to the last one plus its duration), when it is more than 1% off
    the ``declared`` rate; ``declared`` otherwise (it stays exact, e.g. 30000/1001).

    Matroska and WebM headers give a variable frame rate stream (a phone's) the rate of its
    first frames: 120 frames over 5.97 s declared at 29.97 fps would put the last frames' audio
    2 s early. Frame ``i``'s time is ``i / fps`` with the rate measured here, so a stream's
    frames are spread over the time they span; within it, a frame of a variable rate stream
    can be off its timestamp by up to the irregularity (docs/real-media.md, "Video shapes")."""
    stamps = sorted(p.pts for p in packets if p.pts is not None)
    if len(stamps) < 2 or time_base is None:
        return declared
    steps = np.diff(stamps)
    last = packets[-1].duration or float(np.median(steps))
    span = float((stamps[-1] - stamps[0] + last) * time_base)
    if span <= 0:
        return declared
    measured = len(packets) / span
    return measured if abs(measured / declared - 1) > 0.01 else declared


def frame_drift(packets: list, time_base, fps: float) -> float:
    """Seconds the farthest of ``packets``' timestamps (from the first, in order) is from its
    frame's time ``i / fps``: 0 up to rounding for a constant rate."""
    stamps = sorted(p.pts for p in packets if p.pts is not None)
    if len(stamps) < 2 or time_base is None:
        return 0.0
    seconds = (np.asarray(stamps, np.float64) - stamps[0]) * float(time_base)
    return float(np.abs(seconds - np.arange(len(stamps)) / fps).max())


def variable_rate(path: Path, info: VideoInfo) -> str:
    """The line that says a video's frames stray from their times ``i / fps`` (``info.drift``
    beyond a frame: a variable frame rate), naming the file."""
    return (f"{path}: variable frame rate: its frames are put at {info.fps:.4g} fps (their "
            f"average); one is {info.drift:.2f} s off its timestamp, and its audio window with it")


def video_frames(path: str | Path) -> tuple[int, int]:
    """(frames the container declares for its first video stream, less an AVI's dropped frames,
    0 when it declares none; frames whose data is in the file: its non-empty packets, counted
    without decoding).

    A file cut short after its index (``movflags=faststart``, or an AVI whose header counts the
    frames) still declares every frame; only its packets say how many are there. An AVI's header
    counts frame slots, and a dropped frame (a variable frame rate, a capture that could not
    keep up) is a slot without data, a gap in its packets' timestamps (one tick a slot): no
    frame, and no sign of a cut (before, 59 dropped of 179 made a whole file read as
    truncated). A cut file's missing slots are after its last packet: still counted."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _fail(path, "no video stream")
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            stamps = [p.pts for p in container.demux(stream) if p.size]
            if declared and "avi" in container.format.name.split(","):
                slots = [t for t in stamps if t is not None]
                if slots:
                    declared -= max(0, max(slots) - min(slots) + 1 - len(slots))
            return declared, len(stamps)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _fail(path, f"unreadable video ({e})") from None


def truncation(declared: int, present: int) -> str | None:
    """Why a video stream of ``present`` frames (decoded, or packets found) is a truncated file
    when its container declares ``declared``, or None. Real files are often a few frames off
    their declared count (edit lists, a dropped last frame: 98 declared, 95 decode), so a
    shortfall counts only above 3 frames and 1% of the declared count."""
    short = declared - present
    if declared <= 0 or short <= max(3, 0.01 * declared):
        return None
    return (f"truncated file: the container declares {declared} video frames, only {present} "
            "are in it")


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The first audio stream as float32 mono at ``sample_rate`` Hz (resampled by FFmpeg), on
    the video's clock: see :func:`decode_audio_track`."""
    return decode_audio_track(path, sample_rate)[0]


def decode_audio_track(path: str | Path, sample_rate: int) -> tuple[np.ndarray, float]:
    """:func:`decode_audio`, and the seconds of one frame of the track's codec (1024 samples for
    AAC; 0 for a codec without fixed frames, such as PCM): the granularity of its length."""
    samples, frame_seconds, _ = decode_audio_timed(path, sample_rate)
    return samples, frame_seconds


def decode_audio_timed(path: str | Path, sample_rate: int) -> tuple[np.ndarray, float, float]:
    """:func:`decode_audio_track`, and the seconds of silence put before the track's first
    sample (0 unless the track starts after the video).

    Channels are averaged into mono (as librosa's ``to_mono``; FFmpeg's own stereo downmix adds
    3 dB, so the same speech would come out louder from a stereo file than from a mono one).
    More than two channels (5.1, 7.1) are downmixed by FFmpeg, which keeps the centre channel,
    where films put the dialogue, at its level (an average of six channels would lose 15 dB of it,
    a downmix to stereo first 3 dB).
    Sample 0 is the video's first frame: a track whose first sample is later than the video's
    (a positive start time, a recorder started late) is preceded by that much silence, one that
    starts earlier loses its samples before the video. A file without video keeps its samples
    from its first one."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise _fail(path, "no audio stream")
            stream = container.streams.audio[0]
            codec = stream.codec_context
            frame_seconds = (codec.frame_size or 0) / (codec.sample_rate or sample_rate)
            origin = _video_start(container)
            resampler, start, chunks = None, None, []
            for frame in container.decode(stream):
                if resampler is None:  # mono or stereo as they are: averaged below
                    layout = frame.layout if len(frame.layout.channels) <= 2 else "mono"
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
                    start = frame.time
                chunks.extend(resampler.resample(frame))
            if resampler is not None:
                chunks.extend(resampler.resample(None))  # flush
            chunks = [_mono(out.to_ndarray()) for out in chunks]
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _fail(path, f"unreadable audio ({e})") from None
    if not chunks:
        raise _fail(path, "audio stream holds no samples")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    shift = 0
    if origin is not None and start is not None:
        shift = int(round((start - origin) * sample_rate))
        if shift > 0:
            samples = np.concatenate([np.zeros(shift, np.float32), samples])
        elif shift < 0:
            samples = samples[-shift:]
            if not len(samples):
                raise _fail(path, "the audio track ends before the video starts")
    return samples, frame_seconds, max(shift, 0) / sample_rate


def lead_frames(lead: float, fps: float) -> int:
    """How many of a clip's first frames a track that starts ``lead`` seconds into the video
    leaves without audio: frame ``i`` spans ``[i / fps, (i + 1) / fps)`` and has audio when
    ``i / fps`` is within the track. A lead of one video frame or less counts as none (tracks
    of one file start within a frame of each other, as they end)."""
    if lead <= 1 / fps:
        return 0
    return int(np.ceil(lead * fps - 1e-6))


def _mono(planes: np.ndarray) -> np.ndarray:
    """``[channels, n]`` float32 as ``[n]``: the mean of the channels; a mono track's samples
    as they are (a mean would turn its -0.0 into 0.0: not the same bytes as before)."""
    return planes[0] if len(planes) == 1 else planes.mean(axis=0, dtype=np.float32)


def _video_start(container: av.container.InputContainer) -> float | None:
    """Seconds at which the first video stream starts (0 when it declares nothing), or None for
    a file without video."""
    if not container.streams.video:
        return None
    video = container.streams.video[0]
    if video.start_time is None or video.time_base is None:
        return 0.0
    return float(video.start_time * video.time_base)


def short_audio(n_samples: int, sample_rate: int, n_frames: int, fps: float,
                frame_seconds: float, extra: float = 0.0) -> str | None:
    """Why a decoded track of ``n_samples`` is too short for a clip of ``n_frames`` at ``fps``,
    or None when it covers the clip.

    A video whose index is at the front (``movflags=faststart``) and whose data was cut off
    decodes without error, only shorter: its frame count still comes from the index. The
    tolerance is one video frame (audio and video tracks of one file end within a frame of each
    other) plus one frame of the audio codec (a track's length is a whole number of codec frames,
    and encoders trim the last one): 0.1 s + 0.064 s for 10 fps video with 16 kHz AAC; ``extra``
    seconds on top (``ExtractConfig.audio_short_tolerance``) for sources whose audio ends early.
    """
    have, need = n_samples / sample_rate, n_frames / fps
    tolerance = 1 / fps + frame_seconds + extra
    if need - have <= tolerance:
        return None
    return (f"the audio track ends at {have:.2f} s, before the {need:.2f} s of the clip's "
            f"{n_frames} frames at {fps:g} fps (tolerance {tolerance:.3f} s)")


def audio_frames(n_samples: int, sample_rate: int, n_frames: int, fps: float) -> int:
    """How many of a clip's first frames the audio track covers whole: frame ``i`` spans
    ``[i / fps, (i + 1) / fps)``, so it is covered when ``(i + 1) / fps`` is within the track."""
    return int(min(n_frames, np.floor(n_samples / sample_rate * fps + 1e-6)))


def read_image(path: str | Path) -> Image.Image:
    """An RGB face crop; raises MediaError for a missing, empty or undecodable file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() forces the full decode inside the try
    except FileNotFoundError:
        raise _fail(path, "no such image") from None
    except Image.DecompressionBombError as e:
        # Not an OSError: a header claiming 65000x65000 pixels must skip the clip, not the run.
        raise _fail(path, f"refused to decode ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError) as e:
        raise _fail(path, f"undecodable image ({e})") from None


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """Write uint8 RGB frames ``[T, H, W, 3]`` (H, W even) and optional mono float audio.

    Video is MPEG-4 part 2 at a fixed quality (fast, in every FFmpeg build); audio is AAC. The
    output is deterministic for the same input, which keeps the demo dataset byte-identical.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4" if path.suffix == ".mp4" else None) as container:
        video = container.add_stream("mpeg4", rate=rate)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.bit_rate = 2_000_000
        video.options = {"qscale": "4"}
        video.codec_context.thread_count = 1  # threads make output order-dependent
        stream_audio = None
        if audio is not None:
            stream_audio = container.add_stream("aac", rate=sample_rate)
            stream_audio.layout = "mono"
            stream_audio.codec_context.thread_count = 1
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if stream_audio is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            block = 1024  # AAC frame size
            for start in range(0, samples.shape[1], block):
                chunk = np.ascontiguousarray(samples[:, start:start + block])
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                for packet in stream_audio.encode(frame):
                    container.mux(packet)
            for packet in stream_audio.encode():
                container.mux(packet)
