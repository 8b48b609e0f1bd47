"""The audio backbones beside ``tdnn``: paper 000's audio Swin and a HuggingFace audio encoder.

* :class:`SwinAudioBackbone` (``backbone = "swin_audio"``): the ``swin_audio`` extractor's timm
  model (``swin_audio.model``, Swin-Tiny by default) on the spectrogram image of the log-mel
  window of ``window`` video frames centred on each labelled frame. The extractor itself computes
  the log-mel (``swin_audio.frontend``, paper 000's 2048/1024/128) and renders the window
  (:meth:`~pipeline.features.extractors.swin_audio.SwinAudio.images`), so training and stage one
  see the same input. A window trains only when its label purity
  (:func:`pipeline.fusion.windows.purity`, rule ``purity_rule``) reaches ``window_purity``; unset:
  paper 000's threshold for its length (0.8 / 0.65 / 0.5 for 32 / 48 / 64 frames). Paper 000
  trains one audio Swin per window length: run one fine-tune per ``window``. No augmentation.
* :class:`HfAudioBackbone` (``backbone = "hf_audio"``): see its docstring.

Frontends are held in memory per clip, as for ``tdnn``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.data.manifest import Clip
from pipeline.data.media import decode_audio
from pipeline.errors import PipelineError
from pipeline.features.audio_windows import frame_windows
from pipeline.finetune.backbones import AudioBackbone, Backbone, Samples, _samples
from pipeline.finetune.config import FinetuneConfig
from pipeline.fusion.windows import PAPER_THRESHOLDS, PAPER_WINDOWS, purity


def purity_threshold(config: FinetuneConfig) -> float:
    """``window_purity``, else paper 000's threshold for ``window`` frames."""
    if config.window_purity is not None:
        return config.window_purity
    if config.window not in PAPER_WINDOWS:
        raise PipelineError(f"window {config.window}: paper 000 gives purity thresholds for "
                            f"{PAPER_WINDOWS} frames only; set window_purity")
    return PAPER_THRESHOLDS[PAPER_WINDOWS.index(config.window)]


class SwinAudioBackbone(AudioBackbone):
    family = "swin_audio"
    needs = "audio and windows of enough label purity"

    def __init__(self, config: FinetuneConfig) -> None:
        Backbone.__init__(self, config)  # not AudioBackbone's: another extractor
        from pipeline.features.extractors.swin_audio import SwinAudio

        self.model_name = config.swin_audio.model
        # Built with the initial weights (their record, if any, gives the log-mel and image
        # statistics; a damaged record is refused here, before training).
        self.extractor = SwinAudio(config=dataclasses.replace(config.swin_audio,
                                                              windows=(config.window,)),
                                   weights=config.weights, device="cpu", precision="fp32")
        self.window = config.window
        self.threshold = purity_threshold(config)
        self._fronts: dict[str, np.ndarray] = {}

    def build(self) -> nn.Module:
        from pipeline.features.extractors.seeding import redraw, weights_generator
        from pipeline.features.extractors.timm_models import build_timm

        model = build_timm(self.model_name, self.config.weights, option="swin_audio.model")
        if self.config.weights is None:  # the random network `extract -e swin_audio` draws
            redraw(model, weights_generator("swin_audio", self.config.seed))
        return model

    @property
    def num_features(self) -> int:
        return self.extractor.embedding_dim

    def samples(self, clips: Sequence[Clip]) -> Samples:
        def usable(clip: Clip) -> np.ndarray:
            if clip.audio_path is None:
                return np.zeros(clip.n_frames, dtype=bool)
            rule = self.config.purity_rule
            return purity(clip.labels, self.window, rule) >= self.threshold - 1e-9

        return _samples(clips, usable)

    def shape_keys(self, samples: Samples) -> np.ndarray:
        return np.zeros(len(samples), dtype=np.int64)  # every window renders to the input size

    def tensor(self, samples: Samples, i: int, seed: int | None) -> torch.Tensor:
        clip = samples.clips[int(samples.clip[i])]
        x = frame_windows(self.front(clip), self.extractor.frontend_frame_rate, clip.n_frames,
                          clip.fps, self.window, np.array([samples.frame[i]]),
                          pad=self.extractor.pad_mode)
        with torch.no_grad():
            return self.extractor.images(torch.from_numpy(x))[0].contiguous()

    def preprocessing(self) -> dict[str, Any]:
        d = self.extractor._data_config
        return {"frontend": dataclasses.asdict(self.extractor.config.frontend),
                "window": self.window, "purity": self.threshold,
                "purity_rule": self.config.purity_rule, "input_size": list(d["input_size"]),
                "mean": list(d["mean"]), "std": list(d["std"])}
