"""The log-mel extractor against librosa (a reference nobody here wrote), for both paper presets."""

import librosa
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.features.extractors.logmel import LogMel, LogMelConfig, resolve


def chirp(seconds: float, sample_rate: int) -> np.ndarray:
    """A sweep from 100 Hz to about 5 kHz over a 1 kHz tone: energy in every part of the mel range."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sweep = np.sin(2 * np.pi * (100 * t + 2000 * t**2 / seconds))
    return (0.4 * sweep + 0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def librosa_logmel(wave: np.ndarray, extractor: LogMel) -> np.ndarray:
    p = extractor.params
    power = librosa.feature.melspectrogram(
        y=wave, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.win_length,
        window="hann", center=True, pad_mode="constant", power=2.0, n_mels=p.n_mels,
        fmin=p.f_min, fmax=p.f_max, htk=False, norm="slaney",
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0).T


@pytest.mark.parametrize(
    "preset, sample_rate", [("kim2023", 16000), ("jin2021", 16000), ("jin2021", 22050)])
def test_matches_librosa(preset, sample_rate):
    extractor = LogMel(LogMelConfig(preset=preset, sample_rate=sample_rate))
    wave = chirp(1.3, sample_rate)
    ours = extractor.compute(wave)
    ref = librosa_logmel(wave, extractor)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert ours.shape == (1 + len(wave) // extractor.params.hop_length, extractor.params.n_mels)
    # In dB, everywhere (down to the 80 dB floor): far below anything a feature could notice.
    assert np.abs(ours - ref).max() < 0.01
    # In power, relative to the peak.
    power, ref_power = 10 ** (ours / 10.0), 10 ** (ref / 10.0)
    assert np.abs(power - ref_power).max() / ref_power.max() < 1e-5


def test_presets_follow_the_papers():
    kim = resolve(LogMelConfig(preset="kim2023"))
    assert (kim.n_fft, kim.win_length, kim.hop_length, kim.n_mels) == (2048, 2048, 1024, 128)
    jin = resolve(LogMelConfig(preset="jin2021"))  # 10 ms window, 5 ms hop at 16 kHz
    assert (jin.n_fft, jin.win_length, jin.hop_length, jin.n_mels) == (512, 160, 80, 64)
    assert LogMel(LogMelConfig(preset="jin2021")).frame_rate == 200.0
    assert LogMel(LogMelConfig(preset="kim2023")).frame_rate == 15.625


def test_explicit_fields_override_the_preset():
    p = resolve(LogMelConfig(preset="jin2021", n_mels=40, n_fft=1024))
    assert (p.n_fft, p.win_length, p.hop_length, p.n_mels) == (1024, 160, 80, 40)
    p = resolve(LogMelConfig(preset="kim2023", n_fft=1024))  # the window shrinks to fit
    assert (p.n_fft, p.win_length) == (1024, 1024)


@pytest.mark.parametrize(
    "config",
    [LogMelConfig(preset="nope"), LogMelConfig(win_length=4096), LogMelConfig(f_min=9000.0)],
)
def test_bad_configs_are_refused_with_a_message(config):
    with pytest.raises(PipelineError, match="logmel"):
        LogMel(config)


def test_blocks_equal_one_shot_computation():
    extractor = LogMel(LogMelConfig(preset="jin2021"))
    wave = chirp(0.7, 16000)
    whole = extractor.compute(wave)
    extractor.block_frames = 7  # many blocks, and a short last one
    # Same frames from the same padded waveform; only FFT batching may change the last bits.
    np.testing.assert_allclose(extractor.compute(wave), whole, rtol=0, atol=1e-4)


def test_floor_is_top_db_below_the_clip_peak():
    wave = chirp(0.5, 16000)
    wave[: len(wave) // 2] = 0.0  # digital silence: floored, not -100 dB
    out = LogMel(LogMelConfig(preset="kim2023")).compute(wave)
    assert out.min() == pytest.approx(out.max() - 80.0)
    unfloored = LogMel(LogMelConfig(preset="kim2023", top_db=0.0)).compute(wave)
    assert unfloored.min() == pytest.approx(-100.0)  # 10 * log10(amin)


@pytest.mark.parametrize("n_mels", [20, 128])
def test_the_same_bytes_at_every_thread_count(n_mels):
    """An in-process run (all cores) and a pool worker (cores / N threads) store the same log-mel:
    torch's sgemm projection differed by up to 5.7e-6 dB between 1 and 3 threads at 20 mels."""
    import torch

    extractor = LogMel(LogMelConfig(n_mels=n_mels))
    wave = np.random.default_rng(0).normal(0, 0.3, 16000 * 60 + 4321).astype(np.float32)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 5):
            torch.set_num_threads(threads)
            results.append(extractor.compute(wave))
    finally:
        torch.set_num_threads(previous)
    assert all(r.tobytes() == results[0].tobytes() for r in results[1:])
