"""``audio_model``: any waveform-in, embedding-out model shipped as ONNX or TorchScript.

Speaker and paralinguistic encoders are often distributed as one file that maps a batch of
waveforms ``[B, n_samples]`` (mono, at a fixed rate) to embeddings; this extractor runs such a file
over the dynamic windows of every video frame, as ``ecapa`` and ``hf_audio`` do for their own
formats (:mod:`~pipeline.features.extractors.audio_embedding`). ``--weights audio_model=PATH``:
a ``.onnx`` file runs through onnxruntime (a graph of standard operators), anything else is
loaded with ``torch.jit.load``: TorchScript runs the file's own code, so it needs
``--set trust_code=true`` (docs/trust.md).

The front end is the waveform at ``sample_rate`` as ``[T, 1]``; windows past the clip repeat its
first/last sample (``pad_mode = "edge"``, a constant the models take as silence). The output named
``output`` (ONNX; default: the first) of shape ``[B, D]`` is stored as it is; ``[B, T', D]``
(frame-level outputs) is averaged over ``T'`` (our choice: mean pooling, as ``hf_audio`` does).
The embedding width is read by running the model once on one second of silence when the
extractor is built, which also checks the file (one line naming it when it cannot run).
``precision`` is ignored: the file runs in its own dtype (a TorchScript model's autocast
behaviour is its author's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor
from pipeline.features.extractors.base import register


@dataclass
class AudioModelConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    sample_rate: int = 16000  # Hz the model takes its waveform at (speech encoders: 16000)
    output: str = ""  # ONNX: name of the output to store; empty: the model's first output


class _Runner:
    """One loaded model file: ``float32 [B, n_samples] -> float32 [B, D]``."""

    def __init__(self, path: Path, device: str, output: str, trust_code: bool) -> None:
        self.path, self.onnx = path, path.suffix.lower() == ".onnx"
        if not self.onnx and not trust_code:  # before anything reads the file
            raise PipelineError(f"{path}: a TorchScript model runs the file's own code; refused "
                                "unless you trust it: --set trust_code=true (docs/trust.md), or "
                                "export it to .onnx")
        try:
            if self.onnx:
                import onnxruntime as ort

                providers = ["CPUExecutionProvider"]
                if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
                    providers.insert(0, "CUDAExecutionProvider")
                self.model = ort.InferenceSession(str(path), providers=providers)
                names = [o.name for o in self.model.get_outputs()]
                self.output = output or names[0]
                if self.output not in names:
                    raise PipelineError(f"{path}: no output {self.output!r}; it has {', '.join(names)}")
            else:
                if output:
                    raise PipelineError(f"{path}: configs.audio_model.output names an ONNX output;"
                                        " a TorchScript model has one")
                self.model = torch.jit.load(str(path), map_location=device).eval()
                self.device = device
        except PipelineError:
            raise
        except Exception as e:  # noqa: BLE001  (onnxruntime and torch.jit raise their own types)
            kind = "ONNX" if self.onnx else "TorchScript"
            raise PipelineError(f"{path}: not a runnable {kind} model "
                                f"({' '.join(str(e).split())[:200]})") from None

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        try:
            if self.onnx:
                feed = {self.model.get_inputs()[0].name: waves.astype(np.float32)}
                (out,) = self.model.run([self.output], feed)
            else:
                with torch.inference_mode():
                    out = self.model(torch.from_numpy(waves).to(self.device))
                if isinstance(out, (tuple, list)):
                    out = out[0]  # (embedding, ...): the first, as ONNX's default
                out = out.float().cpu().numpy()
        except Exception as e:  # noqa: BLE001
            raise PipelineError(f"{self.path}: the model failed on waveforms of shape "
                                f"{list(waves.shape)} ({' '.join(str(e).split())[:200]})") from None
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 3:
            out = out.mean(axis=1)  # frame-level outputs: mean pooling over time
        if out.ndim != 2 or len(out) != len(waves):
            raise PipelineError(f"{self.path}: output of shape {list(out.shape)} for {len(waves)}"
                                " waveforms; want [B, D] or [B, T, D]")
        return out


@register
class AudioModel(AudioEmbeddingExtractor):
    name = "audio_model"
    Config = AudioModelConfig
    pad_mode: ClassVar[str] = "edge"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.weights is None:
            raise PipelineError("audio_model: needs --weights audio_model=<model.onnx or TorchScript"
                                " .pt> (there is no random model of an unknown architecture)")
        probe = _Runner(self.weights, "cpu", self.config.output, self.trust_code)
        self._dim = int(probe(np.zeros((1, self.config.sample_rate), np.float32)).shape[1])

    @property
    def frontend_sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frontend_frame_rate(self) -> float:
        return float(self.config.sample_rate)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def load(self) -> None:
        if self._model is None:
            self._model = _Runner(self.weights, self.device, self.config.output, self.trust_code)

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        return np.asarray(waveform, dtype=np.float32).reshape(-1, 1)

    def embed(self, windows: Any) -> torch.Tensor:
        self.load()
        waves = np.asarray(torch.as_tensor(windows, dtype=torch.float32), dtype=np.float32)[..., 0]
        return torch.from_numpy(self._model(np.ascontiguousarray(waves)))
