"""The audio backbones beside ``tdnn``: paper 000's audio Swin and a HuggingFace audio encoder.

* :class:`SwinAudioBackbone` (``backbone = "swin_audio"``): the ``swin_audio`` extractor's timm
  model (``swin_audio.model``, Swin-Tiny by default) on the spectrogram image of the log-mel
  window of ``window`` video frames centred on each labelled frame. The extractor itself computes
  the log-mel (``swin_audio.frontend``, paper 000's 2048/1024/128) and renders the window
  (:meth:`~pipeline.features.extractors.swin_audio.SwinAudio.images`), so training and stage one
  see the same input. A window trains only when its label purity
  (:func:`pipeline.training.windows.purity`, rule ``purity_rule``) reaches ``window_purity``; unset:
  paper 000's threshold for its length (0.8 / 0.65 / 0.5 for 32 / 48 / 64 frames). Paper 000
  trains one audio Swin per window length: run one fine-tune per ``window``. No augmentation.
* :class:`HfAudioBackbone` (``backbone = "hf_audio"``): the top ``train_layers`` transformer
  layers of a HuggingFace audio encoder (``--weights`` a model folder, as ``extract -e hf_audio``
  reads) on the waveform window of ``window`` video frames centred on each labelled frame,
  labelled by its centre frame; the feature is the last hidden state averaged over the window
  (what ``extract -e hf_audio`` computes with its default ``layers = [-1]``, ``combine = mean``).

Frontends are held in memory per clip, as for ``tdnn``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.data.manifest import Clip
from pipeline.data.media import decode_audio
from pipeline.errors import PipelineError
from pipeline.features.audio_windows import frame_windows, window_length
from pipeline.features.extractors.hf_audio import normalize_waveform
from pipeline.features.extractors.swin_audio import SwinAudioConfig
from pipeline.finetune.backbone_choice import register
from pipeline.finetune.backbones import AudioBackbone, Backbone
from pipeline.finetune.samples import Samples, labelled_samples
from pipeline.finetune.config import FinetuneConfig
from pipeline.training.windows import PAPER_THRESHOLDS, PAPER_WINDOWS, purity


def purity_threshold(config: FinetuneConfig) -> float:
    """``window_purity``, else paper 000's threshold for ``window`` frames."""
    if config.window_purity is not None:
        return config.window_purity
    if config.window not in PAPER_WINDOWS:
        raise PipelineError(f"window {config.window}: paper 000 gives purity thresholds for "
                            f"{PAPER_WINDOWS} frames only; set window_purity")
    return PAPER_THRESHOLDS[PAPER_WINDOWS.index(config.window)]


@register
class SwinAudioBackbone(AudioBackbone):
    """The ``swin_audio`` extractor's Swin over log-mel windows of enough label purity."""

    name = "swin_audio"
    order = 3
    trains_on = "log-mel windows"
    Config = SwinAudioConfig  # FinetuneConfig.swin_audio
    family = "swin_audio"
    needs = "audio and windows of enough label purity"
    supports_input_size = False  # its input is fixed by its extractor
    supports_dan_head = False
    layer_order = "timm"  # a timm Swin: its group_matcher

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
        from pipeline.features.extractors.seeding import seeded_build
        from pipeline.features.extractors.timm_models import build_timm

        if self.config.weights is None:  # the random network `extract -e swin_audio` draws
            return seeded_build(lambda: build_timm(self.model_name, None), "swin_audio",
                                self.config.seed)
        return build_timm(self.model_name, self.config.weights, option="swin_audio.model")

    @property
    def num_features(self) -> int:
        return self.extractor.embedding_dim

    def samples(self, clips: Sequence[Clip]) -> Samples:
        def usable(clip: Clip) -> np.ndarray:
            if clip.audio_path is None:
                return np.zeros(clip.n_frames, dtype=bool)
            rule = self.config.purity_rule
            return purity(clip.labels, self.window, rule) >= self.threshold - 1e-9

        return labelled_samples(clips, usable)

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
        d = self.extractor.data_config
        return {"frontend": dataclasses.asdict(self.extractor.config.frontend),
                "window": self.window, "purity": self.threshold,
                "purity_rule": self.config.purity_rule, "input_size": list(d["input_size"]),
                "mean": list(d["mean"]), "std": list(d["std"])}


