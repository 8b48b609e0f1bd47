"""``logmel``: a log-mel spectrogram in dB, ``float32 [T_mel, n_mels]``, matching librosa's defaults.

torchaudio's ``MelSpectrogram`` with ``mel_scale="slaney"``, ``norm="slaney"`` and zero padding at
the edges equals ``librosa.feature.melspectrogram`` (Hann window, ``center=True``, power 2) to
~1e-6 of the peak; the dB step is librosa's ``power_to_db(ref=1.0, amin=1e-10, top_db=80)``.
torchaudio's own defaults (HTK scale, no filter norm, reflect padding) differ by tens of dB.

Presets, each overridable field by field:

* ``kim2023`` (paper 000): 2048-point FFT, hop 1024, 128 mels (all in samples, as the paper gives
  them): 15.6 frames/s at 16 kHz.
* ``jin2021`` (paper 003): 64 mels, 10 ms window, 5 ms hop (converted to samples at the sample
  rate: win 160, hop 80 at 16 kHz): 200 frames/s. The paper names no FFT size; we zero-pad to the
  next power of two >= twice the window (512 at 16 kHz; the window sits centred in it, as in
  torch.stft and librosa), so that even the narrowest low-frequency mel filters span several bins.

Frame ``j`` is centred at ``j * hop / sample_rate`` seconds; a waveform of ``n`` samples gives
``1 + n // hop`` frames. Long clips are computed in blocks of frames cut from the same padded
waveform, so the result equals a one-shot computation (to float rounding) while peak memory
stays bounded.

**The same bytes whatever the thread count.** torch's mel projection (an MKL ``sgemm`` of the
power spectrogram by the filterbank) splits its sums differently with 3 threads or more than
with 1 or 2 when ``n_mels`` is small: at 20 mels, 1 and 3 threads gave 19,374 different values
of 187,520 on a 10-minute clip, up to 5.7e-6 dB (``tests/bench/bench_logmel.py``), so an
in-process run (all cores) and a ``processes:N`` run (cores / N threads each) stored different
log-mels. So the projection and the dB step run in numpy, in
float64, each filter summing its own bins in a fixed order (:func:`project_mel`), and round to
float32 once; the power spectrogram (torch's STFT) is the same at every thread count. Version 2
(cache keys changed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torchaudio

from pipeline.errors import PipelineError
from pipeline.features.extractors.base import ArraySpec, AudioExtractor, register

PRESETS = ("kim2023", "jin2021")
AMIN = 1e-10  # librosa's power floor before the log


@dataclass
class LogMelConfig:
    preset: str = "kim2023"  # "kim2023" (paper 000) or "jin2021" (paper 003); fields below override
    sample_rate: int = 16000  # Hz; audio is decoded and resampled to this before compute()
    n_fft: int | None = None  # FFT size in samples; unset: from the preset
    win_length: int | None = None  # Hann window in samples (centred in n_fft); unset: preset
    hop_length: int | None = None  # samples between frames; unset: preset
    n_mels: int | None = None  # mel bands; unset: preset
    f_min: float = 0.0  # lowest mel filter edge, Hz
    f_max: float | None = None  # highest mel filter edge, Hz; unset: sample_rate / 2
    top_db: float = 80.0  # keep this many dB below the clip's peak (librosa's default); 0: no floor


@dataclass(frozen=True)
class MelParams:
    """A config with its preset applied: every number the transform needs."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float


