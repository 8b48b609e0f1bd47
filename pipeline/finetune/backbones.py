"""What differs per backbone when fine-tuning: the network, its labelled samples, how a sample
becomes a tensor (augmentation, preprocessing), and what the weights record says.

* :class:`FaceBackbone` (``backbone = "timm"``): any timm model, built headless by the same
  :func:`~pipeline.features.extractors.timm_models.build_timm` stage one uses (initial weights in
  any layout ``extract`` reads). A sample is a labelled frame with a face crop. Training transform:
  timm's own (random resized crop, horizontal flip, colour jitter; :class:`AugmentConfig`), at the
  model's input size and normalisation; selection and stage one use timm's eval transform with the
  same statistics, which the record carries.
* :class:`AudioBackbone` (``backbone = "tdnn"``): the ``tdnn`` extractor's x-vector network
  (:class:`~pipeline.features.extractors.tdnn.XVector`). A sample is a labelled video frame; its
  input is the log-mel window of ``window`` video frames centred on it, cut exactly as
  stage one cuts it (:func:`~pipeline.features.audio_windows.frame_windows`, the extractor's own
  frontend and CMN), labelled by its centre frame (jin2021's audio model). A window's rows
  depend on its clip's fps, so batches hold windows of one length (:meth:`Backbone.shape_keys`).
  No augmentation.
  Frontends are computed once per clip and held in memory (fine for the demo; Aff-Wild2's 45 h of
  audio at 200 rows/s would take about 8 GB: a decode-once cache on disk is not done yet).

Each augmentation draw is seeded by the sample's own seed (from the epoch's plan), so the same
plan gives the same tensors in any DataLoader worker, after any resume.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.compat import ensure_torchvision
from pipeline.data.frames import face_mask
from pipeline.data.manifest import Clip
from pipeline.data.media import decode_audio, read_image
from pipeline.errors import PipelineError
from pipeline.features.audio_windows import frame_windows, window_length
from pipeline.features.extractors.tdnn import TdnnConfig
from pipeline.finetune.backbone_choice import register
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.samples import Samples, au_targets, labelled_samples


class _Plan(torch.utils.data.Dataset):
    """A list of (sample, seed) pairs; item k is sample ``plan[k]`` as a tensor, its label and its
    AU labels."""

    def __init__(self, backbone: "Backbone", samples: Samples, plan: np.ndarray,
                 seeds: np.ndarray | None) -> None:
        self.backbone, self.samples, self.plan, self.seeds = backbone, samples, plan, seeds

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        i = int(self.plan[k])
        seed = None if self.seeds is None else int(self.seeds[k])
        x = self.backbone.tensor(self.samples, i, seed)
        return x, int(self.samples.label[i]), torch.from_numpy(au_targets(self.samples, i))


class Backbone:
    """The per-backbone part of fine-tuning (see the module docstring)."""

    name: str  # what FinetuneConfig.backbone says to choose it (the registry's key)
    order: int = 100  # where `finetune --describe` lists it
    trains_on: str = ""  # what a sample is, in a few words (`finetune --help`)
    Config: type | None = None  # its own section of FinetuneConfig, if any (--describe)
    family: str
    model_name: str
    needs = "audio"  # what a usable sample needs (named in the error when none is)
    # What FinetuneConfig's options may ask of it, checked before anything is built (literals:
    # the registry reads a built-in's from its source; pipeline.finetune.backbone_choice):
    # fit_input honours input_size and crop_pct;
    supports_input_size: bool = False
    # head dan: build() gives a network whose forward_features is a spatial map [B, C, H, W];
    supports_dan_head: bool = False
    # lr_decay: how its parameters are ordered by depth (pipeline.training.layer_decay's
    # LAYER_ORDERS: "timm", the model's group_matcher; "hf_audio", encoder.layers.N); None: none
    layer_order: str | None = None

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config

    def build(self) -> nn.Module:
        """The backbone, ``[B, ...] -> [B, num_features]``, with the initial weights."""
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        raise NotImplementedError

    def samples(self, clips: Sequence[Clip]) -> Samples:
        raise NotImplementedError

    def au_samples(self, clips: Sequence[Clip]) -> Samples:
        """The AU task's samples (``task_schedule`` epoch or batch): usable frames with AU labels."""
        raise PipelineError(f"task_schedule epoch/batch: backbone {self.config.backbone} has no AU "
                            "samples; use timm, iresnet or tdnn, or task_schedule joint")

    def fit_input(self, samples: Samples) -> None:
        """Settle the input preprocessing from the training samples (face backbones: the crops'
        own size, see ``FinetuneConfig.input_size``); nothing for the others."""

    def tensor(self, samples: Samples, i: int, seed: int | None) -> torch.Tensor:
        """Sample ``i``'s input; ``seed`` None: the eval preprocessing, else an augmented draw."""
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """What the weights record tells the extractor to apply."""
        raise NotImplementedError

    def write(self, folder: Path, state: dict[str, torch.Tensor], record: Any) -> None:
        """Write the best epoch's backbone ``state`` and its ``record`` as the weights folder."""
        from pipeline.features.weights_record import write_weights_folder

        write_weights_folder(folder, state, record)

    def dataset(self, samples: Samples, plan: np.ndarray, seeds: np.ndarray | None) -> _Plan:
        return _Plan(self, samples, plan, seeds)

    def shape_keys(self, samples: Samples) -> np.ndarray:
        """int64 [N]: samples with equal keys have inputs of equal shape (a batch holds one key)."""
        return np.zeros(len(samples), dtype=np.int64)


