"""Each paper's fine-tuning settings, as far as the paper states them (``finetune --preset``).

Layers, later wins: the defaults < ``--preset`` < ``--config FILE.toml`` < ``--set`` < options.
What a paper does not state keeps this project's default (:mod:`pipeline.finetune.config`).
``--backbone`` wins over a preset's: ``--preset jin2021 --backbone iresnet`` trains jin2021's face
model with the settings the paper states for it (the preset's default backbone is its TDNN, for
which the paper states nothing), ``--preset kim2023 --backbone swin_audio`` its audio Swin.
A preset's ``model`` is the paper's: another is refused (:func:`check_model`) unless it is the
paper's stand-in and ``--allow-stand-ins`` (demo runs, as ``fuse --preset``), or
``--allow-other-model``.

| preset | backbone | paper states | ours (paper silent) |
| --- | --- | --- | --- |
| ``kim2023`` (000) | ``swin_tiny_patch4_window7_224`` on faces | Swin-Tiny trained on the faces, resized to 224x224 (``crop_pct`` 1.0, as the fuse preset extracts); majority-class subsampling | subsampling cap at the median class count (as the fuse preset); AdamW, lr 1e-4, 5 epochs, batch 32; augmentation |
| ``jeong2022`` (001) | ``resnet50`` (a VGGFace2 ResNet-50 as ``--weights``) + DAN's heads (``head = "dan"``, 4 heads), trained end to end | Table 2: lr 1e-4, batch 1024, 8 epochs, weight decay 1e-4 (we read the table as the fine-tune's too: it does not say which stage it is for); focal loss; affinity loss; colour jitter, random crop, horizontal flip | AdamW; focal gamma 2; the augmentations' strengths (the project's ``augment`` defaults); partition loss weight 1 and DAN's code's form |
| ``jin2021`` (003) | ``tdnn`` (the IResNet is not fine-tuned here yet) | image model: SGD with momentum, lr 0.001, batch 64, focal loss; TDNN: nothing | the image model's optimiser, lr and batch for the TDNN; momentum 0.9; focal gamma 2; no weight decay, no gradient clipping (not stated; as the fuse preset) |
| ``jin2021`` + ``--backbone iresnet`` | IResNet-100 (the paper's Glint360K weights as ``--weights``) | image model: SGD with momentum, lr 0.001, batch 64, focal loss; AU and expression tasks alternated epoch by epoch or batch by batch (``task_schedule``) | momentum 0.9; focal gamma 2; no weight decay or clipping; ``tasks=["expr","au"]`` alternated batch by batch (the fuse preset's schedule) |
| ``kim2023`` + ``--backbone swin_audio`` | Swin-Tiny on log-mel windows | windows 32/48/64 with purity 0.8/0.65/0.5; log-mel 2048/1024/128; subsampling | one fine-tune per ``window``; AdamW, lr 1e-4, 5 epochs, batch 32 |
| ``sun2026`` | ``vit_large_patch14_dinov2.lvd142m`` (DINOv2 ViT-L/14) | DINOv2 ViT-L/14 fine-tuned on faces with a mixture-of-experts training head and PadAug | all numbers: AdamW lr 2e-5, head 1e-3, layer decay 0.75, weight decay 0.05, 1 warmup epoch then cosine, 10 epochs, 4 experts (all used), padding augmentation 0.3 (our reading of PadAug) |
| ``yu2026`` | ``beit_large_patch16_224.in22k_ft_in22k_in1k`` (BEiT-L) | BEiT-large faces; focal loss | the same optimiser and schedule as sun2026; focal gamma 2; no class rebalancing (as the fuse preset) |
| ``yu2025`` (004) | any timm model (its RHCNN is not available) | SGD, lr 1e-4 (backbone) and 1e-3 (the image/speech weights: our classifier), momentum 0.9, batch 16, coarse-fine loss, equal-interval frames, 300 rounds | 10 epochs (300 rounds of its end-to-end net are not a fine-tune budget), interval 5 frames |
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError
from pipeline.stand_ins import STAND_INS
from pipeline.suggest import did_you_mean

# A preset's tables for one backbone only (``--backbone NAME``), over its others.
BY_BACKBONE = "by_backbone"

FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    # crop_pct 1.0: the whole face crop resized to 224, what the fuse preset extracts with
    "kim2023": {"backbone": "timm", "model": "swin_tiny_patch4_window7_224", "crop_pct": 1.0,
                "sampling": {"balance": "subsample", "majority_cap": 1.0}},
    # DAN's heads on the ResNet-50 map, trained with it (paper 001's Figure 1); focal loss
    # (gamma not stated: 2, as the fuse preset); colour jitter, random crop and flip are listed
    # (their strengths are not: the project's augment defaults)
    "jeong2022": {"backbone": "timm", "model": "resnet50", "lr": 1e-4, "batch_size": 1024,
                  "epochs": 8, "weight_decay": 1e-4, "head": "dan",
                  "dan": {"heads": 4}, "loss": {"kind": "focal", "gamma": 2.0},
                  "augment": {"enabled": True}},
    # weight decay and gradient clipping: the paper states neither (0, as the fuse preset);
    # with tasks [expr, au] the AU and expression batches alternate (the fuse preset's schedule)
    "jin2021": {"backbone": "tdnn", "optimizer": "sgd", "momentum": 0.9, "lr": 0.001,
                "head_lr": 0.001, "batch_size": 64, "loss": {"kind": "focal", "gamma": 2.0},
                "weight_decay": 0.0, "grad_clip": 0.0, "task_schedule": "batch",
                # the image model is the paper's multi-task network (AU + expression heads)
                BY_BACKBONE: {"iresnet": {"tasks": ["expr", "au"]}}},
    "yu2025": {"backbone": "timm", "optimizer": "sgd", "momentum": 0.9, "lr": 1e-4,
               "head_lr": 1e-3, "batch_size": 16, "epochs": 10, "loss": {"kind": "coarse_fine"},
               "sampling": {"interval": 5}},
    # Sun and Gao 2026 (2603.12221, stage I): DINOv2 ViT-L/14 fine-tuned with an MoE training
    # head and PadAug; only the abstract and introduction were reachable, so every number below
    # is ours (docs/finetune-papers.md): BEiT/MAE-style layer decay, warmup then cosine.
    "sun2026": {"backbone": "timm", "model": "vit_large_patch14_dinov2.lvd142m", "lr": 2e-5,
                "head_lr": 1e-3, "lr_decay": 0.75, "weight_decay": 0.05, "epochs": 10,
                "schedule": {"kind": "cosine", "warmup_epochs": 1},
                "classifier": {"experts": 4}, "augment": {"pad_prob": 0.3}},
    # Yu et al. 2026 (2603.08034): BEiT-large faces, focal loss; the fine-tune's settings are not
    # in the reachable text: ours, as sun2026's (docs/finetune-papers.md).
    "yu2026": {"backbone": "timm", "model": "beit_large_patch16_224.in22k_ft_in22k_in1k",
               "lr": 2e-5, "head_lr": 1e-3, "lr_decay": 0.75, "weight_decay": 0.05, "epochs": 10,
               "schedule": {"kind": "cosine", "warmup_epochs": 1},
               "loss": {"kind": "focal", "gamma": 2.0}, "sampling": {"balance": "none"}},
}

# The backbones each preset's paper starts from pretrained weights (what it starts from): a
# fine-tune under the preset with no --weights is refused unless --allow-random-weights. Not
# listed, so random starts are accepted: jin2021's TDNN and yu2025's timm stand-in (the papers do
# not say what their audio TDNN and RHCNN start from). kim2023's audio Swin is ours: the paper
# says only that it trains a Swin-Tiny on the log-mel images, as on the faces.
PRETRAINED_START: dict[str, dict[str, str]] = {
    "kim2023": {"timm": "ImageNet Swin-Tiny", "swin_audio": "ImageNet Swin-Tiny"},
    "jeong2022": {"timm": "VGGFace2 ResNet-50"},
    "jin2021": {"iresnet": "Glint360K IResNet-100"},
    "sun2026": {"timm": "DINOv2 ViT-L/14"},
    "yu2026": {"timm": "BEiT-L (ImageNet-22k)"},
}


def check_start(preset: str | None, backbone: str, weights: str | None,
                allow_random_weights: bool = False) -> None:
    """Refuse, in one line, a fine-tune under ``preset`` that would start ``backbone`` from seeded
    random weights where the paper starts it from pretrained ones."""
    start = PRETRAINED_START.get(preset or "", {}).get(backbone)
    if start is not None and weights is None and not allow_random_weights:
        raise PipelineError(
            f"finetune --preset {preset}: the paper starts {backbone} from pretrained weights "
            f"({start}), and no --weights was given: pass --weights FILE, or "
            f"--allow-random-weights to fine-tune from random weights")


def check_model(preset: str | None, backbone: str, model: str, allow_stand_ins: bool = False,
                allow_other_model: bool = False) -> str | None:
    """Refuse, in one line, a fine-tune under ``preset`` whose ``model`` is not the paper's (the
    preset's ``model``, for its own backbone: another backbone does not read ``model``). The
    paper's model's stand-in (:data:`pipeline.stand_ins.STAND_INS`, the list ``fuse`` accepts)
    passes with ``allow_stand_ins``, any model with ``allow_other_model``; the returned line says
    which model stands in (None: the paper's)."""
    paper = FINETUNE_PRESETS.get(preset or "", {})
    wanted = paper.get("model")
    if wanted is None or backbone != paper["backbone"] or model == wanted:
        return None
    stand_in = STAND_INS.get(wanted) == model
    if (stand_in and allow_stand_ins) or allow_other_model:
        kind = "its stand-in" if stand_in else "not the paper's"
        return (f"finetune --preset {preset}: model {model} ({kind}) in place of the paper's "
                f"{wanted}")
    hint = ("--allow-stand-ins (a smaller stand-in for demo runs)" if stand_in else
            "--allow-other-model to train it with the paper's settings anyway")
    raise PipelineError(f"finetune --preset {preset}: the paper fine-tunes {wanted}, not {model}: "
                        f"drop --model, or pass {hint}")


def preset_tables(name: str | None, backbone: str | None = None) -> dict[str, Any] | None:
    """The config tables of preset ``name`` (None: none) for ``--backbone`` ``backbone`` (its
    ``by_backbone`` tables over the rest), or a one-line error naming the choices."""
    if name is None:
        return None
    if name not in FINETUNE_PRESETS:
        raise PipelineError(f"finetune preset {name!r}: choose from {', '.join(FINETUNE_PRESETS)}"
                            f"{did_you_mean(name, FINETUNE_PRESETS)}")
    tables = {k: v for k, v in FINETUNE_PRESETS[name].items() if k != BY_BACKBONE}
    return {**tables, **FINETUNE_PRESETS[name].get(BY_BACKBONE, {}).get(backbone, {})}
