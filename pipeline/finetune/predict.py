"""The fine-tune's data loaders and its dev-slice prediction pass (what early stopping scores).

:func:`loader` wraps a backbone's dataset with a fixed batch plan (:func:`pipeline.finetune.plan.
batches`); :func:`predict` gives every sample's predicted expression class with the backbone's
eval preprocessing, in eval mode, batched by input shape.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.labels import NUM_CLASSES
from pipeline.finetune.backbones import Backbone
from pipeline.finetune.samples import Samples
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.model import Classifier, DANClassifier, logits_of


def loader(dataset: torch.utils.data.Dataset, batch_sampler: list[list[int]],
           config: FinetuneConfig, device: torch.device) -> torch.utils.data.DataLoader:
    """A loader over ``dataset`` yielding exactly the batches of ``batch_sampler``."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler,
                                       num_workers=config.workers,
                                       pin_memory=device.type == "cuda")


def predict(model: Classifier | DANClassifier, backbone: Backbone, samples: Samples,
            config: FinetuneConfig, device: torch.device) -> np.ndarray:
    """Predicted class of every sample (eval preprocessing, eval mode)."""
    model.eval()
    out = np.zeros(len(samples), dtype=np.int64)
    data = backbone.dataset(samples, np.arange(len(samples)), None)
    keys = backbone.shape_keys(samples)
    groups = [np.flatnonzero(keys == key) for key in np.unique(keys)]
    sampler = [g[i:i + config.eval_batch_size].tolist()
               for g in groups for i in range(0, len(g), config.eval_batch_size)]
    with torch.no_grad():
        for rows, (x, _, _) in zip(sampler, loader(data, sampler, config, device)):
            logits = logits_of(model(x.to(device)))[:, :NUM_CLASSES]
            out[rows] = logits.argmax(dim=1).cpu().numpy()
    return out
