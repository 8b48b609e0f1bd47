"""``egemaps``: the 88 eGeMAPS v02 functionals per dynamic window, through ``opensmile``.

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al. 2016), the standard
paralinguistic baseline of affective computing; opensmile's wheel ships the library and its
configs, so there are no weights. The front end is the waveform itself at 16 kHz as ``[T, 1]``;
:meth:`embed` runs ``opensmile.Smile(eGeMAPSv02, Functionals).process_signal`` on each window's
samples (the window of each video frame, paper 000's 32/48/64 frames) and returns its 88 values.
Windows that run past the clip repeat its first/last sample (``pad_mode = "edge"``), a constant
that opensmile treats as silence (no voicing, no loudness change).

Stored as float32: some functionals are in Hz (formant frequencies, thousands) or dB, outside the
range float16 keeps exactly. Only the functionals are offered; the per-frame low-level descriptors
(``FeatureLevel.LowLevelDescriptors``, 100 Hz) are not stored yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor
from pipeline.features.extractors.base import ArraySpec, register

N_FUNCTIONALS = 88  # eGeMAPS v02


@dataclass
class EgemapsConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    sample_rate: int = 16000  # Hz, the rate the waveform is resampled to for opensmile


@register
class Egemaps(AudioEmbeddingExtractor):
    name = "egemaps"
    Config = EgemapsConfig
    has_weights = False
    pad_mode: ClassVar[str] = "edge"

    @property
    def frontend_sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frontend_frame_rate(self) -> float:
        return float(self.config.sample_rate)

    @property
    def embedding_dim(self) -> int:
        return N_FUNCTIONALS

    def outputs(self) -> dict[str, ArraySpec]:
        return {f"{self.name}_w{w}": ArraySpec((N_FUNCTIONALS,), dtype="float32") for w in self.windows}

    def load(self) -> None:
        if self._model is None:
            import opensmile

            self._model = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                          feature_level=opensmile.FeatureLevel.Functionals)

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        return np.asarray(waveform, dtype=np.float32).reshape(-1, 1)

    def embed(self, windows: Any) -> torch.Tensor:
        self.load()
        samples = np.asarray(torch.as_tensor(windows, dtype=torch.float32), dtype=np.float32)
        rows = [self._model.process_signal(w[:, 0], self.config.sample_rate).to_numpy()[0]
                for w in samples]
        return torch.from_numpy(np.stack(rows).astype(np.float32))
