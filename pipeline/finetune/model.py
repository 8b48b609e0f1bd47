"""What a fine-tune trains: the backbone with new class layers, which of its parameters stay
frozen, the optimiser's two learning rates and the autocast precision (:mod:`pipeline.finetune.loop`
runs them)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pipeline.data.labels import NUM_AUS
from pipeline.errors import PipelineError
from pipeline.finetune.config import FinetuneConfig


class Classifier(nn.Module):
    """The backbone and a new linear classifier over its pooled features; with ``au``, also a
    linear AU head whose 12 logits follow the 8 expression logits in the output."""

    def __init__(self, backbone: nn.Module, num_features: int, au: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, 8)
        self.au_head = nn.Linear(num_features, NUM_AUS) if au else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        if self.au_head is None:
            return self.head(features)
        return torch.cat([self.head(features), self.au_head(features)], dim=1)


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


def make_optimizer(model: Classifier, config: FinetuneConfig) -> torch.optim.Optimizer:
    heads = list(model.head.parameters())
    if model.au_head is not None:
        heads += list(model.au_head.parameters())
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": config.lr},
              {"params": heads, "lr": config.head_lr}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
