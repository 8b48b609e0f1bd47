"""A mixture-of-experts classifier, an option of every head (``classifier.experts``).

Sun and Gao 2026 (arXiv 2603.12221) train their face encoder with "a mixture-of-experts (MoE)
training head ... to enhance outputs from diversified classifier experts"; their reachable text
does not give its form. Ours: each class layer of a head (every ``nn.Linear`` with 8 outputs: the
layer that gives logits over the expression classes) becomes ``E`` linear experts on the same
input and a linear router::

    w = softmax(Router(x))                      [E]   (top_k > 0: the k largest, renormalised)
    logits = sum_e w_e * Expert_e(x)            [8]

The experts and the router train with the head; nothing else changes (the same input features,
outputs, losses). :func:`install` swaps the layers in after the head is built, so every head,
present and future, has the option without code of its own. The AU layer (12 outputs) stays
linear.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.data.labels import NUM_CLASSES
from pipeline.training.config import ClassifierConfig


class MixtureOfExperts(nn.Module):
    """``experts`` linear layers ``in_features -> out_features`` mixed by a softmax router."""

    def __init__(self, in_features: int, out_features: int, experts: int, top_k: int = 0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.n_experts, self.top_k = experts, top_k
        self.experts = nn.Linear(in_features, experts * out_features)  # all experts in one matmul
        self.router = nn.Linear(in_features, experts)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Router weights [..., E] (zero outside the top k when ``top_k`` is set)."""
        scores = self.router(x)
        if self.top_k:
            kth = scores.topk(self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.experts(x).unflatten(-1, (self.n_experts, self.out_features))
        return (self.weights(x)[..., None] * logits).sum(dim=-2)


def install(head: nn.Module, config: ClassifierConfig) -> int:
    """Replace every class layer of ``head`` by a mixture of ``config.experts`` experts (nothing
    when ``experts`` is 0); returns how many layers were replaced."""
    if not config.experts:
        return 0
    targets = [(name, module) for name, module in head.named_modules()
               if isinstance(module, nn.Linear) and module.out_features == NUM_CLASSES]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = head.get_submodule(parent_name) if parent_name else head
        setattr(parent, child, MixtureOfExperts(linear.in_features, linear.out_features,
                                                config.experts, config.top_k))
    return len(targets)