def train_transform(config: FinetuneConfig, data_config: dict[str, Any], eval_transform: Any) -> Any:
    """timm's training transform (:class:`AugmentConfig`) at ``data_config``'s input size and
    normalisation; ``eval_transform`` when augmentation is off."""
    import timm.data

    a = config.augment
    if not a.enabled:
        return eval_transform
    timm_transform = timm.data.create_transform(
        input_size=data_config["input_size"], is_training=True, scale=tuple(a.scale),
        ratio=tuple(a.ratio), hflip=a.hflip, vflip=0.0, color_jitter=a.color_jitter or None,
        auto_augment=None, re_prob=0.0, interpolation=data_config["interpolation"],
        mean=data_config["mean"], std=data_config["std"])
    if a.pad_prob <= 0.0:
        return timm_transform
    from torchvision import transforms

    from pipeline.finetune.padaug import PadAugment

    return transforms.Compose([PadAugment(a.pad_prob, a.pad_shift, mode=a.pad_mode), timm_transform])


def crop_size(samples: Samples) -> int:
    """The side of the training face crops: the most common larger side of each clip's first
    labelled crop (ties: the larger)."""
    from PIL import Image

    sides = []
    for i in np.unique(samples.clip):
        first = int(np.flatnonzero(samples.clip == i)[0])
        path = samples.clips[int(i)].frame_path(int(samples.frame[first]))
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
        except OSError as e:
            raise PipelineError(f"{path}: unreadable face crop ({e})") from None
    values, counts = np.unique(sides, return_counts=True)
    return int(values[counts == counts.max()].max())


