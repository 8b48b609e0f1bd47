"""The engine feeds an extractor through its kind's base class only: an audio embedding extractor
with a non-log-mel frontend (the raw waveform at 1000 Hz, edge padding) defined here runs end to end
without any change to the engine."""

from dataclasses import dataclass

import numpy as np
import torch

from extract_fixtures import make_dataset
from pipeline.data.manifest import load_clips
from pipeline.data.media import decode_audio
from pipeline.features.audio_windows import fill_strided, frame_windows, strided_indices
from pipeline.features.extractors import names, register
from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor
from pipeline.features.store import FeatureStore
from stages.extract import ExtractConfig, run_extract


@dataclass
class WaveMeanConfig:
    windows: tuple[int, ...] = (2, 5)  # in video frames


class WaveMean(AudioEmbeddingExtractor):
    """Mean of the raw waveform over each window: frontend [T, 1] at 1000 rows/s."""

    name = "test_wave_mean"
    Config = WaveMeanConfig
    has_weights = False
    pad_mode = "edge"
    embedding_dim = 1

    @property
    def frontend_sample_rate(self) -> int:
        return 1000

    @property
    def frontend_frame_rate(self) -> float:
        return 1000.0

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        return np.asarray(waveform, dtype=np.float32)[:, None]

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        return windows.float().mean(dim=1)


if WaveMean.name not in names():
    register(WaveMean)


def test_a_non_log_mel_audio_embedding_runs_through_the_engine(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=3, n_frames=18, fps=10.0, audio=[True, False, True])
    store_path = tmp_path / "f.zarr"
    config = ExtractConfig(extractors=["test_wave_mean"], batch_size=4, audio_stride=2, device="cpu",
                           precision="fp32")  # as WaveMean() below
    result = run_extract(config, manifests, store_path)
    assert result.ok and result.clips_done == 3 and result.arrays_written == 3 * 3
    store = FeatureStore(store_path)
    ext = WaveMean()
    for clip in load_clips(manifests):
        for w in (2, 5):
            stored = store.read(clip.clip_id, f"test_wave_mean_w{w}")
            assert stored.dtype == np.float16 and stored.shape == (18, 1)
            key = store.marker(clip.clip_id, f"test_wave_mean_w{w}")["cache_key"]
            if clip.audio_path is None:
                assert not stored.any() and key == f"{ext.cache_key}-stride2-noaudio"
                continue
            assert key == f"{ext.cache_key}-stride2"
            # The reference: the waveform itself, windowed with edge padding, averaged directly.
            wave = decode_audio(clip.audio_path, 1000)[:, None]
            indices = strided_indices(18, 2)
            windows = frame_windows(wave, 1000.0, 18, clip.fps, w, indices, pad="edge")
            expected = fill_strided(windows.mean(axis=1), indices, 18).astype(np.float16)
            np.testing.assert_allclose(stored.astype(np.float32), expected.astype(np.float32),
                                       rtol=1e-3, atol=1e-4)
            # Frame 0's window starts before the clip: edge padding, not the clip's minimum.
            assert stored[0, 0] != np.float16(wave.min())
    assert run_extract(config, manifests, store_path).nothing_to_do
