"""``ecapa`` and ``xvector``: SpeechBrain speaker embeddings per dynamic window (192-d / 512-d).

Weights: ``--weights`` names a SpeechBrain pretrained-model folder as published (e.g.
``spkrec-ecapa-voxceleb``, ``spkrec-xvect-voxceleb``): its ``hyperparams.yaml`` builds
``compute_features``, ``mean_var_norm`` and ``embedding_model`` (SpeechBrain's own classes), and
``embedding_model.ckpt`` is loaded into the last one with strict names. The yaml is read as data
and only SpeechBrain's known classes are built from it, unless ``--set trust_code=true``
(:mod:`~pipeline.features.extractors.speechbrain_yaml`); other entries (classifier, label encoder,
pretrainer) are checked but not built; nothing is fetched. Without a folder:
seeded random ``ECAPA_TDNN(80 mels, 192)`` (``xvector``: ``Xvector(24 mels, 512)``) behind
SpeechBrain's default ``Fbank`` and sentence mean normalisation.

How this differs from SpeechBrain's ``EncoderClassifier.encode_batch`` on each window's audio:
``compute_frontend`` runs the ``Fbank`` once over the whole clip and windows are cut from it, so
the ~2 frames at each end of a window see the real neighbouring audio where ``encode_batch`` on a
cut-out would see zero padding, and the dB floor (``top_db`` below the peak) is the clip's, not
the window's. ``embed`` then does exactly what ``encode_batch`` does to the features
(``mean_var_norm`` over the window, ``embedding_model``). A window covering the whole clip gives
``encode_batch``'s result; interior windows differ by those edge frames (tested).

One more difference, for ``xvector``: SpeechBrain's ``StatisticsPooling`` adds Gaussian noise,
rescaled to [1e-5, 9e-5], to every pooled mean, even in eval mode, from torch's global generator;
so two runs of ``encode_batch`` differ and stored features would depend on the run. Here the noise
is its midpoint, a constant 5e-5 (:func:`_fixed_pooling_noise`): the same bytes in every run, at
most 4e-5 from any of SpeechBrain's draws. ``xvector`` version 2 (cache keys changed).
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
from pipeline.features.extractors.speechbrain_yaml import build_modules


@dataclass
class EcapaConfig:
    windows: tuple[int, ...] = (32, 48, 64)  # in video frames (paper 000's dynamic windows)
    embedding_dim: int = 192  # the model's output width (ECAPA: 192; SpeechBrain x-vector: 512)


def _import_speechbrain() -> None:
    """Import SpeechBrain, then drop the lazy placeholders it leaves in ``sys.modules``.

    SpeechBrain registers modules such as ``speechbrain.k2_integration`` as lazy objects that
    raise ImportError on first attribute access when their optional dependency is missing.
    Tools that walk ``sys.modules`` (hypothesis, ``inspect``, pickling by reference) then fail in
    any process that ran this extractor. Removing the never-loaded placeholders only means a later
    explicit import of such a module fails the ordinary way.
    """
    import sys

    import speechbrain  # noqa: F401
    from speechbrain.utils.importutils import LazyModule

    for name, module in list(sys.modules.items()):
        if isinstance(module, LazyModule) and not getattr(module, "lazy_module", None):
            del sys.modules[name]


def _default_modules(name: str) -> dict[str, torch.nn.Module]:
    _import_speechbrain()
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    if name == "xvector":
        from speechbrain.lobes.models.Xvector import Xvector

        n_mels, model = 24, Xvector(in_channels=24, lin_neurons=512)
    else:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        n_mels, model = 80, ECAPA_TDNN(input_size=80, lin_neurons=192)
    return {"compute_features": Fbank(n_mels=n_mels),
            "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
            "embedding_model": model}


def _fixed_pooling_noise(module: torch.nn.Module) -> None:
    """Replace the random noise of every SpeechBrain ``StatisticsPooling`` in ``module`` by its
    midpoint (see the module docstring)."""
    from speechbrain.nnet.pooling import StatisticsPooling

    for pooling in module.modules():
        if isinstance(pooling, StatisticsPooling):
            midpoint = 5 * pooling.eps  # eps * ((1 - 9) * g + 9) for g in [0, 1]: eps .. 9 eps
            pooling._get_gauss_noise = (
                lambda shape, device="cpu", value=midpoint: torch.full(shape, value, device=device))


def _folder_modules(folder: Path, trust_code: bool) -> dict[str, torch.nn.Module]:
    _import_speechbrain()
    path = folder / "hyperparams.yaml"
    if not path.is_file() or not (folder / "embedding_model.ckpt").is_file():
        raise PipelineError(f"{folder}: a SpeechBrain folder needs hyperparams.yaml and "
                            "embedding_model.ckpt")
    return build_modules(path, ("compute_features", "mean_var_norm", "embedding_model"), trust_code)


@register
class Ecapa(AudioEmbeddingExtractor):
    name = "ecapa"
    Config = EcapaConfig
    pad_mode: ClassVar[str] = "edge"  # filterbank rows have no clip-independent silence value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.weights is not None and not self.weights.is_dir():
            raise PipelineError(f"{self.weights}: {self.name} needs a SpeechBrain model folder")
        stft = self._modules()["compute_features"].compute_STFT
        self._sample_rate, self._hop = int(stft.sample_rate), int(stft.hop_length)

    def _modules(self) -> dict[str, torch.nn.Module]:
        if self.weights is None:  # random weights, drawn from this extractor's own generator
            return dict(self.build(lambda: torch.nn.ModuleDict(_default_modules(self.name))).items())
        with torch.random.fork_rng(devices=[]):  # the folder's checkpoint replaces any draw
            return _folder_modules(self.weights, self.trust_code)

    @property
    def frontend_sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frontend_frame_rate(self) -> float:
        return self._sample_rate / self._hop

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def load(self) -> None:
        if self._model is not None:
            return
        modules = self._modules()
        if self.weights is not None:
            path = self.weights / "embedding_model.ckpt"
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                modules["embedding_model"].load_state_dict(state, strict=True)
            except Exception as e:
                reason = " ".join(str(e).split())
                reason = reason[:reason.find("Missing") if "Missing" in reason else 160][:160]
                raise PipelineError(f"{path}: does not fit {self.weights / 'hyperparams.yaml'}'s "
                                    f"embedding_model ({reason})") from None
        _fixed_pooling_noise(modules["embedding_model"])
        modules = {k: self.freeze(m) for k, m in modules.items()}
        with torch.inference_mode():
            probe = torch.zeros(1, 50, self._n_mels(modules), device=self.device)
            dim = modules["embedding_model"](probe).shape[-1]
        if dim != self.config.embedding_dim:
            raise PipelineError(f"{self.weights}: gives {dim}-d embeddings: add --set "
                                f"configs.{self.name}.embedding_dim={dim}")
        self._model = modules

    @staticmethod
    def _n_mels(modules: dict[str, torch.nn.Module]) -> int:
        return int(modules["compute_features"].compute_fbanks.n_mels)

    def compute_frontend(self, waveform: np.ndarray) -> np.ndarray:
        self.load()
        wave = torch.from_numpy(np.asarray(waveform, dtype=np.float32))[None].to(self.device)
        with torch.inference_mode():
            return self._model["compute_features"](wave)[0].float().cpu().numpy()

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        self.load()
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        lengths = torch.ones(x.shape[0], device=self.device)
        with torch.inference_mode(), self.autocast():
            x = self._model["mean_var_norm"](x, lengths)
            out = self._model["embedding_model"](x, lengths)
        return out.reshape(x.shape[0], -1).float().cpu()


@dataclass
class XvectorConfig(EcapaConfig):
    embedding_dim: int = 512  # SpeechBrain's x-vector (spkrec-xvect-voxceleb)


@register
class SpeechBrainXvector(Ecapa):
    name = "xvector"
    Config = XvectorConfig
    version = 2  # 2: StatisticsPooling's random noise fixed at its midpoint (module docstring)
