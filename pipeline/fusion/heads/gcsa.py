"""``gcsa``: Yu et al. 2025's two-branch model with GCSA and proportional decision fusion.

Per frame ``t``::

    image  face map [H, W, C] -> LayerNorm(C) -> 1x1 conv stem -> RHCNN-style residual block
           -> GCSA -> mean over H, W -> dropout -> FC -> P_v
    audio  log-mel window [T_win, n_mels] centred on t -> standardised -> (training: time and
           frequency masking) -> MCNN-style multi-branch CNN -> GCSA -> mean -> dropout -> FC -> P_a
    fusion P = (m P_a + n P_v) / (m + n), integers 1 <= m, n <= max_weight, chosen on the
           selection clips after every epoch (``weights``: the ``proportional`` head's rules)

The paper trains RHCNN and MCNN end to end on pixels and waveforms; here stage one's frozen
backbone maps (``swin_tokens`` [T, 7, 7, 768]) and log-mel (``logmel`` [T_mel, n_mels]) stand in for
their inputs, and the branches are small trainable networks in the same spirit:

* **RHCNN** (3.2): the backbone's map replaces the two primary N x N conv blocks; a 1x1 conv
  stem sets the width; the residual block is MobileNetV2-shaped: 1x1 conv, N x N depthwise conv,
  1x1 conv (the depthwise conv and the last 1x1 form the depthwise separable conv), plus the
  identity; then a channel shuffle (the paper's "channel mixing").
* **MCNN** (3.2): three branches on the log-mel window (mel bands x time): *local* (3x3 then 5x5
  kernels), *temporal* (1x3 then 1x7, along time), *spatial* (3x1 then 7x1, along frequency);
  each of two blocks is conv, BN, ReLU, 2x2 max-pool (ceil mode, so that a one-row window of a
  clip without audio still passes). The branch outputs are concatenated along channels.

Choices the paper leaves open (each a config field): the audio window is one of the dynamic
windows of paper 000 (default 64 video frames: about 2 s of speech at 30 fps, the usual length for
speech emotion), cut from the log-mel by :func:`pipeline.features.audio_windows.frame_windows`;
each window is standardised (zero mean, unit variance over the window) so that masked cells, set
to 0, hold the window's mean; masks are torchaudio's ``TimeMasking`` / ``FrequencyMasking`` with
one mask each of up to ``time_mask`` frames and ``freq_mask`` bands, drawn per window (training
only). Clips of different fps give windows of different lengths: forward runs each length
separately, so a frame's output never depends on the other frames of its batch.

**Training.** ``training = "joint"`` sums the two branches' losses at every step;
``"alternate"`` trains them branch by branch, the image loss on even steps and the audio loss on
odd ones (the other branch's parameters get no gradient and SGD skips them; the step counter is
part of the checkpoint, so a resumed run alternates as an uninterrupted one). With ``loss.on =
"fused"`` (the ``yu2025`` preset) the loss is eq. 6 on the fused P (see ``proportional.py``);
"alternate" then lets only one branch's logits carry gradient into P at each step. ``use_gcsa =
false`` replaces both GCSA modules by the identity (the paper's "Base" row).

**Learning rates.** The paper: "a learning rate of 0.0001. The learning rate for the weight
parameters of speech and facial images is set to 0.001". ``feature_lr`` is the 1e-4 and
``train.lr`` the 1e-3; ``fast_params`` says which parameters get ``train.lr``:
``"classifiers"`` (the ``yu2025`` preset) reads "weight parameters of speech and facial images"
as the two modality FC layers that weigh each modality's features into classes (everything else,
branches and GCSA, at 1e-4); ``"weights"`` reads it as every weight tensor (convolution kernels
and linear matrices) of the speech and image networks, with their biases and normalisation
parameters at 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.data.labels import NUM_CLASSES
from pipeline.errors import PipelineError
from pipeline.features.audio_windows import frame_windows
from pipeline.fusion import modality
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.fusion.gcsa import GCSA, channel_shuffle
from pipeline.fusion.heads import Batch, Head, register
from pipeline.fusion.heads.proportional import (
    WEIGHT_RULES,
    ProportionalHead,
    fused_or_branch_loss,
)
from pipeline.fusion.heads.unimodal import targets_of
from pipeline.training.losses import LossConfig, batch_loss
from pipeline.training.sampling import SamplingConfig

TRAINING_MODES = ("joint", "alternate")
FAST_PARAMS = ("classifiers", "weights")


@dataclass
class GCSAConfig:
    image: str = "swin_tokens"  # store array of face maps [T, H, W, C]
    audio: str = "logmel"  # store array of log-mel [T_mel, n_mels] at its own rate
    window: int = 64  # audio window, in video frames centred on each frame (32, 48 or 64: paper 000)
    use_gcsa: bool = True  # False: no GCSA in either branch (the ablation's "Base")
    width: int = 64  # channels of the image branch (a multiple of reduction and groups)
    kernel: int = 3  # N of the image branch's N x N depthwise convolution
    audio_width: int = 16  # channels of each of the three audio branches (GCSA sees 3x this)
    reduction: int = 4  # GCSA: channel reduction of its MLP and its first 7x7 conv (the paper: 4)
    groups: int = 4  # channel shuffle groups, in GCSA and after the residual block (the paper: 4)
    dropout: float = 0.2  # dropout before each FC classifier (the paper: 0.2)
    masking: bool = True  # time and frequency masking of the log-mel windows in training
    time_mask: int = 8  # most log-mel frames one time mask covers
    freq_mask: int = 16  # most mel bands one frequency mask covers
    training: str = "joint"  # "joint" (sum of both losses) or "alternate" (branch by branch)
    feature_lr: float = 0.0  # learning rate of all but the FC classifiers; 0 = train.lr
    max_weight: int = 5  # m (audio) and n (image) range over 1..max_weight (the paper: 5)
    modality_dropout: float = 0.0  # training: a sample loses one modality with this probability
    modality_dropout_which: str = "either"  # "either", "image" or "audio" (pipeline.fusion.modality)
    weights: str = "grid"  # how (m, n) are chosen: "grid" or "keyframe" (see proportional.py)
    # which parameters train at train.lr (the others at feature_lr): "classifiers" (the two FC
    # layers) or "weights" (every conv/linear weight tensor; biases and norms at feature_lr)
    fast_params: str = "classifiers"


def _block(cin: int, cout: int, kernel: tuple[int, int]) -> nn.Sequential:
    """Conv (same padding), BN, ReLU, 2x2 max-pool (ceil mode: never pools a side to zero)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=(kernel[0] // 2, kernel[1] // 2)),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2, ceil_mode=True))


class ImageBranch(nn.Module):
    """RHCNN-style: stem, residual block with a depthwise separable conv, channel shuffle, GCSA."""

    def __init__(self, channels: int, config: GCSAConfig) -> None:
        super().__init__()
        w, k = config.width, config.kernel
        self.norm = nn.LayerNorm(channels)
        self.stem = nn.Sequential(nn.Conv2d(channels, w, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.residual = nn.Sequential(
            nn.Conv2d(w, w, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, k, padding=k // 2, groups=w), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 1), nn.BatchNorm2d(w))
        self.groups = config.groups
        self.attention = GCSA(w, config.reduction, config.groups) if config.use_gcsa else nn.Identity()

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] face maps -> [B, width] pooled features."""
        x = self.stem(self.norm(maps).permute(0, 3, 1, 2))
        x = channel_shuffle(torch.relu(x + self.residual(x)), self.groups)
        return self.attention(x).mean(dim=(2, 3))


class SpecMasking(nn.Module):
    """torchaudio's time and frequency masking of [B, 1, mels, time], per window, training only."""

    def __init__(self, time_mask: int, freq_mask: int) -> None:
        super().__init__()
        self.time_mask, self.freq_mask = time_mask, freq_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        import torchaudio.transforms as T  # here: importing the registry must not load torchaudio

        if self.freq_mask:
            x = T.FrequencyMasking(min(self.freq_mask, x.shape[-2]), iid_masks=True)(x)
        if self.time_mask:  # (capped at the window: a longer mask would blank it all)
            x = T.TimeMasking(min(self.time_mask, x.shape[-1]), iid_masks=True)(x)
        return x


class AudioBranch(nn.Module):
    """MCNN-style: local, temporal and spatial (frequency) branches of two blocks each, GCSA."""

    KERNELS = {"local": ((3, 3), (5, 5)), "temporal": ((1, 3), (1, 7)), "spatial": ((3, 1), (7, 1))}

    def __init__(self, config: GCSAConfig) -> None:
        super().__init__()
        w = config.audio_width
        self.masking = SpecMasking(config.time_mask, config.freq_mask) if config.masking \
            else nn.Identity()
        self.branches = nn.ModuleDict({name: nn.Sequential(_block(1, w, first), _block(w, w, second))
                                       for name, (first, second) in self.KERNELS.items()})
        channels = 3 * w
        self.attention = GCSA(channels, config.reduction, config.groups) if config.use_gcsa \
            else nn.Identity()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """[B, T, mels] standardised log-mel windows -> [B, 3 * audio_width] pooled features."""
        x = self.masking(windows.transpose(1, 2)[:, None])  # [B, 1, mels, T]
        x = torch.cat([branch(x) for branch in self.branches.values()], dim=1)
        return self.attention(x).mean(dim=(2, 3))


@register
class GCSAHead(Head):
    name = "gcsa"
    Config = GCSAConfig
    outputs = ("fusion", "image", "audio")
    primary = "fusion"
    model_outputs = ("image", "audio")
    face_outputs = ("image",)  # the fusion output is derived after faceless frames are filled
    needs_audio = True
    fused_loss = True
    batch_size = 16  # the paper's

    def __init__(self, config: GCSAConfig, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__(config, dims)
        shape = dims[config.image]
        if len(shape) != 3:
            raise PipelineError(f"gcsa: image array {config.image!r} has per-frame shape {shape}: "
                                "need face maps [H, W, C] (e.g. swin_tokens)")
        if len(dims[config.audio]) != 1:
            raise PipelineError(f"gcsa: audio array {config.audio!r} has per-row shape "
                                f"{dims[config.audio]}: need log-mel [T_mel, n_mels]")
        if config.training not in TRAINING_MODES:
            raise PipelineError(f"gcsa training {config.training!r}: choose from "
                                f"{', '.join(TRAINING_MODES)}")
        if config.fast_params not in FAST_PARAMS or config.weights not in WEIGHT_RULES:
            raise PipelineError(f"gcsa fast_params {config.fast_params!r}, weights "
                                f"{config.weights!r}: choose from {', '.join(FAST_PARAMS)} and "
                                f"{', '.join(WEIGHT_RULES)}")
        if config.window < 1 or config.max_weight < 1 or config.width % config.groups:
            raise PipelineError(f"gcsa window {config.window}, max_weight {config.max_weight}, "
                                f"width {config.width}: need window, max_weight >= 1 and a width "
                                f"divisible by groups ({config.groups})")
        modality.check(config.modality_dropout, config.modality_dropout_which, self.name)
        self.image_branch = ImageBranch(shape[-1], config)
        self.audio_branch = AudioBranch(config)
        self.fc_image = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.width, NUM_CLASSES))
        self.fc_audio = nn.Sequential(nn.Dropout(config.dropout),
                                      nn.Linear(3 * config.audio_width, NUM_CLASSES))
        self.register_buffer("m", torch.tensor(1, dtype=torch.int64))
        self.register_buffer("n", torch.tensor(1, dtype=torch.int64))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.int64))  # for "alternate"

    @classmethod
    def request(cls, config: GCSAConfig, sampling: SamplingConfig) -> FeatureRequest:
        return FeatureRequest(arrays=(config.image, config.audio), audio=(config.audio,),
                              series=(config.audio,))

    def parameter_groups(self) -> list[dict]:
        if self.config.fast_params == "classifiers":
            fast = [*self.fc_image.parameters(), *self.fc_audio.parameters()]
        else:  # the weight tensors of every conv and linear layer (GCSA's included)
            fast = [m.weight for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        chosen = {id(p) for p in fast}
        features = {"params": [p for p in self.parameters() if id(p) not in chosen]}
        if self.config.feature_lr:
            features["lr"] = self.config.feature_lr
        return [features, {"params": fast}]

    def audio_windows(self, table: Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [B, T_max, mels] standardised windows (zero-padded) and int64 [B] lengths."""
        series = table.series[self.config.audio]
        clips = table.clip_index[rows]
        parts: list[np.ndarray] = [np.empty(0)] * len(rows)
        for c in np.unique(clips):
            pick = np.flatnonzero(clips == c)
            s = series[c]
            begin, end = int(table.offsets[c]), int(table.offsets[c + 1])
            windows = frame_windows(s.data, s.rate, end - begin, s.fps, self.config.window,
                                    rows[pick] - begin)
            mean = windows.mean(axis=(1, 2), keepdims=True)
            std = windows.std(axis=(1, 2), keepdims=True)
            windows = (windows - mean) / (std + 1e-5)
            for i, w in zip(pick, windows):
                parts[i] = w
        lengths = np.array([p.shape[0] for p in parts], dtype=np.int64)
        out = np.zeros((len(rows), int(lengths.max(initial=1)), self.dims[self.config.audio][0]),
                       np.float32)
        for i, p in enumerate(parts):
            out[i, :p.shape[0]] = p
        return out, lengths

    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        windows, lengths = self.audio_windows(table, examples)
        inputs = {"image": torch.from_numpy(table.take(self.config.image, examples)),
                  "audio": torch.from_numpy(windows), "audio_length": torch.from_numpy(lengths)}
        return inputs, targets_of(table, examples), None

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Modality dropout (training only): a dropped modality's input is zeroed, as a clip
        # without audio gives its audio branch (the branches train on their own losses, so
        # this teaches each branch what to say when its input is missing).
        keep_image, keep_audio = modality.modality_keep(
            inputs["image"].shape[0], self.config.modality_dropout,
            self.config.modality_dropout_which, self.training, inputs["image"].device)
        if not (bool(keep_image.all()) and bool(keep_audio.all())):
            inputs = {**inputs, "image": inputs["image"] * keep_image[:, None, None, None],
                      "audio": inputs["audio"] * keep_audio[:, None, None]}
        image = self.fc_image(self.image_branch(inputs["image"]))
        windows, lengths = inputs["audio"], inputs["audio_length"]
        if bool((lengths == windows.shape[1]).all()):  # one length (one fps): no regrouping
            return {"image": image, "audio": self.fc_audio(self.audio_branch(windows))}
        features = None
        for length in torch.unique(lengths).tolist():  # one pass per window length (fps)
            pick = torch.nonzero(lengths == length).squeeze(1)
            part = self.audio_branch(windows[pick, :length])
            if features is None:
                features = part.new_zeros(len(lengths), part.shape[1])
            features[pick] = part
        return {"image": image, "audio": self.fc_audio(features)}

    def loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor,
             weights: torch.Tensor | None, config: LossConfig) -> torch.Tensor:
        if self.config.training == "joint":
            return fused_or_branch_loss(self, logits, targets, weights, config)
        branch = ("image", "audio")[int(self.steps) % 2]
        self.steps += 1
        if config.on == "fused":  # P, with gradient through this step's branch only
            other = "audio" if branch == "image" else "image"
            logits = {branch: logits[branch], other: logits[other].detach()}
            return fused_or_branch_loss(self, logits, targets, weights, config)
        return batch_loss(logits[branch], targets, weights, config)

    # P = (m Pa + n Pv) / (m + n) with (m, n) fitted on the selection clips by the loop (the
    # proportional head's rules, reused).
    derive = ProportionalHead.derive
    fits_on_validation = True
    fit_on = ProportionalHead.fit_on
