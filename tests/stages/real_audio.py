"""Real media with sound, built for the tests with PyAV: carphone_pristine's 120 real frames (a man
talking in a car, QCIF, 30000/1001 fps) muxed with 4 s of real speech (pyannote.audio's sample
wav: two people talking, 16 kHz mono), in the containers and codecs people's videos come in, and
with the audio cases that break pipelines: a track shorter or longer than the video, a silent
track (digital zeros), a track that starts late (its first packet at a positive pts), one that
starts before the video (the video's first frame at 0.5 s), 5.1 surround with the speech in the
centre channel only (a film's dialogue), and none.

Each file's audio is the same speech, so each can be checked against the wav itself
(:data:`SPEECH_START` seconds into it). Building all of them takes about a second.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS = Fraction(30000, 1001)
N_FRAMES = 120
SPEECH_START = 8.3  # seconds into sample.wav: both speakers talk from here (sample.rttm)
LATE = 1.0  # seconds: where the late track's first sample is

EARLY = 0.5  # seconds: where the early file's first video frame is (its audio starts at 0)

# name: (container file, audio codec, rate, layout, audio length as a share of the video's,
#        digital zeros in place of speech, audio's first sample on the video's clock in seconds)
VARIANTS = {
    "aac": ("aac.mp4", "aac", 44100, "stereo", 1.0, False, 0.0),
    "opus": ("opus.mkv", "libopus", 48000, "mono", 1.0, False, 0.0),
    "pcm": ("pcm.mov", "pcm_s16le", 16000, "mono", 1.0, False, 0.0),
    "surround": ("surround.mkv", "aac", 48000, "5.1", 1.0, False, 0.0),
    "short": ("short.mp4", "aac", 44100, "stereo", 0.5, False, 0.0),
    "long": ("long.mp4", "aac", 44100, "stereo", 1.5, False, 0.0),
    "silent": ("silent.mp4", "aac", 44100, "stereo", 1.0, True, 0.0),
    "late": ("late.mkv", "libopus", 48000, "mono", 1.0 - LATE * float(FPS) / N_FRAMES, False, LATE),
    "early": ("early.mkv", "libopus", 48000, "mono", 1.0 + EARLY * float(FPS) / N_FRAMES, False,
              -EARLY),
    "mute": ("mute.mp4", None, 0, "", None, False, 0.0),
}


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM wav as float32 in [-1, 1) and its rate (the stdlib reader: nothing of ours)."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return data.astype(np.float32) / 32768, w.getframerate()


def speech_at(wav: np.ndarray, rate: int, seconds: float, target: int,
              start: float = SPEECH_START) -> np.ndarray:
    """``seconds`` of the wav from ``start``, resampled to ``target`` Hz (by FFmpeg's resampler,
    as the encoders would get it from a recorder at that rate)."""
    first = int(round(start * rate))
    piece = wav[first:first + int(round(seconds * rate))]
    if target == rate:
        return piece
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out)


def carphone_frames(path: Path) -> np.ndarray:
    """The 120 decoded RGB frames of carphone_pristine ``[120, 144, 176, 3]``."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def mux(path: Path, frames: np.ndarray, audio: np.ndarray | None, codec: str | None, rate: int,
        layout: str, start: float) -> None:
    """H.264 video of ``frames`` at 30000/1001 fps and, unless ``codec`` is None, ``audio`` (mono
    float at ``rate``) encoded by ``codec`` in ``layout`` (every channel, or the centre channel
    alone when there is one), its first sample ``start`` s after the first frame (before it when
    negative: the video then starts later)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "23", "preset": "ultrafast"}
        video.codec_context.thread_count = 1
        sound = None
        if codec is not None:
            sound = container.add_stream(codec, rate=rate)
            sound.layout = layout
            sound.codec_context.thread_count = 1
        first_frame = int(round(max(0.0, -start) * FPS))  # in frames: the time base is 1 / fps
        for i, image in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts = first_frame + i
            container.mux(video.encode(picture))
        container.mux(video.encode())
        if sound is None:
            return
        names = [c.name for c in av.AudioLayout(layout).channels]
        fmt = sound.codec_context.format.name  # the encoder's own sample format
        block = sound.codec_context.frame_size or 1024
        offset = int(round(max(0.0, start) * rate))
        for first in range(0, len(audio), block):
            piece = audio[None, first:first + block]
            chunk = np.repeat(piece, len(names), 0)
            if "FC" in names and len(names) > 2:  # dialogue in the centre, the rest silent
                chunk = np.where(np.array(names)[:, None] == "FC", chunk, 0).astype(np.float32)
            chunk = np.ascontiguousarray(chunk)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = offset + first
            frame.time_base = Fraction(1, rate)
            if fmt != "fltp":
                frame = av.AudioResampler(format=fmt, layout=layout, rate=rate).resample(frame)[0]
                frame.pts = offset + first
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


def garble(source: Path, dest: Path, kind: str = "audio", first: int | None = None,
           seed: int = 0) -> Path:
    """``source`` with the bytes of its ``kind`` ("audio" or "video") packets replaced by noise,
    every one or the ``first`` ones (same sizes and timestamps): a file whose audio track (or
    first frames) the decoder refuses while the rest plays."""
    noise = np.random.default_rng(seed)
    seen = 0
    with av.open(str(source)) as src, av.open(str(dest), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == kind and (first is None or seen < first):
                seen += 1
                garbled = av.Packet(noise.integers(0, 256, packet.size, np.uint8).tobytes())
                garbled.pts, garbled.dts = packet.pts, packet.dts
                garbled.time_base = packet.time_base
                garbled.stream = streams[packet.stream.index]
                packet = garbled
            else:
                packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return dest


# Every file :func:`build` writes: the variants, and the AAC mp4 with its audio garbled.
ALL = (*VARIANTS, "garbled")


def build(dest: Path, carphone: Path, speech_wav: Path) -> dict[str, Path]:
    """Every file of :data:`ALL` in ``dest``: ``{name: path}``."""
    dest.mkdir(parents=True, exist_ok=True)
    frames = carphone_frames(carphone)
    assert len(frames) == N_FRAMES
    wav, wav_rate = read_wav(speech_wav)
    video_seconds = N_FRAMES / float(FPS)
    paths = {}
    for name, (file, codec, rate, layout, share, silent, start) in VARIANTS.items():
        paths[name] = dest / file
        audio = None
        if codec is not None:  # an early track holds speech from before SPEECH_START
            audio = speech_at(wav, wav_rate, share * video_seconds, rate,
                              SPEECH_START + min(0.0, start))
            if silent:
                audio = np.zeros_like(audio)
        mux(paths[name], frames, audio, codec, rate, layout, start)
    paths["garbled"] = garble(paths["aac"], dest / "garbled.mp4")
    return paths
