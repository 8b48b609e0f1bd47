"""Issue 32, fine-tuning that learns: the lone-sample batch (IResNet's BatchNorm1d), random weights
drawn by the architecture's own initialisation from the extractor's seed, and the Swin face
fine-tune of paper 000's preset selecting at the crop the preset extracts with."""

import threading

import numpy as np
import pytest
import torch

from pipeline.features.extractors import create
from pipeline.features.extractors.iresnet import LAYERS, IResNet
from pipeline.features.extractors.seeding import seeded_build
from pipeline.features.extractors.timm_models import build_timm
from pipeline.features.extractors.timm_image import TimmImageConfig
from pipeline.finetune.backbones import FaceBackbone
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.plan import MIN_BATCH, batches


@pytest.mark.parametrize("n, size, world", [(17, 8, 1), (9, 8, 1), (21, 8, 2), (1, 8, 1)])
def test_no_training_batch_holds_a_lone_sample(n, size, world):
    keys = np.zeros(n, dtype=np.int64)
    for rank in range(world):
        steps = batches(keys, size, world, rank, seed=0, epoch=1)
        assert all(len(b) >= MIN_BATCH for b in steps)
        assert sum(len(b) for b in steps) >= (n - (MIN_BATCH * world - 1)) // world


def test_iresnet_trains_on_every_batch_of_an_uneven_plan():
    """209 samples at batch 16 left one sample in the last batch: IResNet's final BatchNorm1d
    raised 'Expected more than 1 value per channel when training'."""
    torch.manual_seed(0)
    model = IResNet(LAYERS[18]).train()
    x = torch.randn(17, 3, 112, 112)
    for step in batches(np.zeros(17, dtype=np.int64), 8, 1, 0, seed=0, epoch=1):
        model(x[step])


def _conv_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("where", ["extract", "finetune"])
def test_random_timm_resnet_draws_timms_own_kaiming_fan_out_init(where, tmp_path):
    if where == "extract":  # the random network `extract -e timm` uses
        extractor = create("timm", config=TimmImageConfig(model="resnet10t"), device="cpu")
        extractor.load()
        model = extractor._model
    else:
        config = FinetuneConfig(model="resnet10t")
        model = FaceBackbone(config).build()
    for w in _conv_weights(model):
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        if w.numel() < 4096:
            continue  # too few values for a tight std estimate
        expected = (2.0 / fan_out) ** 0.5  # kaiming normal, fan-out, relu: timm's ResNet init
        assert abs(float(w.detach().std()) / expected - 1) < 0.05, (tuple(w.shape), float(w.detach().std()), expected)
    # timm zeroes each block's last BatchNorm (zero_init_last): kept as the constructor sets it
    assert float(model.layer1[0].bn2.weight.abs().max()) == 0.0


def test_random_weights_are_deterministic_and_leave_the_callers_stream():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = seeded_build(lambda: build_timm("test_resnet", None), "timm", 0)
    after = torch.rand(3)
    assert torch.equal(before, after)  # the caller's generator is as it was
    torch.manual_seed(999)  # another global state: the same network
    b = seeded_build(lambda: build_timm("test_resnet", None), "timm", 0)
    c = seeded_build(lambda: build_timm("test_resnet", None), "timm", 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_random_weights_built_in_threads_at_once_are_the_same():
    out = [None] * 4

    def build(i):
        out[i] = seeded_build(lambda: IResNet(LAYERS[18]), "iresnet", 0).state_dict()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(out[0][k], o[k]) for o in out[1:] for k in out[0])
