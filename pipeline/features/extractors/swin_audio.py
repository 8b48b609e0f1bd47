"""``swin_audio``: paper 000's audio branch, Swin-Tiny over a log-mel window rendered as an image.

Each window (``[T_win, n_mels]`` of the ``kim2023`` log-mel: 2048 FFT, hop 1024, 128 mels) becomes
a spectrogram image the way a plot shows one: frequency on the vertical axis with low
frequencies at the bottom, time left to right, bilinearly resized to the model's input size
(224x224), scaled to [0, 1] by the window's own minimum and maximum (the paper does not give its
scaling; an image rendering normalises to its own range), replicated to 3 channels and normalised
with the model's mean and std. The output is timm's pooled ``forward_head(forward_features(x),
pre_logits=True)``, 768-d for Swin-Tiny, one array ``swin_audio_w<W>`` per window length.

Weights: a timm state-dict file as for ``swin`` (e.g. a Swin-Tiny fine-tuned on such images),
or a folder ``fer-pipeline finetune --backbone swin_audio`` wrote (its record's log-mel and image
normalisation are applied; its model must be ``configs.swin_audio.model``); without one, seeded
random weights. A folder records the window it was trained on: serving any other window is
refused in one line. Paper 000 trains one audio Swin per window: ``swin_audio_w32``,
``swin_audio_w48`` and ``swin_audio_w64`` are one extractor per window, each with its own
``--weights swin_audio_w32=DIR``, writing the same arrays as ``swin_audio``'s windows (so the
``kim2023`` fuse preset reads either). Paper 000 trains its audio Swin-Tiny on the spectrograms and
gives only the log-mel parameters and the three windows; the rendering above (orientation,
scaling, resize, channels) and the frozen backbone are ours.
"""

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import dataclasses  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline.features.extractors.audio_embedding import AudioEmbeddingExtractor  # noqa: E402
from pipeline.features.extractors.base import register  # noqa: E402
from pipeline.features.extractors.logmel import LogMelConfig  # noqa: E402
from pipeline.features.extractors.swin import SWIN_TINY  # noqa: E402
from pipeline.features.extractors.timm_models import build_timm, timm_probe  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.weights_record import (  # noqa: E402
    WeightsRecord,
    check_family,
    image_data_config,
    recorded_frontend,
)


@dataclass
class SwinAudioConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    # The log-mel each window is cut from (paper 000: 2048 FFT, hop 1024, 128 mels).
    frontend: LogMelConfig = field(default_factory=lambda: LogMelConfig(preset="kim2023"))
    model: str = SWIN_TINY  # timm model name (paper 000: Swin-Tiny)


def resolve_preprocessing(config: SwinAudioConfig, record: WeightsRecord | None,
                          weights: Any) -> SwinAudioConfig:
    """``config`` with the weights record's log-mel (a fine-tuned folder); a frontend set by the
    user that differs from the record's is refused: the network learnt on the record's."""
    check_family(record, "swin_audio", config.model, weights)
    trained_on = (record.preprocessing if record is not None else {}).get("window")
    if trained_on is not None and tuple(config.windows) != (trained_on,):
        raise PipelineError(
            f"{weights}: trained on {trained_on}-frame windows, about to serve "
            f"{', '.join(str(w) for w in config.windows)}-frame windows: give it to "
            f"-e swin_audio_w{trained_on} (--weights swin_audio_w{trained_on}=...), one folder "
            f"per window")
    recorded = (record.preprocessing if record is not None else {}).get("frontend")
    if recorded is None:
        return config
    frontend = recorded_frontend(record, weights, LogMelConfig)
    if config.frontend not in (frontend, SwinAudioConfig().frontend):
        raise PipelineError(f"{weights}: trained on log-mel {recorded}, not on "
                            f"configs.swin_audio.frontend {dataclasses.asdict(config.frontend)}; unset it")
    return dataclasses.replace(config, frontend=frontend)


@register
class SwinAudio(AudioEmbeddingExtractor):
    name = "swin_audio"
    Config = SwinAudioConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._probe = timm_probe(self.config.model)
        # A folder `fer-pipeline finetune --backbone swin_audio` wrote: its log-mel and image
        # normalisation (the cache key hashes the resolved config).
        self.config = resolve_preprocessing(self.config, self.weights_record, self.weights)
        # the spectrogram images' size and normalisation (fine-tuning renders its windows alike)
        self.data_config = image_data_config(self._probe.data_config, self.weights_record)

    @property
    def embedding_dim(self) -> int:
        return self._probe.num_features

    def load(self) -> None:
        if self._model is None:
            model = self.build(lambda: build_timm(self.config.model, self.weights,
                                                  self.trust_code, option="configs.swin_audio.model"))
            self._model = self.freeze(model, channels_last=True)

    def images(self, windows: torch.Tensor) -> torch.Tensor:
        """``[B, T_win, n_mels]`` log-mel -> ``[B, 3, H, W]`` normalised spectrogram images."""
        data = self.data_config
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        x = x.transpose(1, 2).flip(1).unsqueeze(1)  # [B, 1, n_mels, T]: high frequencies on top
        x = F.interpolate(x, size=tuple(data["input_size"][1:]), mode="bilinear", align_corners=False)
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp(min=1e-6)  # a constant window becomes black
        mean = torch.tensor(data["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(data["std"], device=x.device).view(1, 3, 1, 1)
        return ((x.expand(-1, 3, -1, -1) - mean) / std).contiguous(memory_format=torch.channels_last)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        self.load()
        with torch.inference_mode():
            x = self.images(windows)  # in float32: autocast covers only the model
            with self.autocast():
                pooled = self._model.forward_head(self._model.forward_features(x), pre_logits=True)
        return pooled.float().cpu()



class _OneWindow(SwinAudio):
    """``swin_audio`` for one window length: its own extractor, so its own weights folder (the
    extractor index reads each subclass's literal ``name``)."""

    array_prefix = "swin_audio"
    window = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if tuple(self.config.windows) != (self.window,):
            raise PipelineError(f"{self.name}: serves its {self.window}-frame window only, not "
                                f"windows={list(self.config.windows)}; use -e swin_audio")


@dataclass
class SwinAudioW32Config(SwinAudioConfig):
    windows: tuple[int, ...] = (32,)


@dataclass
class SwinAudioW48Config(SwinAudioConfig):
    windows: tuple[int, ...] = (48,)


@dataclass
class SwinAudioW64Config(SwinAudioConfig):
    windows: tuple[int, ...] = (64,)


@register
class SwinAudioW32(_OneWindow):
    name = "swin_audio_w32"
    Config = SwinAudioW32Config
    window = 32


@register
class SwinAudioW48(_OneWindow):
    name = "swin_audio_w48"
    Config = SwinAudioW48Config
    window = 48


@register
class SwinAudioW64(_OneWindow):
    name = "swin_audio_w64"
    Config = SwinAudioW64Config
    window = 64
