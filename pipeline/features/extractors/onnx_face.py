"""``onnx``: face models shipped as ONNX (insightface's ``w600k_r50.onnx`` and the like).

``--weights`` names the ``.onnx`` file (required: there is no random ONNX model). It runs through
``onnxruntime`` on ``CPUExecutionProvider``, or ``CUDAExecutionProvider`` first when ``device`` is
cuda and the installed onnxruntime has it. The stored vector is the model's first output (or the
one named by ``output``), flattened; its width is read off the file when the extractor is built.

Preprocessing is configurable because ONNX files carry none: the crop is resized (bilinear) to
``input_size`` and each channel becomes ``(pixel - mean) / std`` in 0..255 units; the defaults
(127.5, 127.5) are insightface's recognition models' ``[-1, 1]`` scaling, in RGB order
(insightface's own ``ArcFaceONNX`` feeds RGB too: ``swapRB=True`` on BGR images). Set
``channels = "BGR"`` for models trained on BGR input. ``precision`` is ignored: the file's own
dtype runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register


@dataclass
class OnnxFaceConfig:
    input_size: int = 112  # square input side in pixels (insightface recognition: 112)
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # per channel, 0..255 units
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)  # per channel, 0..255 units
    channels: str = "RGB"  # channel order the model expects: "RGB" or "BGR"
    output: str = ""  # name of the output to store; empty: the model's first output


def _session(path: Any, device: str) -> Any:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as e:  # onnxruntime raises its own types for a bad file
        raise PipelineError(f"{path}: not a runnable ONNX model ({' '.join(str(e).split())[:200]})") from None


@register
class OnnxFace(ImageExtractor):
    name = "onnx"
    Config = OnnxFaceConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.weights is None:
            raise PipelineError("onnx: needs --weights onnx=<model.onnx> (no random ONNX model exists)")
        if self.config.channels not in ("RGB", "BGR"):
            raise PipelineError(f"onnx: channels must be RGB or BGR, got {self.config.channels!r}")
        session = _session(self.weights, "cpu")
        outputs = {o.name: o.shape for o in session.get_outputs()}
        self._output = self.config.output or next(iter(outputs))
        if self._output not in outputs:
            raise PipelineError(f"{self.weights}: no output {self._output!r}; it has {', '.join(outputs)}")
        dims = outputs[self._output][1:]
        if not all(isinstance(d, int) for d in dims):
            raise PipelineError(f"{self.weights}: output {self._output!r} has no fixed width {dims}")
        self._dim = int(np.prod(dims))

    def outputs(self) -> dict[str, ArraySpec]:
        return {self.name: ArraySpec((self._dim,))}

    def load(self) -> None:
        if self._model is None:
            self._model = _session(self.weights, self.device)

    def preprocess(self, image: Any) -> torch.Tensor:
        size = self.config.input_size
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        if self.config.channels == "BGR":
            pixels = pixels[..., ::-1]
        pixels = (pixels - np.float32(self.config.mean)) / np.float32(self.config.std)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.load()
        feed = {self._model.get_inputs()[0].name: batch.numpy().astype(np.float32)}
        (out,) = self._model.run([self._output], feed)
        return {self.name: torch.from_numpy(out.reshape(len(batch), -1).astype(np.float32))}
