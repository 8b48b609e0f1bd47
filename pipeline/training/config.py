"""The class layers' configuration (``classifier``), shared by both training stages: ``fuse``'s
heads (:class:`pipeline.fusion.config.FuseConfig`) and ``finetune``'s classifier
(:class:`pipeline.finetune.config.FinetuneConfig`). Torch-free, so configs build without it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import PipelineError


@dataclass
class ClassifierConfig:
    """The class layers of any head: its own linear layers, or mixtures of experts
    (:mod:`pipeline.training.moe`)."""

    experts: int = 0  # 0: the head's own class layers; >= 2: each is a mixture of this many
    top_k: int = 0  # 0: every expert, weighted by the router; k: the k highest weights only

    def __post_init__(self) -> None:
        if self.experts < 0 or self.experts == 1:
            raise PipelineError(f"classifier.experts {self.experts}: need 0 (off) or >= 2")
        if self.top_k < 0 or (self.experts and self.top_k > self.experts):
            raise PipelineError(f"classifier.top_k {self.top_k}: need 0 (all) or 1.."
                                f"{self.experts} (classifier.experts)")
