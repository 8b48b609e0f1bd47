"""Random weights from an extractor's own generator, the same whichever thread builds them and when.

Frameworks (torch's layers, timm, transformers, SpeechBrain) draw initial weights from torch's
global generator, which every thread of a process shares: two models built at once, or anything
drawing random numbers meanwhile, change each other's weights (issue 23: a resumed store mixed
clips from different random networks). So an extractor with random weights builds its model as
usual and then :func:`redraw` replaces every parameter the constructor drew at random with values
drawn, in the module's parameter order, from a ``torch.Generator`` of its own
(:meth:`~pipeline.features.extractors.base.Extractor.generator`, seeded from the extractor's
name and ``seed``). The runner also builds every model once, before its threads start.

Which parameters are redrawn: every floating-point parameter that is not constant. A constant
one (a norm's ones and zeros, a layer scale's 1e-5, PReLU's 0.25) is what the constructor set,
not a draw, and stays. The values: PyTorch's default for ``nn.Linear`` / ``nn.ConvNd`` (kaiming
uniform with a = sqrt(5)), uniform in +-1/sqrt(fan_in) with fan_in the product of a weight's
dimensions after the first; a drawn bias takes its module's weight's bound; anything else drawn
(class tokens, position embeddings: shape ``[1, ...]``, or a vector with no weight beside it)
normal(0, 0.02), timm's and transformers' initialisation for embeddings. Buffers (running
statistics, index tables) are never drawn and stay as built.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

EMBEDDING_STD = 0.02  # timm's trunc_normal_ / transformers' initializer_range for embeddings
# Recorded in an extractor's cache key when its weights are random: arrays from models drawn
# another way (the global generator, before this module) are never reused as these.
RANDOM_INIT = "own-generator-1"


def weights_generator(name: str, seed: int) -> Any:
    """The ``torch.Generator`` an extractor called ``name`` draws its random weights from: seeded
    from its name and ``seed`` alone, so options that leave the network as it is (windows, crops,
    which maps are kept) keep its weights, and ``finetune`` starts from the same random network."""
    import torch

    spec = json.dumps({"name": name, "seed": seed}, sort_keys=True)
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(spec.encode()).digest()[:8],
                                                        "little"))


def _fan_in_bound(weight: Any) -> float:
    return 1.0 / math.sqrt(max(1, math.prod(weight.shape[1:])))


def redraw(module: Any, generator: Any) -> Any:
    """Redraw ``module``'s randomly initialised parameters from ``generator`` (see the module
    docstring); returns ``module``. Deterministic given the generator's state."""
    import torch

    with torch.no_grad():
        for owner in module.modules():
            weight = getattr(owner, "weight", None)
            weight_bound = (_fan_in_bound(weight) if isinstance(weight, torch.Tensor)
                            and weight.dim() >= 2 else None)
            for name, param in owner.named_parameters(recurse=False):
                if not param.is_floating_point() or param.numel() == 0:
                    continue
                flat = param.detach().reshape(-1)
                if bool((flat == flat[0]).all()):
                    continue  # a constant: set by the constructor, not drawn
                if param.dim() >= 2 and param.shape[0] > 1:
                    bound = _fan_in_bound(param)
                    value = torch.empty(param.shape).uniform_(-bound, bound, generator=generator)
                elif name == "bias" and weight_bound is not None:
                    value = torch.empty(param.shape).uniform_(-weight_bound, weight_bound,
                                                              generator=generator)
                else:
                    value = torch.empty(param.shape).normal_(0.0, EMBEDDING_STD, generator=generator)
                param.copy_(value.to(param.dtype))
    return module
