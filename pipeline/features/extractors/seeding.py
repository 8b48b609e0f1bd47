"""Random weights drawn as the architecture itself draws them, from an extractor's own seed, the
same whichever thread builds them and when.

Frameworks (torch's layers, timm, transformers, SpeechBrain) draw initial weights from torch's
global generator, which every thread of a process shares: two models built at once, or anything
drawing random numbers meanwhile, change each other's weights (issue 23: a resumed store mixed
clips from different random networks). So a model with random weights is built by
:func:`seeded_build`: the constructor runs, under a process-wide lock, with torch's CPU generator
forked (:func:`torch.random.fork_rng`) and seeded from the extractor's name and ``seed``
(:func:`weights_seed`); the caller's stream is restored afterwards. The constructor's own
initialisation therefore runs unchanged: timm's ResNets draw kaiming-normal fan-out convolutions
and zero their blocks' last BatchNorm, ViTs and Swins truncated normals, transformers its
``initializer_range``; a network trained from scratch starts where its framework intends
(issue 32: PyTorch's default uniform fan-in init over every module, what the earlier ``redraw``
drew, stalled training from scratch for epochs).

The lock only orders builds among themselves: a thread drawing from torch's global generator
while another builds would still shift the draw, so the runner builds every model once, before
its threads start (and inference draws nothing).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Callable

# Recorded in an extractor's cache key when its weights are random: arrays from models drawn
# another way (the global generator; "own-generator-1": PyTorch's default init redrawn from a
# generator of the extractor's own) are never reused as these.
RANDOM_INIT = "own-init-2"

_BUILD_LOCK = threading.Lock()


def weights_seed(name: str, seed: int) -> int:
    """The seed an extractor called ``name`` draws its random weights with: from its name and
    ``seed`` alone, so options that leave the network as it is (windows, crops, which maps are
    kept) keep its weights, and ``finetune`` starts from the same random network."""
    spec = json.dumps({"name": name, "seed": seed}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(spec.encode()).digest()[:8], "little")


def weights_generator(name: str, seed: int) -> Any:
    """A ``torch.Generator`` seeded with :func:`weights_seed` (for draws of an extractor's own
    that are not a constructor's)."""
    import torch

    return torch.Generator().manual_seed(weights_seed(name, seed))


def seeded_build(make: Callable[[], Any], name: str, seed: int) -> Any:
    """``make()`` with its random initialisation drawn from :func:`weights_seed` ``(name, seed)``
    (see the module docstring); deterministic whatever the caller's generator state."""
    import torch

    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(weights_seed(name, seed))  # CPU only: CUDA's untouched
        return make()
