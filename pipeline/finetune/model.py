"""What a fine-tune trains: the backbone with new class layers (linear, or the heads' mixture of
experts), which of its parameters stay frozen, the optimiser's learning rates (``lr`` for the
backbone, per depth with ``lr_decay``: :mod:`pipeline.training.layer_decay`; ``head_lr`` for the
class layers) and the autocast precision (:mod:`pipeline.finetune.loop` runs them)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pipeline.data.labels import NUM_AUS, NUM_CLASSES
from pipeline.errors import PipelineError
from pipeline.finetune.backbone_choice import BACKBONES
from pipeline.finetune.config import FinetuneConfig
from pipeline.training.config import ClassifierConfig
from pipeline.training.moe import MixtureOfExperts
from pipeline.training import optim
from pipeline.training.dan import DANHeads
from pipeline.training.layer_decay import decayed_groups, lr_scales


class Classifier(nn.Module):
    """The backbone and a new classifier over its pooled features: linear, or with
    ``classifier.experts`` a mixture of that many linear experts (the heads'
    :class:`~pipeline.training.moe.MixtureOfExperts`); with ``au``, also a linear AU head whose 12
    logits follow the expression logits (:data:`~pipeline.data.labels.NUM_CLASSES`) in the output. Only the backbone is written."""

    def __init__(self, backbone: nn.Module, num_features: int, au: bool = False,
                 classifier: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        experts = classifier.experts if classifier is not None else 0
        self.head = (MixtureOfExperts(num_features, NUM_CLASSES, experts, classifier.top_k)
                     if experts else nn.Linear(num_features, NUM_CLASSES))
        self.au_head = nn.Linear(num_features, NUM_AUS) if au else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        if self.au_head is None:
            return self.head(features)
        return torch.cat([self.head(features), self.au_head(features)], dim=1)


class DANClassifier(nn.Module):
    """Paper 001 end to end (``head = "dan"``): the backbone is DAN's feature clustering network;
    its spatial map (timm's ``forward_features``, [B, C, H, W]) feeds DAN's heads
    (:class:`~pipeline.training.dan.DANHeads`). The forward returns (logits, pooled map, fused
    head outputs): the loop adds the affinity and partition losses. The backbone is written as the
weights folder's model, the heads beside it (``dan_heads.safetensors``, for fuse's
``head.init_from``)."""

    def __init__(self, backbone: nn.Module, num_features: int, config: FinetuneConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = DANHeads(num_features, config.dan)
        self.au_head = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_features(x)
        if features.dim() != 4:
            raise PipelineError(f"head dan: the backbone's forward_features gives shape "
                                f"{tuple(features.shape)}, not a spatial map [B, C, H, W]; choose "
                                "a convolutional model (resnet50, as paper 001)")
        return self.head(features)


def logits_of(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The class logits of a classifier's output (a :class:`DANClassifier` returns a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def freeze(backbone: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Keep the parameters named by ``prefixes`` (e.g. early blocks) as they are."""
    names = [name for name, _ in backbone.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise PipelineError(f"frozen: no backbone parameter is named {prefix!r}[.*] "
                                f"(names start with e.g. {', '.join(sorted({n.split('.')[0] for n in names})[:6])})")
    for name, param in backbone.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)


def autocast(config: FinetuneConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.precision == "fp32":
        return contextlib.nullcontext()
    if config.precision == "fp16" and device.type != "cuda":
        raise PipelineError("precision fp16 needs a CUDA device; use bf16 on CPU")
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def make_optimizer(model: Classifier, config: FinetuneConfig,
                   model_name: str = "") -> torch.optim.Optimizer:
    """The optimiser (:func:`pipeline.training.optim.make_optimizer`): the backbone's trainable
    parameters at ``lr`` (one group; with ``lr_decay`` one group per depth, in depth order:
    :func:`pipeline.training.layer_decay.decayed_groups`), then the class layers at ``head_lr``.
    ``model_name`` names the backbone's network in a refusal."""
    heads = list(model.head.parameters())
    if model.au_head is not None:
        heads += list(model.au_head.parameters())
    scales = (lr_scales(BACKBONES.attribute(config.backbone, "layer_order"), model_name,
                        model.backbone, config.lr_decay) if config.lr_decay != 1.0 else None)
    groups = decayed_groups(model.backbone, scales, config.lr)
    groups.append({"params": heads, "lr": config.head_lr})
    return optim.make_optimizer(groups, config.optimizer, config.lr, config.weight_decay,
                                config.momentum)
