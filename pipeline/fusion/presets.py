"""Named presets reproducing each paper's stage-two settings, and the assembly of a run's config.

A config is built in layers, each overriding the one before (:func:`build_config`)::

    the method's defaults  <  --preset  <  --config FILE.toml  <  --set key=value  <  --seed

Presets name the feature arrays stage one writes for each paper's backbones (``swin``,
``swin_audio_w*``, ``iresnet``, ``tdnn_w*``) and the paper's training choices. What a paper does
not state keeps this project's default (noted per preset). Not reproduced: Jin et al.'s
multi-task AU training, Yu et al.'s coarse-fine granularity loss and GCSA backbone (stage one's
features stand in for their backbones).
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import from_dict, override, to_dict
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.fusion.train import FuseConfig


@dataclass(frozen=True)
class Preset:
    paper: str  # the paper whose settings these are
    methods: tuple[str, ...]  # the heads the paper describes (the preset applies to these)
    settings: dict[str, Any] = field(default_factory=dict)  # train / sampling / loss overrides
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # head overrides per method


_KIM_FEATURES = {"image": "swin", "audio": ["swin_audio_w32", "swin_audio_w48", "swin_audio_w64"]}

PRESETS: dict[str, Preset] = {
    # Kim, Kim, Won 2023: Swin-Tiny features for faces and log-mel images, the Modal Fusion Module
    # with two ViT encoder layers, Y_I / Y_A / Y_T trained together, dynamic windows 32/48/64 with
    # purity 0.8/0.65/0.5, majority-class subsampling. Optimiser and learning rate: not stated.
    "kim2023": Preset(
        paper="Kim et al. 2023, Multi Modal Facial Expression Recognition with Transformer-Based "
              "Fusion Networks and Dynamic Sampling",
        methods=("mfm", "image", "audio"),
        settings={
            "sampling": {"balance": "subsample", "majority_cap": 2.0, "purity": True,
                         "windows": [32, 48, 64], "thresholds": [0.8, 0.65, 0.5]},
            "loss": {"kind": "ce"},
        },
        heads={
            "mfm": {**_KIM_FEATURES, "layers": 2},
            "image": {"image": "swin"},
            "audio": {"audio": _KIM_FEATURES["audio"]},
        },
    ),
    # Jin et al. 2021: IResNet100 face features and 512-d TDNN audio features concatenated, a
    # one-layer transformer encoder over 30-frame windows, a per-frame FC, focal loss, SGD with
    # momentum at learning rate 0.01. The sequence model's batch size is not stated (64 is the
    # visual model's): the head's default of 16 windows is kept.
    "jin2021": Preset(
        paper="Jin et al. 2021, A Multi-modal and Multi-task Learning Method for Action Unit and "
              "Expression Recognition",
        methods=("sequence",),
        settings={
            "train": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
            "loss": {"kind": "focal", "gamma": 2.0},
            "sampling": {"balance": "none"},
        },
        heads={"sequence": {"image": "iresnet", "audio": ["tdnn_w32"], "length": 30,
                            "layers": 1}},
    ),
    # Yu et al. 2025: proportional decision fusion P = (m Pa + n Pv) / (m + n) over integers
    # 0 < m, n < 6, FC classifiers with dropout 0.2, SGD (momentum 0.9, learning rate 0.001 for
    # the classifiers), batch size 16. Cross-entropy stands in for their coarse-fine loss.
    "yu2025": Preset(
        paper="Yu et al. 2025, Design of an Expression Recognition Solution Employing the Global "
              "Channel-Spatial Attention Mechanism",
        methods=("proportional",),
        settings={
            "train": {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "batch_size": 16},
            "loss": {"kind": "ce"},
        },
        heads={"proportional": {"dropout": 0.2, "max_weight": 5}},
    ),
    # Jeong et al. 2022 (extended DAN; see pipeline/fusion/heads/dan.py):
    #   setting        paper                        ours              why they differ
    #   lr             1e-4                         1e-4
    #   batch size     1024                         1024
    #   epochs         8                            8                 patience 8: no early stop
    #   weight decay   1e-4                         1e-4 (AdamW)
    #   optimizer      not stated                   AdamW             DAN's AffectNet code: Adam
    #   heads          4                            4
    #   loss           focal                        focal, gamma 2    gamma not stated (Lin's 2)
    #   aux losses     affinity + partition (DAN)   both, weight 1    DAN's code
    #   backbone       ResNet-50 (VGGFace2), tuned  frozen map        stage one caches features;
    #                                               + 1x1 adapter     the adapter trains instead
    #   data           + AffectNet, ExpW, AI-Hub,   Aff-Wild2 only    no external data; no image
    #                  image augmentation                             augmentation of cached maps
    #   bagging        soft-voting bag              one model         bagging: a separate option
    #   sampling       not stated                   none              focal loss for imbalance
    "jeong2022": Preset(
        paper="Jeong et al. 2022, Facial Expression Recognition based on Multi-head Cross "
              "Attention Network",
        methods=("dan",),
        settings={
            "train": {"optimizer": "adamw", "lr": 1e-4, "batch_size": 1024, "epochs": 8,
                      "patience": 8, "weight_decay": 1e-4},
            "loss": {"kind": "focal", "gamma": 2.0},
            "sampling": {"balance": "none"},
        },
        heads={"dan": {"image": "swin_tokens", "heads": 4}},
    ),
}


def _merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, tables recursively."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def preset_overrides(name: str, method: str) -> dict[str, Any]:
    """The config tables preset ``name`` sets for ``method``."""
    if name not in PRESETS:
        raise PipelineError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    if method not in preset.methods:
        raise PipelineError(f"preset {name} ({preset.paper.split(',')[0]}) describes the methods "
                            f"{', '.join(preset.methods)}, not {method}")
    return _merge(preset.settings, {"head": preset.heads.get(method, {})})


def build_config(method: str, store: str | Path, manifests: str | Path, preset: str | None = None,
                 config_file: str | Path | None = None, sets: list[str] | tuple[str, ...] = (),
                 seed: int | None = None) -> FuseConfig:
    """The run config: defaults < preset < config file < ``key=value`` overrides < seed."""
    # Imported here: the training loop needs torch, and the CLI lists presets without it.
    from pipeline.fusion.train import FuseConfig  # noqa: F811

    data = to_dict(FuseConfig(method=method))
    if preset is not None:
        data = _merge(data, preset_overrides(preset, method))
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise PipelineError(f"{path}: cannot read config ({' '.join(str(e).split())})") from None
        if loaded.get("method", method) != method:
            raise PipelineError(f"{path}: a config for method {loaded['method']!r}, not {method!r}")
        data = _merge(data, loaded)
    data.update(method=method, store=str(store), manifests=str(manifests))
    try:
        config = from_dict(FuseConfig, data)
        config = override(config, list(sets))
    except (ValueError, TypeError) as e:
        raise PipelineError(" ".join(str(e).split())) from None
    if config.method != method:
        raise PipelineError(f"--set method={config.method}: use --method to choose the head")
    if seed is not None:
        config.seed = seed
    return config
