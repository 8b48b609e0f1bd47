"""``backbone = "iresnet"``: jin2021's face network (insightface's IResNet) on 112x112 face crops.

The network and its loader are the ``iresnet`` extractor's (:mod:`pipeline.features.extractors.
iresnet`): without ``weights`` the seeded random network ``extract -e iresnet --set seed=S`` draws,
with them any file or folder that extractor reads (depth ``iresnet.depth``; 18 is the smallest).
Samples and augmentation are the timm face backbone's (:class:`~pipeline.finetune.backbones.
FaceBackbone`): timm's training transform at 112x112 with the extractor's normalisation
(``x / 255`` scaled to [-1, 1]); the epoch is selected with the extractor's own
:func:`~pipeline.features.extractors.iresnet.preprocess`, so selection and stage one see the same
tensors. The record names ``iresnet<depth>``; the extractor refuses it at another depth.

jin2021 trains it multi-task (AU and expression): ``tasks = ["expr", "au"]`` adds the AU head
(:mod:`pipeline.finetune.loop`), trained jointly rather than alternated as in the paper.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pipeline.compat import ensure_torchvision
from pipeline.errors import PipelineError
from pipeline.features.extractors.iresnet import IResNetConfig
from pipeline.finetune.backbone_choice import register
from pipeline.finetune.backbones import Backbone, FaceBackbone, train_transform
from pipeline.finetune.config import FinetuneConfig


@register
class IResNetBackbone(FaceBackbone):
    """An IResNet (ArcFace's face-recognition network) of the ``iresnet`` extractor; trains on face crops."""

    name = "iresnet"
    order = 1
    trains_on = "face crops"
    Config = IResNetConfig  # FinetuneConfig.iresnet
    family = "iresnet"
    supports_input_size = False  # the extractor's fixed 112x112
    supports_dan_head = False  # its map is not what DAN was built on (not tried)
    layer_order = None  # no depth order defined for it (pipeline.training.layer_decay)

    def __init__(self, config: FinetuneConfig) -> None:
        Backbone.__init__(self, config)  # not FaceBackbone's: no timm model to probe
        ensure_torchvision()
        from pipeline.features.extractors.iresnet import DATA_CONFIG, LAYERS, check_record, preprocess
        from pipeline.features.weights_record import read_record

        self.depth = config.iresnet.depth
        if self.depth not in LAYERS:
            raise PipelineError(f"iresnet.depth {self.depth}: choose from {', '.join(map(str, LAYERS))}")
        self.model_name = f"iresnet{self.depth}"
        check_record(read_record(config.weights), self.depth, config.weights)
        self.data_config = dict(DATA_CONFIG)
        self.eval_transform = preprocess
        self.train_transform = train_transform(config, self.data_config, preprocess)

    def fit_input(self, samples: Any) -> None:
        """Nothing: the input is the extractor's fixed 112x112."""

    def build(self) -> nn.Module:
        from pipeline.features.extractors.checkpoints import read_state_dict
        from pipeline.features.extractors.iresnet import LAYERS, IResNet
        from pipeline.features.extractors.seeding import seeded_build

        if self.config.weights is None:  # the random network `extract -e iresnet --set seed=S` uses
            return seeded_build(lambda: IResNet(LAYERS[self.depth]), "iresnet", self.config.seed)
        model = IResNet(LAYERS[self.depth])
        try:
            model.load_state_dict(read_state_dict(self.config.weights), strict=True)
        except RuntimeError as e:
            raise PipelineError(f"{self.config.weights}: not IResNet-{self.depth} weights "
                                f"({' '.join(str(e).split())[:160]})") from None
        return model

    @property
    def num_features(self) -> int:
        from pipeline.features.extractors.iresnet import EMBEDDING_DIM

        return EMBEDDING_DIM

    def preprocessing(self) -> dict[str, Any]:
        d = self.data_config
        return {"input_size": list(d["input_size"]), "mean": list(d["mean"]), "std": list(d["std"]),
                "interpolation": d["interpolation"], "depth": self.depth}
