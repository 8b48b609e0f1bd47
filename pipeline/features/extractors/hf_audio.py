"""``hf_audio``: wav2vec2 / HuBERT / WavLM (any ``transformers`` audio encoder with their interface).

Weights: ``--weights`` names a local folder in the HuggingFace layout (``config.json`` +
``model.safetensors`` or ``pytorch_model.bin``, optionally ``preprocessor_config.json``), a
snapshot folder of the HF cache, or the cache's ``models--org--name`` folder (its ``refs/main``
snapshot), or a folder ``fer-pipeline finetune --backbone hf_audio`` wrote (the same layout plus
its record), or a demo stand-in's folder ``fer-pipeline stand-in`` wrote (seeded random weights of
a small wav2vec2 or WavLM, :mod:`~pipeline.features.extractors.demo_audio_models`: recorded as
random weights). Nothing is downloaded. Without weights: a seeded random ``Wav2Vec2Model`` of the
default (base) size.

Front end (once per clip, :meth:`compute_frontend`): the waveform at the model's rate
(``sampling_rate`` of ``preprocessor_config.json``, 16 kHz if absent), normalised to zero mean and
unit variance over the whole clip when the feature extractor's ``do_normalize`` says so (as
``Wav2Vec2FeatureExtractor`` does per input), then the model's hidden states at its frame rate
(rate / product of the conv strides: 50 Hz for the published models). ``layers`` picks entries of
``hidden_states`` (0: the transformer's input, -1: the last layer); ``combine = "mean"`` averages
them into one ``[D]`` vector, ``"stack"`` keeps the layer axis (``[n_layers, D]`` per frame);
``layers = []`` takes them all.

Long clips run in chunks of ``chunk_seconds`` with ``context_seconds`` of audio on each side that
is computed and dropped, so memory is bounded by the chunk, not the clip. Chunk boundaries fall on
the conv stack's frame grid, so the conv features of every kept frame are those of a one-shot run;
the transformer attends within the chunk and its context only (a clip shorter than one chunk is
exactly the one-shot computation). Models whose first conv uses group norm over time
(``feat_extract_norm = "group"``, wav2vec2-base) normalise per chunk.

Per video frame, :meth:`embed` mean-pools the frames of each dynamic window (paper 000's
32/48/64 video frames). Windows that run past the clip repeat its first/last frame
(``pad_mode = "edge"``): hidden states have no "silence" value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pipeline.compat import ensure_torchvision as _ensure_torchvision  # transformers imports it
from pipeline.errors import PipelineError
from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor
from pipeline.features.extractors.base import ArraySpec, register
from pipeline.features.extractors.checkpoints import resolve_folder
from pipeline.features.extractors.demo_audio_models import stand_in_of
from pipeline.features.weights_record import check_family


def normalize_waveform(wave: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance, as Wav2Vec2FeatureExtractor's ``do_normalize``:
    ``(x - mean) / sqrt(var + 1e-7)``."""
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


def model_folder(path: Path) -> Path:
    """The folder holding ``config.json`` (a snapshot folder of an HF cache is followed)."""
    return resolve_folder(path).parent


@dataclass
class HfAudioConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    layers: tuple[int, ...] = (-1,)  # hidden_states indices (0: transformer input); []: all
    combine: str = "mean"  # "mean": average the chosen layers; "stack": keep the layer axis
    chunk_seconds: float = 30.0  # audio per model call (bounds memory on long clips)
    context_seconds: float = 2.0  # extra audio each side of a chunk, computed and dropped


