"""``onnx``: face models shipped as ONNX (insightface's ``w600k_r50.onnx`` and the like).

``--weights`` names the ``.onnx`` file (required: there is no random ONNX model). It runs through
``onnxruntime`` on ``CPUExecutionProvider``, or ``CUDAExecutionProvider`` first when ``device`` is
cuda and the installed onnxruntime has it. The stored vector is the model's first output (or the
one named by ``output``), flattened; its width is read off the file when the extractor is built.

Preprocessing is configurable because ONNX files carry none: the crop is resized (bilinear) to
the model's input size when its input is static (``[N, C, H, W]`` with numbers), else to
``input_size``, and each channel becomes ``(pixel - mean) / std`` in 0..255 units. A model
with one input channel (FER2013-style 48x48 grey CNNs) gets the grey image (PIL ``"L"``) and the
first ``mean``/``std``. The defaults
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


DEFAULT_INPUT_SIZE = 112


@dataclass
class OnnxFaceConfig:
    # square input side in pixels (insightface recognition: 112), for models whose input size is
    # not fixed; a model with a static [N, C, H, W] input is fed H x W
    input_size: int = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # per channel, 0..255 units
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)  # per channel, 0..255 units
    channels: str = "RGB"  # channel order the model expects: "RGB" or "BGR"
    # name of the output to store (a model with several: logits, embedding, ...); empty: the
    # model's first output
    output: str = ""


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
            raise PipelineError(f"{self.weights}: output {self._output!r} has no fixed width {dims}"
                                f" (outputs: {', '.join(f'{k} {v}' for k, v in outputs.items())})")
        self._dim = int(np.prod(dims))
        self._channels, self._size = self._input_layout(session.get_inputs()[0].shape)

    def _input_layout(self, shape: Any) -> tuple[int, tuple[int, int]]:
        """(channels, (height, width)) the model takes: from its input when that is static
        (``[N, C, H, W]`` with numbers), else 3 channels at ``input_size``."""
        size = (self.config.input_size, self.config.input_size)
        if len(shape) != 4:
            raise PipelineError(f"{self.weights}: input of shape {shape}; want [N, C, H, W]")
        channels = shape[1] if isinstance(shape[1], int) else 3
        if channels not in (1, 3):
            raise PipelineError(f"{self.weights}: input has {channels} channels; 1 (grey) or 3")
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            static = (shape[2], shape[3])
            if static != size and self.config.input_size != DEFAULT_INPUT_SIZE:
                raise PipelineError(f"{self.weights}: the model takes {static[0]}x{static[1]} input;"
                                    f" configs.onnx.input_size is {self.config.input_size}")
            size = static
        return channels, size

    def outputs(self) -> dict[str, ArraySpec]:
        return {self.name: ArraySpec((self._dim,))}

    def load(self) -> None:
        if self._model is None:
            self._model = _session(self.weights, self.device)

    def preprocess(self, image: Any) -> torch.Tensor:
        height, width = self._size
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        if self._channels == 1:  # grey (FER2013-style models): the first mean and std apply
            pixels = np.asarray(image.convert("L"), dtype=np.float32)[..., None]
            mean, std = np.float32(self.config.mean[:1]), np.float32(self.config.std[:1])
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
            if self.config.channels == "BGR":
                pixels = pixels[..., ::-1]
            mean, std = np.float32(self.config.mean), np.float32(self.config.std)
        pixels = (pixels - mean) / std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.load()
        feed = {self._model.get_inputs()[0].name: batch.numpy().astype(np.float32)}
        (out,) = self._model.run([self._output], feed)
        return {self.name: torch.from_numpy(out.reshape(len(batch), -1).astype(np.float32))}