def resolve(config: LogMelConfig) -> MelParams:
    """Apply the preset, then the explicit fields; reject impossible combinations."""
    sr = config.sample_rate
    if config.preset == "kim2023":
        preset = dict(n_fft=2048, win_length=2048, hop_length=1024, n_mels=128)
    elif config.preset == "jin2021":
        win = round(0.010 * sr)
        preset = dict(n_fft=1 << (2 * win - 1).bit_length(), win_length=win,
                      hop_length=round(0.005 * sr), n_mels=64)
    else:
        raise PipelineError(
            f"logmel: unknown preset {config.preset!r}; choose from {', '.join(PRESETS)}")
    n_fft = config.n_fft or preset["n_fft"]
    # A smaller explicit n_fft without a window shrinks the preset's window to fit it.
    win_length = config.win_length or min(preset["win_length"], n_fft)
    params = MelParams(
        sample_rate=sr,
        n_fft=n_fft,
        win_length=win_length,
        hop_length=config.hop_length or preset["hop_length"],
        n_mels=config.n_mels or preset["n_mels"],
        f_min=config.f_min,
        f_max=config.f_max if config.f_max is not None else sr / 2,
    )
    if not (0 < params.win_length <= params.n_fft and params.hop_length > 0 and params.n_mels > 0):
        raise PipelineError(f"logmel: need 0 < win_length <= n_fft and positive hop, mels: {params}")
    if not 0 <= params.f_min < params.f_max <= sr / 2:
        raise PipelineError(f"logmel: need 0 <= f_min < f_max <= sample_rate / 2: {params}")
    return params


def project_mel(power: np.ndarray, filters: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """``float32 [n_freqs, T]`` power -> ``float64 [n_mels, T]``: each filter ``(first bin,
    float64 weights)`` sums its bins one after another (numpy, one thread, a fixed order: the
    result does not depend on any thread count)."""
    out = np.zeros((len(filters), power.shape[1]))
    for m, (first, weights) in enumerate(filters):
        for k, weight in enumerate(weights):
            out[m] += weight * power[first + k].astype(np.float64)
    return out


@register
class LogMel(AudioExtractor):
    name = "logmel"
    Config = LogMelConfig
    version = 2  # 2: projection and dB in float64 numpy, the same at every thread count
    has_weights = False
    block_frames: ClassVar[int] = 8192  # frames per block: bounds memory on long clips

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = resolve(self.config)

    @property
    def sample_rate(self) -> int:
        return self.params.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.params.sample_rate / self.params.hop_length

    def outputs(self) -> dict[str, ArraySpec]:
        # float32: dB values span ~100 dB and stage two may normalise them; the array is small.
        return {self.name: ArraySpec((self.params.n_mels,), dtype="float32", rate="audio")}

    def load(self) -> None:
        if self._model is None:
            p = self.params
            # center=False: compute() pads the whole clip once (zeros, like librosa's
            # pad_mode="constant") and cuts blocks of frames from it.
            self._model = torchaudio.transforms.MelSpectrogram(
                sample_rate=p.sample_rate, n_fft=p.n_fft, win_length=p.win_length,
                hop_length=p.hop_length, f_min=p.f_min, f_max=p.f_max, n_mels=p.n_mels,
                power=2.0, center=False, norm="slaney", mel_scale="slaney",
            ).eval()
            # The filterbank as (first bin, weights of its non-zero span) per mel band.
            bank = self._model.mel_scale.fb.numpy().astype(np.float64)  # [n_freqs, n_mels]
            self._filters = []
            for column in bank.T:
                bins = np.flatnonzero(column)
                first, last = (int(bins[0]), int(bins[-1]) + 1) if bins.size else (0, 0)
                self._filters.append((first, column[first:last]))

    def compute(self, waveform: np.ndarray) -> np.ndarray:
        self.load()
        p = self.params
        wave = np.asarray(waveform, dtype=np.float32)
        assert wave.ndim == 1 and wave.size > 0, f"expected a non-empty mono waveform, got {wave.shape}"
        half = p.n_fft // 2
        padded = torch.from_numpy(np.pad(wave, (half, half)))
        n_frames = 1 + (padded.numel() - p.n_fft) // p.hop_length
        blocks = []
        with torch.inference_mode():
            for start in range(0, n_frames, self.block_frames):
                stop = min(start + self.block_frames, n_frames)
                segment = padded[start * p.hop_length:(stop - 1) * p.hop_length + p.n_fft]
                power = project_mel(self._model.spectrogram(segment).numpy(), self._filters)
                blocks.append((10.0 * np.log10(np.maximum(power, AMIN))).astype(np.float32))
        db = np.ascontiguousarray(np.concatenate(blocks, axis=1).T)
        if self.config.top_db > 0:  # relative to the whole clip's peak, as librosa does per call
            np.maximum(db, db.max() - self.config.top_db, out=db)
        return db