@register
class HfAudio(AudioEmbeddingExtractor):
    name = "hf_audio"
    Config = HfAudioConfig
    pad_mode: ClassVar[str] = "edge"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        if c.combine not in ("mean", "stack"):
            raise PipelineError(f"hf_audio: combine must be 'mean' or 'stack', got {c.combine!r}")
        if c.chunk_seconds <= 0 or c.context_seconds < 0:
            raise PipelineError("hf_audio: chunk_seconds must be positive, context_seconds >= 0")
        self.folder = None if self.weights is None else model_folder(self.weights)
        model_config = self.read_json("config.json")
        if self.folder is not None and model_config is None:
            raise PipelineError(f"{self.weights}: no config.json: not a HuggingFace model folder")
        # a demo stand-in's folder: its weights are seeded random ones (the store says so)
        self.stand_in = stand_in_of(model_config)
        if model_config is not None:  # a folder `fer-pipeline finetune` wrote: the same model type
            check_family(self.weights_record, "hf_audio", model_config.get("model_type"), self.weights)
        preprocessor = self.read_json("preprocessor_config.json") or {}
        self._sample_rate = int(preprocessor.get("sampling_rate", 16000))
        # zero mean, unit variance over the whole clip (the feature extractor's do_normalize)
        self.do_normalize = bool(preprocessor.get("do_normalize", True))
        if model_config is None:  # random weights: transformers' default Wav2Vec2Config
            _ensure_torchvision()
            from transformers import Wav2Vec2Config

            model_config = Wav2Vec2Config().to_dict()
        self._hidden = int(model_config["hidden_size"])
        n_states = int(model_config["num_hidden_layers"]) + 1
        self._stride = math.prod(model_config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2)))
        self._layers = list(range(n_states)) if not c.layers else list(c.layers)
        bad = [i for i in self._layers if not -n_states <= i < n_states]
        if bad:
            raise PipelineError(f"hf_audio: layers {bad} outside this model's {n_states} hidden states")

    @property
    def random_weights(self) -> bool:
        """True without weights, and for a demo stand-in's folder (random weights written to a
        folder by ``fer-pipeline stand-in``)."""
        return super().random_weights or self.stand_in is not None

    def read_json(self, name: str) -> dict | None:
        """A JSON file of the weights folder (``config.json``, ``preprocessor_config.json``);
        None without a folder or without that file."""
        if self.folder is None or not (self.folder / name).is_file():
            return None
        return json.loads((self.folder / name).read_text())

    @property
    def frontend_sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frontend_frame_rate(self) -> float:
        return self._sample_rate / self._stride

    @property
    def embedding_dim(self) -> int:
        return self._hidden

    def outputs(self) -> dict[str, ArraySpec]:
        stack = self.config.combine == "stack"
        shape = (len(self._layers), self._hidden) if stack else (self._hidden,)
        return {f"{self.name}_w{w}": ArraySpec(shape) for w in self.windows}

    def load(self) -> None:
        if self._model is None:
            _ensure_torchvision()
            from transformers import AutoModel, Wav2Vec2Config, Wav2Vec2Model

            if self.folder is None:
                model = self.build(lambda: Wav2Vec2Model(Wav2Vec2Config()))
            else:
                try:
                    model = AutoModel.from_pretrained(self.folder, local_files_only=True)
                except Exception as e:  # transformers raises many types for a bad folder
                    reason = " ".join(str(e).split())[:200]
                    raise PipelineError(f"{self.weights}: cannot load ({reason})") from None
            self._receptive = self._receptive_field(model)
            self._model = self.freeze(model)

    @staticmethod
    def _receptive_field(model: Any) -> int:
        """Samples seen by one output frame of the conv stack (400 for the published models)."""
        config = model.config
        span = 1
        for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
            span = (span - 1) * stride + kernel
        return span

    def _frames(self, n_samples: int) -> int:
        return int(self._model._get_feat_extract_output_lengths(torch.tensor(n_samples)).item())

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        self.load()
        wave = np.asarray(waveform, dtype=np.float32)
        assert wave.ndim == 1 and wave.size > 0, f"expected a non-empty mono waveform, got {wave.shape}"
        if self.do_normalize:
            wave = normalize_waveform(wave)
        wave = torch.from_numpy(wave)
        n_frames = self._frames(wave.numel())
        if n_frames < 1:
            raise PipelineError(f"hf_audio: a clip of {wave.numel()} samples is shorter than one frame")
        rate = self.frontend_frame_rate
        chunk = max(1, round(self.config.chunk_seconds * rate))
        context = round(self.config.context_seconds * rate)
        rows = []
        for first in range(0, n_frames, chunk):
            last = min(first + chunk, n_frames)
            start, stop = max(0, first - context), min(n_frames, last + context)
            # The last chunk keeps the clip's trailing samples: with group norm over time in the
            # first conv they change every frame's normalisation, as in a one-shot run.
            end = wave.numel() if stop == n_frames else (stop - 1) * self._stride + self._receptive
            samples = wave[start * self._stride:end]
            states = self._hidden_states(samples[None])  # [n_layers, T, D]
            rows.append(states[:, first - start:last - start])
        states = torch.cat(rows, dim=1)  # [n_layers, n_frames, D]
        if self.config.combine == "mean":
            return states.mean(dim=0).numpy()
        return states.permute(1, 0, 2).reshape(n_frames, -1).numpy()  # [T, n_layers * D]

    def _hidden_states(self, samples: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.autocast():
            out = self._model(samples.to(self.device), output_hidden_states=True)
        return torch.stack([out.hidden_states[i][0].float().cpu() for i in self._layers])

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        pooled = torch.as_tensor(windows, dtype=torch.float32).mean(dim=1)  # [B, F]
        if self.config.combine == "stack":
            return pooled.reshape(pooled.shape[0], len(self._layers), self._hidden)
        return pooled