@register
class FaceBackbone(Backbone):
    """Any timm model, built headless as stage one builds it; trains on face crops."""

    name = "timm"
    order = 0
    trains_on = "face crops"
    family = "timm"
    needs = "faces"
    supports_input_size = True
    supports_dan_head = True  # a convolutional model's map (model.DANClassifier checks its shape)
    layer_order = "timm"

    def __init__(self, config: FinetuneConfig) -> None:
        super().__init__(config)
        ensure_torchvision()
        import timm

        from pipeline.features.extractors.timm_models import timm_probe
        from pipeline.features.weights_record import check_family, image_data_config, read_record

        self.model_name = config.model
        self.probe = timm_probe(config.model)
        # ViTs and Swins are built for one input size (timm's fixed_input_size): they keep it.
        self.fixed_size = bool(getattr(timm.models.get_pretrained_cfg(config.model),
                                       "fixed_input_size", False))
        # Initial weights from an earlier fine-tune keep the preprocessing they were trained with.
        initial = read_record(config.weights)
        check_family(initial, "timm", config.model, config.weights)
        self.data_config = image_data_config(self.probe.data_config, initial)
        self._set_transforms()

    def _set_transforms(self) -> None:
        import timm.data

        self.eval_transform = timm.data.create_transform(**self.data_config, is_training=False)
        self.train_transform = train_transform(self.config, self.data_config, self.eval_transform)

    def fit_input(self, samples: Samples) -> None:
        """``input_size`` and ``crop_pct`` (:class:`FinetuneConfig`): explicit values win; with
        random weights and no ``input_size``, the crops' own size and the whole crop (models of
        a fixed input size, ViTs and Swins, keep theirs)."""
        size, crop_pct = self.config.input_size, self.config.crop_pct
        if size is not None and self.fixed_size and size != self.data_config["input_size"][-1]:
            raise PipelineError(f"input_size {size}: {self.model_name} is built for "
                                f"{self.data_config['input_size'][-1]} pixels only")
        if size is None and self.config.weights is None and not self.fixed_size:
            size = crop_size(samples)
            crop_pct = 1.0 if crop_pct is None else crop_pct
        if size is not None:
            self.data_config["input_size"] = (3, int(size), int(size))
        if crop_pct is not None:
            self.data_config["crop_pct"] = float(crop_pct)
        self._set_transforms()

    def build(self) -> nn.Module:
        from pipeline.features.extractors.seeding import seeded_build
        from pipeline.features.extractors.timm_models import build_timm

        if self.config.weights is None:  # the random network `extract -e timm --set seed=S` uses
            return seeded_build(lambda: build_timm(self.model_name, None), "timm", self.config.seed)
        return build_timm(self.model_name, self.config.weights, option="model")

    @property
    def num_features(self) -> int:
        return self.probe.num_features

    def samples(self, clips: Sequence[Clip]) -> Samples:
        return labelled_samples(clips, lambda clip: face_mask(clip.frames_dir, clip.n_frames))

    def au_samples(self, clips: Sequence[Clip]) -> Samples:
        return labelled_samples(clips, lambda clip: face_mask(clip.frames_dir, clip.n_frames), au=True)

    def tensor(self, samples: Samples, i: int, seed: int | None) -> torch.Tensor:
        clip = samples.clips[int(samples.clip[i])]
        image = read_image(clip.frame_path(int(samples.frame[i])))
        if seed is None:
            return self.eval_transform(image)
        # timm's random resized crop draws from `random`, torchvision's jitter and flip from torch.
        state = random.getstate()
        try:
            random.seed(seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.train_transform(image)
        finally:
            random.setstate(state)

    def preprocessing(self) -> dict[str, Any]:
        d = self.data_config
        return {"input_size": list(d["input_size"]), "mean": list(d["mean"]), "std": list(d["std"]),
                "crop_pct": d["crop_pct"], "interpolation": d["interpolation"]}


@register
class AudioBackbone(Backbone):
    """The ``tdnn`` extractor's x-vector network over log-mel windows centred on labelled frames."""

    name = "tdnn"
    order = 2
    trains_on = "log-mel windows"
    Config = TdnnConfig  # FinetuneConfig.tdnn
    family = "tdnn"
    model_name = "xvector"
    supports_input_size = False  # its input is fixed by its extractor
    supports_dan_head = False
    layer_order = None

    def __init__(self, config: FinetuneConfig) -> None:
        super().__init__(config)
        from pipeline.features.extractors.tdnn import Tdnn, resolve_preprocessing
        from pipeline.features.weights_record import read_record

        # The extractor itself computes the frontend (log-mel + CMN): what stage one will feed;
        # unset CMN options resolve as they would for the initial weights.
        tdnn = dataclasses.replace(config.tdnn, windows=(config.window,))
        tdnn = resolve_preprocessing(tdnn, read_record(config.weights), config.weights)
        self.extractor = Tdnn(config=tdnn)
        self.window = config.window
        self._fronts: dict[str, np.ndarray] = {}

    def build(self) -> nn.Module:
        from pipeline.features.extractors.checkpoints import read_state_dict
        from pipeline.features.extractors.seeding import seeded_build
        from pipeline.features.extractors.tdnn import XVector

        c = self.extractor.config

        def make() -> nn.Module:
            return XVector(self.extractor.frontend.params.n_mels, tuple(c.channels),
                           tuple(c.kernels), tuple(c.dilations), c.embedding_dim)

        if self.config.weights is None:  # the random network `extract -e tdnn --set seed=S` uses
            return seeded_build(make, "tdnn", self.config.seed)
        model = make()
        try:
            model.load_state_dict(read_state_dict(self.config.weights), strict=True)
        except RuntimeError as e:
            raise PipelineError(f"{self.config.weights}: not tdnn weights for this config "
                                f"({' '.join(str(e).split())[:160]})") from None
        return model

    @property
    def num_features(self) -> int:
        return self.extractor.config.embedding_dim

    def samples(self, clips: Sequence[Clip]) -> Samples:
        return labelled_samples(clips, lambda clip: np.full(clip.n_frames, clip.audio_path is not None))

    def au_samples(self, clips: Sequence[Clip]) -> Samples:
        return labelled_samples(clips, lambda clip: np.full(clip.n_frames, clip.audio_path is not None),
                                au=True)

    def front(self, clip: Clip) -> np.ndarray:
        if clip.audio_path not in self._fronts:  # _left/_right clips share their video's audio
            wave = decode_audio(clip.audio_path, self.extractor.frontend_sample_rate)
            self._fronts[clip.audio_path] = self.extractor.compute_frontend(wave)
        return self._fronts[clip.audio_path]

    def shape_keys(self, samples: Samples) -> np.ndarray:
        # A window's rows depend on its clip's fps: batches are cut per window length.
        lengths = np.array([window_length(self.window, clip.fps, self.extractor.frontend_frame_rate)
                            for clip in samples.clips], dtype=np.int64)
        return lengths[samples.clip] if len(samples) else np.zeros(0, dtype=np.int64)

    def tensor(self, samples: Samples, i: int, seed: int | None) -> torch.Tensor:
        clip = samples.clips[int(samples.clip[i])]
        x = frame_windows(self.front(clip), self.extractor.frontend_frame_rate, clip.n_frames,
                          clip.fps, self.window, np.array([samples.frame[i]]),
                          pad=self.extractor.pad_mode)
        return torch.from_numpy(np.ascontiguousarray(x[0]))

    def preprocessing(self) -> dict[str, Any]:
        c = self.extractor.config
        return {"frontend": dataclasses.asdict(c.frontend), "mean_norm": c.mean_norm,
                "cmn_seconds": c.cmn_seconds, "window": self.window}