class _Encoder(nn.Module):
    """A HuggingFace audio encoder: ``[B, samples] -> [B, hidden]``, the last hidden state
    averaged over its frames."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.model(wave, output_hidden_states=True).hidden_states[-1].mean(dim=1)


@register
class HfAudioBackbone(AudioBackbone):
    """The top ``train_layers`` of a HuggingFace audio encoder and the loop's linear head.

    Input: the clip's waveform at the model's rate, normalised over the whole clip as the
    extractor does (``do_normalize``), cut to the ``window`` video frames centred on the labelled
    frame (:func:`~pipeline.features.audio_windows.frame_windows` on the samples; past the clip's
    ends the edge sample repeats). Every other parameter stays as loaded. While training,
    SpecAugment masking is off (transformers draws it from numpy's global generator, which would
    break the resumable run's determinism) and so is layer drop (a skipped trained layer has no
    gradient, which DDP refuses); the saved ``config.json`` keeps the initial settings.

    One difference from stage one, by design: ``extract -e hf_audio`` runs the transformer over
    the whole clip (in chunks of ``chunk_seconds``) and averages the window's frames, so its
    attention sees more context than the window the layers were trained on; the convolutional
    features of each frame are the same. Training on whole clips would cost a clip's forward per
    labelled frame.

    Written with ``save_pretrained`` (``config.json``, ``model.safetensors``) plus
    ``preprocessor_config.json`` (the initial folder's, else the rate and normalisation used) and
    the record.
    """

    name = "hf_audio"
    order = 4
    trains_on = "waveform"
    family = "hf_audio"
    supports_input_size = False  # a waveform
    supports_dan_head = False
    layer_order = "hf_audio"  # encoder.layers.N

    def __init__(self, config: FinetuneConfig) -> None:
        Backbone.__init__(self, config)
        from pipeline.features.extractors.hf_audio import HfAudio, HfAudioConfig

        self.extractor = HfAudio(config=HfAudioConfig(windows=(config.window,)),
                                 weights=config.weights, device="cpu", precision="fp32")
        self.folder = self.extractor.folder
        self.model_config = self.extractor.read_json("config.json")
        self.model_name = (self.model_config or {}).get("model_type", "wav2vec2")
        self.window = config.window
        self._fronts: dict[str, np.ndarray] = {}
        layers = int((self.model_config or {}).get("num_hidden_layers", 12))
        if not 1 <= config.train_layers <= layers:
            raise PipelineError(f"train_layers {config.train_layers}: this model has {layers} "
                                "transformer layers")
        self.layers = layers

    def _pretrained(self) -> nn.Module:
        from pipeline.compat import ensure_torchvision

        ensure_torchvision()
        from transformers import AutoModel, Wav2Vec2Config, Wav2Vec2Model

        if self.folder is None:  # the random network `extract -e hf_audio --set seed=S` draws
            from pipeline.features.extractors.seeding import seeded_build

            return seeded_build(lambda: Wav2Vec2Model(Wav2Vec2Config()), "hf_audio", self.config.seed)
        try:
            return AutoModel.from_pretrained(self.folder, local_files_only=True)
        except Exception as e:  # transformers raises many types for a bad folder
            raise PipelineError(f"{self.config.weights}: cannot load "
                                f"({' '.join(str(e).split())[:200]})") from None

    def build(self) -> nn.Module:
        model = self._pretrained()
        model.config.apply_spec_augment = False  # see the class docstring
        if hasattr(model.config, "layerdrop"):
            model.config.layerdrop = 0.0
        top = {f"encoder.layers.{i}" for i in range(self.layers - self.config.train_layers, self.layers)}
        for name, param in model.named_parameters():
            param.requires_grad_(".".join(name.split(".")[:3]) in top)
        return _Encoder(model)

    @property
    def num_features(self) -> int:
        return self.extractor.embedding_dim

    def front(self, clip: Clip) -> np.ndarray:
        if clip.audio_path not in self._fronts:
            wave = decode_audio(clip.audio_path, self.extractor.frontend_sample_rate)
            if self.extractor.do_normalize:  # as the extractor: over the whole clip
                wave = normalize_waveform(wave)
            self._fronts[clip.audio_path] = np.asarray(wave, dtype=np.float32)[:, None]
        return self._fronts[clip.audio_path]

    def shape_keys(self, samples: Samples) -> np.ndarray:
        rate = self.extractor.frontend_sample_rate
        lengths = np.array([window_length(self.window, clip.fps, rate) for clip in samples.clips],
                           dtype=np.int64)
        return lengths[samples.clip] if len(samples) else np.zeros(0, dtype=np.int64)

    def tensor(self, samples: Samples, i: int, seed: int | None) -> torch.Tensor:
        clip = samples.clips[int(samples.clip[i])]
        x = frame_windows(self.front(clip), self.extractor.frontend_sample_rate, clip.n_frames,
                          clip.fps, self.window, np.array([samples.frame[i]]), pad="edge")
        return torch.from_numpy(np.ascontiguousarray(x[0, :, 0]))

    def preprocessing(self) -> dict[str, Any]:
        return {"sampling_rate": self.extractor.frontend_sample_rate,
                "do_normalize": self.extractor.do_normalize, "window": self.window,
                "layers": [-1], "combine": "mean", "train_layers": self.config.train_layers}

    def write(self, folder: Path, state: dict[str, torch.Tensor], record: Any) -> None:
        from pipeline.features.weights_record import publish_weights_folder

        model = self._pretrained()
        model.load_state_dict({k[len("model."):]: v for k, v in state.items()}, strict=True)

        def write(staging: Path) -> None:  # the whole folder is renamed into place after this
            model.save_pretrained(staging, safe_serialization=True)
            preprocessor = staging / "preprocessor_config.json"
            if self.folder is not None and (self.folder / preprocessor.name).is_file():
                shutil.copyfile(self.folder / preprocessor.name, preprocessor)
            else:
                preprocessor.write_text(json.dumps({
                    "sampling_rate": self.extractor.frontend_sample_rate,
                    "do_normalize": self.extractor.do_normalize}))

        publish_weights_folder(folder, record, write)
