"""The options of ``fer-pipeline finetune`` (:class:`FinetuneConfig`), built like every config:
defaults < ``--preset`` < ``--config FILE.toml`` < ``--set key=value`` < the command's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pipeline.config import build
from pipeline.errors import PipelineError
from pipeline.features.extractors.iresnet import IResNetConfig
from pipeline.features.extractors.swin_audio import SwinAudioConfig
from pipeline.features.extractors.tdnn import TdnnConfig
from pipeline.finetune.backbone_choice import BACKBONES
from pipeline.suggest import did_you_mean
from pipeline.training.config import ClassifierConfig
from pipeline.training.dan import DANNetConfig
from pipeline.training.layer_decay import LAYER_ORDERS
from pipeline.training.losses import LossConfig
from pipeline.training.sampling import SamplingConfig
from pipeline.training.windows import PURITY_RULES
from pipeline.training.schedules import ScheduleConfig

HEADS = ("linear", "dan")
TASK_SCHEDULES = ("joint", "epoch", "batch")
OPTIMIZERS = ("adamw", "sgd")
FACE_ONLY = ("input_size", "crop_pct")  # options of backbone timm alone (a preset's: dropped for others)


@dataclass
class AugmentConfig:
    """Face-crop augmentation (timm's training transform); off: the eval transform."""

    enabled: bool = True  # augment the training crops (off: the eval transform only)
    scale: tuple[float, float] = (0.6, 1.0)  # random resized crop: area fraction kept (faces: no tiny crops)
    ratio: tuple[float, float] = (0.75, 1.3333)  # random resized crop: aspect ratio range
    hflip: float = 0.5  # probability of a horizontal flip
    color_jitter: float = 0.2  # brightness/contrast/saturation jitter strength (0: none)
    # Padding-aware augmentation (pipeline.finetune.padaug, our reading of PadAug): the chance a
    # crop is made to look like a face at the frame's edge, padded as `faces` pads (0: off, so
    # fine-tunes from before it are unchanged).
    pad_prob: float = 0.0
    pad_shift: float = 0.3  # the padding augmentation's deepest padding, as a fraction of the side
    pad_mode: str = "replicate"  # its padding: replicate, reflect or black (as FacesConfig.pad)


@dataclass
class FinetuneConfig:
    """Fine-tunes a backbone on the training frames with a new class layer, chooses the epoch on
    the heads' train-dev slice and writes a weights folder ``extract --weights NAME=OUT`` loads."""

    # "timm" (face crops, any timm model), "iresnet" (face crops, jin2021), "tdnn", "swin_audio"
    # (log-mel windows), "hf_audio" (waveform windows, the top train_layers of the encoder) or a
    # plug-in's (pipeline.finetune.backbone_choice, docs/plugins.md)
    backbone: str = "timm"
    model: str = "resnet50"  # timm model name (backbone timm)
    weights: str | None = None  # initial weights (file or folder, any layout extract reads); unset: seeded random
    manifests: str = ""  # manifest directory (set by the command)
    epochs: int = 5  # most epochs
    patience: int = 3  # stop after this many epochs without a better train-dev macro-F1
    # patience counts only from this epoch on (a network trained from scratch may need epochs
    # before its dev F1 moves; 0: from the first epoch)
    min_epochs: int = 0
    batch_size: int = 32  # samples per optimiser step (over all DDP processes together)
    eval_batch_size: int = 64  # samples per forward pass when scoring the dev slice
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    lr: float = 1e-4  # backbone learning rate (schedule: its peak)
    head_lr: float = 1e-3  # learning rate of the new classifier
    # layer-wise lr decay (BEiT): block i of L gets lr * lr_decay ** (L + 1 - i), embeddings
    # lr_decay ** (L + 1), the final norm lr; timm/swin_audio (the model's group_matcher) and
    # hf_audio (encoder.layers.N) only; 1: off (pipeline.training.layer_decay)
    lr_decay: float = 1.0
    # learning-rate schedule (pipeline.training.schedules): linear warmup, then constant, cosine
    # or step decay, stepped once per optimiser step
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    weight_decay: float = 0.05  # decoupled for AdamW, L2 for SGD
    momentum: float = 0.9  # SGD momentum
    grad_clip: float = 1.0  # clip the gradient norm (0: no clipping)
    accumulate: int = 1  # gradient accumulation: one optimiser step every this many batches
    precision: str = "fp32"  # "fp32", or "bf16"/"fp16" autocast of the forward (fp16: CUDA only)
    # Backbone parameters kept frozen: name prefixes (timm names, e.g. "conv1", "layer1" for a
    # ResNet's stem and first stage; "patch_embed", "blocks.0" for a ViT). Each must match one.
    frozen: tuple[str, ...] = ()
    seed: int = 0  # weights of the classifier, sampling, augmentation
    dev_fraction: float = 0.2  # share of training frames per class held out (whole videos) to select the epoch
    dev_seed: int = 0  # the dev slice's seed (the heads' default: the same slice as `fuse`)
    # train on labels of fewer than two classes (refused by default: it selects at macro-F1 0),
    # with a warning (pipeline.training.class_check)
    allow_single_class: bool = False
    # fewest videos in the dev slice: dev_fraction grows (up to 0.5) until it holds them; 1: the
    # slice `fuse` uses with the same fraction and seed (a one-video slice is warned about)
    dev_min_videos: int = 1
    threads: int = 1  # torch CPU threads per process (results are bit-identical per thread count)
    workers: int = 0  # DataLoader worker processes decoding face crops (0: in the training process)
    device: str = "cpu"  # "cpu" or "cuda" (DDP: cuda:<local rank>)
    loss: LossConfig = field(default_factory=LossConfig)  # the heads' losses (ce, focal, coarse_fine)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # balance / majority_cap / interval
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # face crops (timm, iresnet)
    # backbone timm: the side in pixels the network sees (recorded: extract uses the same).
    # Unset: the training crops' own size when the weights are random (a network trained from
    # scratch learns at the crops' size: upsampled to the model's pretraining size it stalled,
    # issue 32), the initial weights' (their record's, else the model's pretraining size) when
    # weights are given
    input_size: int | None = None
    # backbone timm: the eval transform's centre-crop fraction (recorded). Unset: 1.0 (the
    # whole crop) at the crops' own size, else the initial weights' record's, else the model's own
    crop_pct: float | None = None
    # the new class layer: linear (experts 0) or the heads' mixture of experts (pipeline.training.moe);
    # training only: the weights folder holds the backbone
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    # "expr", or ["expr", "au"]: also an AU head (12 sigmoid units, jin2021's eq. 1 BCE with
    # positive weights, loss.au_pos_weight or negatives/positives of the training frames) trained
    # jointly with the expression head on the same frames (the paper alternates; see the README).
    tasks: tuple[str, ...] = ("expr",)
    # with tasks [expr, au]: "joint" (both losses on every expression frame, the behaviour before
    # schedules), or jin2021's alternation by "epoch" (odd epochs expressions, even ones AUs) or
    # "batch" (expression and AU batches take turns); these two train the AU task on every frame
    # with AU labels of the AU training split, AU-only clips included (pipeline.training.tasks)
    task_schedule: str = "joint"
    # the class layers: "linear" (classifier.*), or "dan": paper 001's DAN heads (multi-head cross
    # attention, the heads combined by attention, affinity and partition losses: dan.*) on the
    # backbone's spatial map, trained with the backbone end to end (backbone timm, a convolutional
    # model)
    head: str = "linear"
    dan: DANNetConfig = field(default_factory=DANNetConfig)
    # backbone tdnn: the log-mel window (video frames) centred on each labelled frame (paper 000's
    # shortest dynamic window), and the network, frontend and CMN (tdnn's own options; mean_norm
    # unset: as the extractor resolves it for the initial weights, "none" for random ones).
    window: int = 32
    tdnn: TdnnConfig = field(default_factory=TdnnConfig)
    iresnet: IResNetConfig = field(default_factory=IResNetConfig)  # backbone iresnet: its depth
    # backbone swin_audio: the extractor's options (model, log-mel) and paper 000's purity rule:
    # a window trains when that share of its frames carry its centre frame's label (unset: 0.8,
    # 0.65, 0.5 for windows of 32, 48, 64 frames); "window" divides by all its frames (the paper).
    swin_audio: SwinAudioConfig = field(default_factory=SwinAudioConfig)
    window_purity: float | None = None
    purity_rule: str = "window"
    train_layers: int = 2  # backbone hf_audio: the top transformer layers trained (the rest stay frozen)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES.names():  # read from the sources: imports no backbone
            raise PipelineError(f"backbone {self.backbone!r}: choose from {BACKBONES.choices()}"
                                f"{did_you_mean(self.backbone, BACKBONES.names())}")
        if self.optimizer not in OPTIMIZERS:
            raise PipelineError(f"optimizer {self.optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise PipelineError("epochs, patience, batch_size and eval_batch_size must be >= 1")
        if not 0.0 < self.dev_fraction < 1.0:
            raise PipelineError(f"dev_fraction {self.dev_fraction}: need 0 < f < 1")
        if self.sampling.purity:
            raise PipelineError("sampling.purity applies to dynamic audio windows of stage two; "
                                "finetune labels a window by its centre frame")
        if self.accumulate < 1:
            raise PipelineError(f"accumulate {self.accumulate}: need 1 or more batches per step")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise PipelineError(f"precision {self.precision!r}: choose from fp32, bf16, fp16")
        if self.purity_rule not in PURITY_RULES:
            raise PipelineError(f"purity_rule {self.purity_rule!r}: choose from {', '.join(PURITY_RULES)}")
        if self.window_purity is not None and not 0.0 <= self.window_purity <= 1.0:
            raise PipelineError(f"window_purity {self.window_purity}: need 0 <= p <= 1")
        if tuple(self.tasks) not in (("expr",), ("expr", "au")):
            raise PipelineError(f"tasks {list(self.tasks)}: choose [\"expr\"] or [\"expr\", \"au\"]")
        if self.task_schedule not in TASK_SCHEDULES:
            raise PipelineError(f"task_schedule {self.task_schedule!r}: choose from "
                                f"{', '.join(TASK_SCHEDULES)}")
        if self.head not in HEADS:
            raise PipelineError(f"head {self.head!r}: choose from {', '.join(HEADS)}")
        if self.head == "dan" and (not BACKBONES.attribute(self.backbone, "supports_dan_head")
                                   or "au" in self.tasks or self.classifier.experts):
            dan = " or ".join(BACKBONES.having("supports_dan_head"))
            raise PipelineError(f"head dan: needs backbone {dan} (a convolutional model), tasks "
                                "[\"expr\"] and classifier.experts 0")
        if not 0.0 < self.lr_decay <= 1.0:
            raise PipelineError(f"lr_decay {self.lr_decay}: need 0 < d <= 1 (1: off)")
        a = self.augment
        if (not 0.0 <= a.pad_prob <= 1.0 or not 0.05 < a.pad_shift < 1.0
                or a.pad_mode not in ("replicate", "reflect", "black")):
            raise PipelineError(f"augment.pad_prob {a.pad_prob} / pad_shift {a.pad_shift} / pad_mode "
                                f"{a.pad_mode!r}: need a chance in [0, 1], a shift in (0.05, 1) and "
                                "replicate, reflect or black")
        if self.lr_decay != 1.0 and not _has_layer_order(self.backbone):
            ordered = [n for n in BACKBONES.having("layer_order") if _has_layer_order(n)]
            raise PipelineError(f"lr_decay {self.lr_decay}: backbone {self.backbone} has no layer "
                                f"order; choose from {', '.join(ordered)} or lr_decay=1")
        if self.dev_min_videos < 1:
            raise PipelineError(f"dev_min_videos {self.dev_min_videos}: need >= 1")
        if self.min_epochs < 0:
            raise PipelineError(f"min_epochs {self.min_epochs}: need >= 0")
        if self.input_size is not None and self.input_size < 8:
            raise PipelineError(f"input_size {self.input_size}: need at least 8 pixels")
        if self.crop_pct is not None and not 0.0 < self.crop_pct <= 1.0:
            raise PipelineError(f"crop_pct {self.crop_pct}: need 0 < p <= 1")
        if ((self.input_size is not None or self.crop_pct is not None)
                and not BACKBONES.attribute(self.backbone, "supports_input_size")):
            raise PipelineError(f"input_size and crop_pct apply to backbone "
                                f"{', '.join(BACKBONES.having('supports_input_size'))}, not "
                                f"{self.backbone} (its input is fixed by its extractor)")
        if self.window < 1:
            raise PipelineError(f"window {self.window}: need a positive number of video frames")


def _has_layer_order(backbone: str) -> bool:
    """Whether ``backbone`` declares a depth order ``lr_decay`` knows (its class's
    ``layer_order``, read from the source for a built-in: nothing imported)."""
    return BACKBONES.attribute(backbone, "layer_order") in LAYER_ORDERS


def build_config(manifests: str | Path, backbone: str | None = None, model: str | None = None,
                 weights: str | None = None, config_file: str | Path | None = None,
                 sets: Sequence[str] = (), seed: int | None = None,
                 preset: str | None = None,
                 allow_random_weights: bool = False, allow_stand_ins: bool = False,
                 allow_other_model: bool = False,
                 notes: list[str] | None = None) -> FinetuneConfig:
    """The fine-tune's config: defaults < preset (:mod:`pipeline.finetune.presets`) < config file
    < ``key=value`` < the command's options. A preset refuses a model other than its paper's
    unless it is the paper's stand-in and ``allow_stand_ins``, or ``allow_other_model`` (the
    line saying so is appended to ``notes``); a preset whose paper starts the backbone from
    pretrained weights refuses a random start unless ``allow_random_weights``."""
    from pipeline.finetune.presets import check_model, check_start, preset_tables

    tables = preset_tables(preset, backbone)
    if tables is not None and backbone not in (None, "timm"):  # the preset's face-only settings
        tables = {k: v for k, v in tables.items() if k not in FACE_ONLY}
    config = build(FinetuneConfig, file=config_file, sets=sets, preset=tables,
                   options={"manifests": str(manifests), "backbone": backbone, "model": model,
                            "weights": weights, "seed": seed})
    note = check_model(preset, config.backbone, config.model, allow_stand_ins, allow_other_model)
    if note is not None and notes is not None:
        notes.append(note)
    check_start(preset, config.backbone, config.weights, allow_random_weights)
    return config
