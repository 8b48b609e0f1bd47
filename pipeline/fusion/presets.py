"""Named presets reproducing each paper's stage-two settings, and the check of a store against them.

A run's config is built in layers, each overriding the one before, by
:func:`pipeline.fusion.config.build_config`, which reads its preset layer and the check from here
(this module imports no other module of ``pipeline.fusion``)::

    the method's defaults  <  --preset  <  --config FILE.toml  <  --set key=value  <  --seed

Presets name the feature arrays stage one writes for each paper's backbones (``swin``,
``swin_audio_w*``, ``iresnet``, ``tdnn_w*``) and the paper's training choices. What a paper does
not state keeps this project's default (noted per preset). A preset may also name the extractor
settings its paper used (``Preset.extraction``); the fuse-config builder then refuses a store whose
root attributes record other settings for the features the run reads. Not reproduced: Yu et al.'s
end-to-end RHCNN / MCNN on pixels and waveforms (small branches on stage one's face maps and
log-mel stand in, see ``heads/gcsa.py``).

Every setting of each preset, the paper's value against ours and why, is in docs/presets.md's tables
("Every setting of each preset"); ``tests/fusion/test_preset_tables.py`` checks them against the
configs these presets resolve to. Every paper starts its backbones from pretrained (or trained)
weights, so the fuse-config builder refuses a store that records random weights for any extractor
whose arrays the run reads, naming them all in one line, unless the user allows it
(``fuse --allow-random-weights``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import merge
from pipeline.errors import PipelineError
from pipeline.stand_ins import STAND_INS
from pipeline.suggest import did_you_mean


@dataclass(frozen=True)
class Preset:
    paper: str  # the paper whose settings these are
    methods: tuple[str, ...]  # the heads the paper describes (the preset applies to these)
    settings: dict[str, Any] = field(default_factory=dict)  # train / sampling / loss overrides
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # head overrides per method
    # What stage one must have used: extractor -> {config field (dotted): accepted values, the
    # paper's first}. Checked against the store's record by :func:`check_extraction`.
    extraction: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)


_SWIN_TINY = "swin_tiny_patch4_window7_224"  # timm's name (pipeline.features.extractors.swin)
_KIM_AUDIO = {"model": (_SWIN_TINY,), "frontend.preset": ("kim2023",),
              "frontend.n_fft": (2048, None), "frontend.hop_length": (1024, None),
              "frontend.n_mels": (128, None)}
_KIM_FEATURES = {"image": "swin", "audio": ["swin_audio_w32", "swin_audio_w48", "swin_audio_w64"]}

# The four papers' presets turn off the weights' moving average (train.ema_epochs = 0): none of
# the papers averages its weights; the 2026 presets keep this project's default (1 epoch).
PRESETS: dict[str, Preset] = {
    # Kim, Kim, Won 2023: Swin-Tiny features of 224x224 faces (a plain resize) and of log-mel
    # images (2048 FFT, hop 1024, 128 mels), the Modal Fusion Module with two ViT encoder layers,
    # outputs Y_I / Y_A / Y_T ensembled, dynamic windows 32/48/64 kept when at least 0.8/0.65/0.5
    # of their frames share the centre frame's label, majority-class subsampling. Not stated, so
    # ours: frozen backbones (the paper trains both Swins), the three outputs trained at once by
    # the sum of their losses, the subsampling cap (the median class count: it cuts Happiness on
    # Table 1), optimiser, learning rate, epochs.
    "kim2023": Preset(
        paper="Kim et al. 2023, Multi Modal Facial Expression Recognition with Transformer-Based "
              "Fusion Networks and Dynamic Sampling",
        methods=("mfm", "image", "audio"),
        settings={
            "sampling": {"balance": "subsample", "majority_cap": 1.0, "purity": True,
                         "purity_over": "window", "windows": [32, 48, 64],
                         "thresholds": [0.8, 0.65, 0.5]},
            "loss": {"kind": "ce"},
            "train": {"ema_epochs": 0.0},
        },
        heads={
            # ViT's encoder MLP (4x); Y_I on every labelled face frame, as a separately trained
            # image model would be
            "mfm": {**_KIM_FEATURES, "layers": 2, "mlp_ratio": 4.0, "image_every_face": True},
            "image": {"image": "swin"},
            "audio": {"audio": _KIM_FEATURES["audio"]},
        },
        extraction={
            # "resized them to 224x224": the whole face crop, not timm's resize-248 + crop-224.
            "swin": {"model": (_SWIN_TINY,), "crop_pct": (1.0,)},
            # swin_audio, or one extractor per window (the paper's three audio Swins)
            **{name: _KIM_AUDIO for name in ("swin_audio", "swin_audio_w32", "swin_audio_w48",
                                              "swin_audio_w64")},
        },
    ),
    # Jin et al. 2021: IResNet100 face features and 512-d TDNN audio features concatenated, a
    # one-layer transformer encoder over 30-frame windows, a per-frame FC, focal loss for
    # expressions, AU and expression heads on the shared model trained batch by batch in turn
    # with BCE and positive weights for the AUs, SGD with momentum at learning rate 0.01. The
    # paper trains the multi-task heads on its visual model (frozen here: stage one's
    # extractor), so the alternation moves to the sequence model. Not stated, so ours: the
    # sequence model's batch size (64 is the visual model's; the head's default of 16 windows is
    # kept), the AU positive weights (negatives / positives per AU on the training split),
    # early stopping on expression macro-F1. The 2021 track's 7 classes: Other frames are
    # unlabelled (task.classes = 8 for the 8-class variant). "SGD with momentum" and nothing
    # more: no weight decay and no gradient clipping (PyTorch's SGD as the paper would have built
    # it).
    "jin2021": Preset(
        paper="Jin et al. 2021, A Multi-modal and Multi-task Learning Method for Action Unit and "
              "Expression Recognition",
        methods=("sequence",),
        settings={
            "train": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
                      "grad_clip": 0.0, "task_schedule": "batch", "select_task": "expr",
                      "ema_epochs": 0.0},
            "loss": {"kind": "focal", "gamma": 2.0},
            "sampling": {"balance": "none"},
            "task": {"classes": 7},
        },
        heads={"sequence": {"image": "iresnet", "audio": ["tdnn_w32"], "length": 30,
                            "layers": 1, "tasks": ["expr", "au"]}},
    ),
    # Yu et al. 2025: eq. 6 on the fused P (loss.on = fused), m and n calculated from the two
    # modalities' aligned predictions (head.weights = keyframe; the paper's "key frame alignment",
    # whose details it does not give). docs/presets.md's table has the rest.
    "yu2025": Preset(
        paper="Yu et al. 2025, Design of an Expression Recognition Solution Employing the Global "
              "Channel-Spatial Attention Mechanism",
        methods=("gcsa", "proportional"),
        settings={
            "train": {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "batch_size": 16,
                      "epochs": 300, "patience": 300, "eval_batch_size": 256, "ema_epochs": 0.0},
            "loss": {"kind": "coarse_fine", "on": "fused"},
            "sampling": {"interval": 5},
        },
        heads={
            "gcsa": {"image": "swin_tokens", "audio": "logmel", "use_gcsa": True, "masking": True,
                     "dropout": 0.2, "feature_lr": 0.0001, "max_weight": 5, "training": "joint",
                     "weights": "keyframe", "fast_params": "classifiers"},
            "proportional": {"dropout": 0.2, "max_weight": 5, "weights": "keyframe"},
        },
    ),
    # Jeong et al. 2022 (extended DAN; see pipeline/fusion/heads/dan.py): DAN on a ResNet-50
    # map (frozen here; a trainable 1x1 adapter instead), the paper's table 2, and its reported
    # system, a soft-voting bag (5 members: the paper gives no count).
    "jeong2022": Preset(
        paper="Jeong et al. 2022, Facial Expression Recognition based on Multi-head Cross "
              "Attention Network",
        methods=("dan",),
        settings={
            "train": {"optimizer": "adamw", "lr": 1e-4, "batch_size": 1024, "epochs": 8,
                      "patience": 8, "weight_decay": 1e-4, "ema_epochs": 0.0},
            "loss": {"kind": "focal", "gamma": 2.0},
            "sampling": {"balance": "none"},
            "bag": {"k": 5},
        },
        heads={"dan": {"image": "timm_map", "heads": 4}},
        extraction={"timm": {"model": ("resnet50",), "map": (True,)}},
    ),
    # Sun and Gao 2026 (arXiv 2603.12221, ABAW10 expression leader, val 0.5368): DINOv2 ViT-L/14
    # face features averaged over several re-crops, frame-aligned wav2vec2 features of short
    # audio windows, a lightweight gated fusion module, temporal smoothing at inference. Only the
    # abstract and introduction were reachable: the gate's form, widths, window, optimiser and
    # loss are ours (docs/heads-2026.md). The re-crop average is stage one's
    # `configs.timm.crops` (one array) or head.crops (re-crops stored as NAME_crop<k>); the
    # smoothing is stage three's.
    "sun2026": Preset(
        paper="Sun and Gao 2026, A Two-Stage Dual-Modality Model for Facial Emotional Expression "
              "Recognition (arXiv 2603.12221)",
        methods=("gated",),
        heads={"gated": {"images": ["timm"], "audio": ["hf_audio_w32"], "gate": "sigmoid",
                         "gate_width": "scalar"}},
        extraction={"timm": {"model": ("vit_large_patch14_dinov2.lvd142m",
                                       "vit_large_patch14_dinov2")}},
    ),
    # Yu et al. 2026 (arXiv 2603.08034, ABAW10 expression 0.5029): BEiT-large faces and
    # WavLM-large audio in a dual-branch transformer with safe cross-attention, modality dropout,
    # focal loss, sliding-window soft voting. Rates, window, widths and focal gamma are not in the
    # reachable text (the abstract): ours (docs/heads-2026.md).
    "yu2026": Preset(
        paper="Yu et al. 2026, Solution to the 10th ABAW Expression Recognition Challenge: A Robust "
              "Multimodal Framework with Safe Cross-Attention and Modality Dropout "
              "(arXiv 2603.08034)",
        methods=("xattn",),
        settings={"loss": {"kind": "focal", "gamma": 2.0}, "sampling": {"balance": "none"}},
        heads={"xattn": {"image": "timm", "audio": ["hf_audio_w32"], "modality_dropout": 0.2,
                         "modality_dropout_which": "either", "voting": "uniform"}},
        extraction={"timm": {"model": ("beit_large_patch16_224.in22k_ft_in22k_in1k",
                                       "beit_large_patch16_224")}},
    ),
}


def preset_overrides(name: str, method: str) -> dict[str, Any]:
    """The config tables preset ``name`` sets for ``method``."""
    if name not in PRESETS:
        raise PipelineError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}"
                            f"{did_you_mean(name, PRESETS)}")
    preset = PRESETS[name]
    if method not in preset.methods:
        raise PipelineError(f"preset {name} ({preset.paper.split(',')[0]}) describes the methods "
                            f"{', '.join(preset.methods)}, not {method}")
    return merge(preset.settings, {"head": preset.heads.get(method, {})})


def _field(config: dict, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; a missing field reads as None (the dataclass default)."""
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def _arrays_read(head: Any) -> set[str]:
    """Names a head config mentions (its store arrays are among them)."""
    names: set[str] = set()
    for value in asdict(head).values():
        values = value if isinstance(value, (list, tuple)) else (value,)
        names.update(v for v in values if isinstance(v, str))
    return names


