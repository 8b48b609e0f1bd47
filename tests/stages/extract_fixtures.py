"""Test-only extractors and tiny datasets for the extraction tests (imported as a top-level module).

``test_mean_colour`` is an image extractor cheap enough to run in every executor: per-frame mean
and standard deviation of each colour channel of an 8x8 thumbnail, times a scale read from its
weights file (so a weights change changes its output). Two environment variables, read by its
forward, let a test interrupt a run without changing the extractor's cache key:
``FER_TEST_DELAY`` (seconds to sleep per forward, so that a test can kill a run mid-way) and
``FER_TEST_FAIL_AFTER`` (raise on the forward after that many). In-process it records which
threads preprocessed and ran the model, and the batch sizes it saw.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.data.manifest import Clip, write_manifest
from pipeline.data.media import write_video
from pipeline.features.config import ExtractConfig
from pipeline.features.extractors import ArraySpec, ImageExtractor, names, register
from pipeline.fusion.data import FeatureRequest


@dataclass
class MeanColourConfig:
    size: int = 8  # thumbnail side in pixels
    scale: float = 1.0  # multiplies the output (a config change that changes the values)


class MeanColour(ImageExtractor):
    name = "test_mean_colour"
    Config = MeanColourConfig
    loads = 0  # how many times a model was built in this process
    batches: list[int] = []  # rows of every forward in this process
    preprocess_threads: set[int] = set()
    forward_threads: set[int] = set()

    def outputs(self) -> dict[str, ArraySpec]:
        return {self.name: ArraySpec((6,))}

    def load(self) -> None:
        if self._model is None:
            scale = 1.0
            if self.weights is not None:
                scale = float(torch.load(self.weights, weights_only=True)["scale"])
            self._model = scale
            type(self).loads += 1

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        type(self).preprocess_threads.add(threading.get_ident())
        small = image.resize((self.config.size, self.config.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.load()
        cls = type(self)
        cls.forward_threads.add(threading.get_ident())
        cls.batches.append(batch.shape[0])
        if len(cls.batches) > int(os.environ.get("FER_TEST_FAIL_AFTER", "1000000000")):
            raise RuntimeError("FER_TEST_FAIL_AFTER reached")
        time.sleep(float(os.environ.get("FER_TEST_DELAY", "0")))
        flat = batch.flatten(2)
        out = torch.cat([flat.mean(-1), flat.std(-1)], dim=1) * self.config.scale * self._model
        return {self.name: out}


if MeanColour.name not in names():
    register(MeanColour)

# Small tdnn and logmel configs: real extractors, a fraction of a second per clip.
TINY_TDNN = {"windows": [4, 8], "channels": [8, 8, 8, 8, 16], "embedding_dim": 8}
TINY_LOGMEL = {"n_fft": 512, "hop_length": 256, "n_mels": 16}

# The store the metadata-repair tests damage: one image and one audio extractor, tiny and fast.
REPAIR_CONFIG = ExtractConfig(extractors=["test_mean_colour", "logmel"],
                              configs={"logmel": dict(TINY_LOGMEL)}, batch_size=4, device="cpu",
                              precision="fp32")
REPAIR_REQUEST = FeatureRequest(arrays=("test_mean_colour", "logmel"), audio=("logmel",),
                                series=("logmel",))


def make_dataset(root: Path, n_clips: int = 4, n_frames: int = 24, fps: float = 10.0,
                 audio: bool | list[bool] = True, missing: tuple[int, ...] = (3,),
                 size: int = 32, seed: int = 0, split: str = "train", first: int = 0) -> Path:
    """Write clips ``clip<first>`` .. (JPEG crops with frames ``missing``, an mp4 with a tone) and
    ``root/manifests/<split>.jsonl`` for them; returns the manifest directory."""
    rng = np.random.default_rng(seed + first)
    root = Path(root)
    clips = []
    with_audio = audio if isinstance(audio, list) else [audio] * n_clips
    for j in range(n_clips):
        k = first + j
        clip_id = f"clip{k:02d}"
        frames_dir = root / "frames" / clip_id
        frames_dir.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(n_frames, size, size, 3), dtype=np.uint8)
        for i in range(n_frames):
            if i not in missing:
                Image.fromarray(pixels[i]).save(frames_dir / f"{i + 1:05d}.jpg", quality=90)
        video = root / "videos" / f"{clip_id}.mp4"
        sr = 16000
        t = np.arange(int(n_frames / fps * sr)) / sr
        tone = (0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32)
        write_video(video, pixels, fps, tone if with_audio[j] else None, sr)
        clips.append(Clip(clip_id=clip_id, split=split, video_id=clip_id, n_frames=n_frames,
                          fps=fps, frames_dir=str(frames_dir), video_path=str(video),
                          audio_path=str(video) if with_audio[j] else None,
                          labels=np.zeros(n_frames, dtype=np.int8)))
    manifests = root / "manifests"
    write_manifest(manifests / f"{split}.jsonl", clips)
    return manifests


def store_arrays(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every complete array of a store, by (clip, array), read straight from zarr."""
    from pipeline.features.store import FeatureStore

    store = FeatureStore(path)
    return {(c, a): store.read(c, a) for c in store.clip_ids() for a in store.array_names(c)}