def check_extraction(name: str, store: str | Path, head: Any,
                     allow_random_weights: bool = False, allow_stand_ins: bool = False) -> None:
    """Refuse, in one line, a ``store`` whose features a run with the head config ``head`` reads
    (a dataclass: its array names are read off it) were extracted with other
    settings than preset ``name`` needs (the store's root attributes record each extractor's
    config), or, unless ``allow_random_weights``, on random weights (the store records
    ``random_weights`` per extractor): every paper's backbones start from pretrained weights, so
    any backbone the run reads counts. Extractors whose arrays the run does not read are not
    checked, and a store that does not exist yet is left to the stage to report. With
    ``allow_stand_ins`` a model's stand-in (:data:`pipeline.stand_ins.STAND_INS`) is accepted
    in its place.
    """
    from pipeline.features.store import FeatureStore  # zarr: only when fusing
    from pipeline.features.store_format import StoreError

    try:
        recorded = FeatureStore(store).extractors()
    except StoreError:
        return
    read = _arrays_read(head)
    random = sorted(extractor for extractor, record in recorded.items()
                    if record.get("random_weights") and read & set(record.get("outputs", {})))
    if random and not allow_random_weights:
        names = ", ".join(random)
        weights = " ".join(f"--weights {e}=PATH" for e in random)
        raise PipelineError(
            f"{store}: {names} features come from random weights (no weights file at "
            f"extraction), but preset {name}'s paper uses trained backbones: extract with "
            f"{weights}, or pass --allow-random-weights to fuse anyway")
    for extractor, fields in PRESETS[name].extraction.items():
        record = recorded.get(extractor)
        if record is None or not read & set(record.get("outputs", {})):
            continue
        for dotted, accepted in fields.items():
            value = _field(record.get("config", {}), dotted)
            stand_ins = [STAND_INS[a] for a in accepted if a in STAND_INS]
            if value in stand_ins and allow_stand_ins:
                continue
            if value not in accepted:
                wanted = " or ".join(repr(a) for a in accepted)
                hint = (f" (or pass --allow-stand-ins to accept {value!r}, a smaller stand-in "
                        "for demo runs)" if value in stand_ins else "")
                raise PipelineError(
                    f"{store}: {extractor} was extracted with {dotted}={value!r}, but "
                    f"preset {name} needs {wanted}: extract into another store with "
                    f"--set configs.{extractor}.{dotted}={accepted[0]}{hint}")
